"""The payment account reference the JavaScript SDK computes for new cards."""

from __future__ import annotations

import base64
import hashlib

PAR_ROUNDS = 5000


def par(pan: str, expiration_month: str, expiration_year: str, salt: str) -> str:
    """`"C"` + base64 of PBKDF2-HMAC-SHA1 over the PAN's MD5, salted per card.

    The SDK turns the MD5 digest into a string by decoding it as UTF-8 with
    replacement characters before hashing; that lossy step is reproduced so the
    value matches cards created by the official SDKs. The salt is usually the
    cardholder's cuid.
    """
    card_salt = hashlib.sha256(
        (salt + expiration_month + expiration_year).encode("utf-8")
    ).digest()
    digest = hashlib.md5(pan.encode("utf-8"), usedforsecurity=False).digest()
    password = digest.decode("utf-8", errors="replace").encode("utf-8")
    derived = hashlib.pbkdf2_hmac("sha1", password, card_salt, PAR_ROUNDS, 20)
    return "C" + base64.b64encode(derived).decode("ascii")
