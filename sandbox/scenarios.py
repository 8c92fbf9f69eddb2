"""Which merchant-credential values make a sandbox job end which way.

The table here is the single source for sandbox/README.md's scenario table.
"""

from __future__ import annotations

from dataclasses import dataclass

GOOD_USERNAME = "good_email"
SUCCESS_PASSWORDS = frozenset({"no_tfa", "good_password"})
TFA_PASSWORD = "tfa"
TFA_MESSAGE_PASSWORD = "tfa_message"
SECURITY_PASSWORD = "security"
GOOD_TFA_CODE = "1234"
SECURITY_ANSWERS = {"security_1": "Max", "security_2": "Smith"}
SECURITY_QUESTIONS = {
    "security_1": "What was the name of your first pet?",
    "security_2": "What is your mother's maiden name?",
}

USER_DATA_FAILURE = "USER_DATA_FAILURE"
SITE_INTERACTION_FAILURE = "SITE_INTERACTION_FAILURE"
PROCESS_FAILURE = "PROCESS_FAILURE"
BILLABLE = "BILLABLE"
NEVER_STARTED = "NEVER_STARTED"

# When a scripted failure strikes: while signing in (the account never links)
# or while updating the card (after auth_percent_complete reached 100).
AT_LOGIN = "login"
AT_UPDATE = "update"


@dataclass(frozen=True)
class Failure:
    status: str
    termination_type: str
    phase: str
    message: str  # "{site}" is replaced by the merchant's name


FAILURES: dict[str, Failure] = {
    f.status: f
    for f in (
        Failure(
            "ACCOUNT_LOCKED",
            USER_DATA_FAILURE,
            AT_LOGIN,
            "{site} has locked this account. Unlock it with {site}, then try again.",
        ),
        Failure(
            "PASSWORD_RESET_REQUIRED",
            USER_DATA_FAILURE,
            AT_LOGIN,
            "{site} requires a new password. Reset it on {site}, then try again.",
        ),
        Failure(
            "INACTIVE_ACCOUNT",
            USER_DATA_FAILURE,
            AT_LOGIN,
            "This {site} account is inactive. Reactivate it with {site}, "
            "then try again.",
        ),
        Failure(
            "INVALID_CARD",
            USER_DATA_FAILURE,
            AT_UPDATE,
            "{site} did not accept this card. Check the card details or use "
            "another card.",
        ),
        Failure(
            "EXPIRED_CARD",
            USER_DATA_FAILURE,
            AT_UPDATE,
            "{site} says this card has expired. Add your new card and try again.",
        ),
        Failure(
            "INVALID_CVV",
            USER_DATA_FAILURE,
            AT_UPDATE,
            "{site} did not accept the security code. Check the card's CVV and "
            "try again.",
        ),
        Failure(
            "DUPLICATE_CARD",
            USER_DATA_FAILURE,
            AT_UPDATE,
            "This card is already saved on your {site} account. Nothing to do.",
        ),
        Failure(
            "PREPAID_ACCOUNT",
            USER_DATA_FAILURE,
            AT_UPDATE,
            "This {site} account is prepaid and cannot store a card.",
        ),
        Failure(
            "INVALID_ADDRESS",
            USER_DATA_FAILURE,
            AT_UPDATE,
            "{site} did not accept the billing address. Check the card's address "
            "and try again.",
        ),
        Failure(
            "BUNDLED_SUBSCRIPTION",
            USER_DATA_FAILURE,
            AT_UPDATE,
            "This {site} subscription is billed through another provider. Update "
            "the card with that provider instead.",
        ),
        Failure(
            "FREE_ACCOUNT",
            USER_DATA_FAILURE,
            AT_UPDATE,
            "This {site} account is free and has no payment method to update.",
        ),
        Failure(
            "INVALID_NETWORK",
            USER_DATA_FAILURE,
            AT_UPDATE,
            "{site} does not accept this card network. Use another card.",
        ),
        Failure(
            "MAX_LIMIT_OF_STORED_CARDS",
            USER_DATA_FAILURE,
            AT_UPDATE,
            "Your {site} account already holds as many cards as it allows. Remove "
            "one on {site}, then try again.",
        ),
        Failure(
            "CARD_FORM_FAILED",
            SITE_INTERACTION_FAILURE,
            AT_UPDATE,
            "Something on {site} did not work as expected while saving your card. "
            "Try again later.",
        ),
        Failure(
            "INTERNAL_ERROR",
            PROCESS_FAILURE,
            AT_LOGIN,
            "We could not finish this update because of a problem on our side. "
            "Try again in a few minutes.",
        ),
    )
}

# Password values that force a failure, e.g. "fail_invalid_card".
FAILURE_PASSWORDS: dict[str, str] = {
    f"fail_{status.lower()}": status for status in FAILURES
}
FAILURE_PASSWORDS["fail_site_interaction"] = "CARD_FORM_FAILED"
FAILURE_PASSWORDS["fail_process"] = "INTERNAL_ERROR"

KNOWN_PASSWORDS = (
    SUCCESS_PASSWORDS
    | {TFA_PASSWORD, TFA_MESSAGE_PASSWORD, SECURITY_PASSWORD}
    | set(FAILURE_PASSWORDS)
)

# Ends reached by the flow itself rather than by a password value.
FLOW_ENDS: dict[str, tuple[str, str]] = {
    "SUCCESSFUL": (BILLABLE, "Your card was saved at {site}. No further action."),
    "TOO_MANY_LOGIN_FAILURES": (
        USER_DATA_FAILURE,
        "{site} did not accept the sign-in details twice. Check them on {site}, "
        "then start a new update.",
    ),
    "TOO_MANY_TFA_FAILURES": (
        USER_DATA_FAILURE,
        "{site} did not accept the verification code twice. Start a new update "
        "to get a fresh code.",
    ),
    "INVALID_SECURITY_ANSWERS": (
        USER_DATA_FAILURE,
        "{site} did not accept the security answers. Check them on {site}, then "
        "start a new update.",
    ),
    "TIMEOUT_CREDENTIALS": (
        USER_DATA_FAILURE,
        "We did not get your sign-in details in time. Start a new update when "
        "you are ready.",
    ),
    "TIMEOUT_TFA": (
        USER_DATA_FAILURE,
        "We did not get the verification in time. Start a new update when you "
        "are ready.",
    ),
    "ABANDONED": (
        NEVER_STARTED,
        "This update never started because no sign-in details arrived.",
    ),
    "CANCELLED": (NEVER_STARTED, "This update was cancelled. Nothing was changed."),
}
