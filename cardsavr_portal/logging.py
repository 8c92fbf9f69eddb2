"""A last line of defence: scrub anything that looks like a card number or a
credential from log records before any handler writes them.

The code never logs secrets on purpose; this filter catches accidents (an
exception message quoting a value, a third-party library echoing a body).
"""

import logging
import re

# 13 to 19 digits, optionally grouped by spaces or dashes: card numbers.
_PAN = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
# key=value or "key": "value" pairs whose key names a secret.
_SECRET_PAIR = re.compile(
    r"""(?ix)
    (["']?(?:password|passwd|pan|cvv|cvc|tfa|tfa_code|otp|security_\d+|
    app_key|session_key|session_token|safe_key|secret|authorization|
    x-cardsavr-session-jwt|x-cardsavr-signature|encrypted_body|account_link)
    ["']?\s*[:=]\s*)
    ("[^"]*"|'[^']*'|[^\s,;}&]+)
    """
)


def redact(text: str) -> str:
    text = _SECRET_PAIR.sub(r"\1[REDACTED]", text)
    return _PAN.sub("[REDACTED-PAN]", text)


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not drop the record
            message = str(record.msg)
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(
                logging.Formatter().formatException(record.exc_info)
            )
        return True
