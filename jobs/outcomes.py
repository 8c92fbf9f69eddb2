"""What a job's CardSavr state means to the cardholder.

The only place that turns statuses and termination types into an outcome, and
finished statuses into advice. CardSavr renames statuses often, so anything
unknown falls back to a sensible default instead of failing.
"""

from __future__ import annotations

from jobs.models import Outcome, TerminationType

PENDING_PREFIX = "PENDING"
# From this status on CardSavr needs nothing more from the cardholder.
UPDATING = "UPDATING"


def derive_outcome(
    status: str, termination_type: str | None, has_open_request: bool
) -> str:
    # A finished job cannot be resumed, so its termination type wins over a
    # question that may not have been closed yet.
    if termination_type:
        if termination_type == TerminationType.BILLABLE:
            return Outcome.SUCCESS
        if termination_type == TerminationType.NEVER_STARTED:
            return Outcome.CANCELLED
        # USER_DATA_FAILURE, SITE_INTERACTION_FAILURE, PROCESS_FAILURE and any
        # termination type CardSavr adds later.
        return Outcome.FAILED
    if has_open_request or (status or "").upper().startswith(PENDING_PREFIX):
        return Outcome.NEEDS_INPUT
    return Outcome.IN_PROGRESS


def may_leave(status: str, auth_percent_complete: float) -> bool:
    """True once the account is linked: the cardholder need not stay."""
    return (status or "").upper() == UPDATING or auth_percent_complete >= 100


_RETRY = "Try again from your dashboard. If it fails again, contact us."
_CHECK_CARD = (
    "Check the card details, update the card in your wallet and start a new "
    "update for this merchant."
)
_NEW_CARD = "Add a different card to your wallet and start a new update."

# What the cardholder can do next, by final status.
NEXT_STEPS: dict[str, str] = {
    "SUCCESSFUL": "Nothing to do: your card is saved at this merchant.",
    "TEST_COMPLETE_SUCCESS": "Nothing to do: your card is saved at this merchant.",
    "PASSWORD_RESET_REQUIRED": (
        "The merchant wants you to reset your password. Reset it on the "
        "merchant's website, then start a new update with the new password."
    ),
    "ACCOUNT_LOCKED": (
        "The merchant has locked your account. Unlock it on the merchant's "
        "website or with their support, then start a new update."
    ),
    "TOO_MANY_LOGIN_FAILURES": (
        "The sign-in details were not accepted. Check your username and "
        "password on the merchant's website, then start a new update."
    ),
    "TOO_MANY_TFA_FAILURES": (
        "The verification code was not accepted. Start a new update and enter "
        "the newest code the merchant sends you."
    ),
    "TOO_MANY_OTP_FAILURES": (
        "The one-time code was not accepted. Start a new update and enter the "
        "newest code the merchant sends you."
    ),
    "INVALID_SECURITY_ANSWERS": (
        "The security answers were not accepted. Check them on the merchant's "
        "website, then start a new update."
    ),
    "TIMEOUT_CREDENTIALS": (
        "We did not get your sign-in details in time. Start a new update when "
        "you have a few minutes."
    ),
    "TIMEOUT_TFA": (
        "We did not get your verification code in time. Start a new update "
        "and keep your phone or email at hand."
    ),
    "INVALID_CARD": _CHECK_CARD,
    "INVALID_CARD_DETAILS": _CHECK_CARD,
    "INVALID_CVV": _CHECK_CARD,
    "INVALID_EXPIRATION_DATE": _CHECK_CARD,
    "MISSING_CARD_DATA": _CHECK_CARD,
    "EXPIRED_CARD": "This card has expired. " + _NEW_CARD,
    "INVALID_CARD_TYPE": "The merchant does not take this kind of card. " + _NEW_CARD,
    "INVALID_NETWORK": "The merchant does not take this card network. " + _NEW_CARD,
    "INVALID_ADDRESS": (
        "The merchant did not accept the billing address. Check the address "
        "on your card, then start a new update."
    ),
    "DUPLICATE_CARD": (
        "This card is already saved at the merchant. Nothing more to do."
    ),
    "MAX_LIMIT_OF_STORED_CARDS": (
        "Your account at the merchant holds as many cards as it allows. "
        "Remove an old card on the merchant's website, then start a new update."
    ),
    "PREPAID_ACCOUNT": (
        "This merchant account is prepaid and takes no card. Nothing to do."
    ),
    "FREE_ACCOUNT": "This merchant account is free and takes no card. Nothing to do.",
    "BUNDLED_SUBSCRIPTION": (
        "This subscription is billed through another company. Update your "
        "card there instead."
    ),
    "INACTIVE_ACCOUNT": (
        "The merchant says this account is inactive. Reactivate it on the "
        "merchant's website if you still use it."
    ),
    "ACCOUNT_NOT_FOUND": (
        "The merchant found no account with these details. Check the username "
        "you use there, then start a new update."
    ),
    "CANCELLED": "You cancelled this update. Start a new one whenever you like.",
    "CANCELED": "You cancelled this update. Start a new one whenever you like.",
    "ABANDONED": (
        "This update never started because no sign-in details arrived. Start "
        "a new one when you are ready."
    ),
    "ABANDONED_QUICKSTART": (
        "This update never started because no sign-in details arrived. Start "
        "a new one when you are ready."
    ),
    "UNSUPPORTED_CAPTCHA": (
        "The merchant's site asked for a check we cannot complete. Update the "
        "card on the merchant's website yourself."
    ),
    "TFA_NOT_SUPPORTED": (
        "The merchant's verification method is not supported yet. Update the "
        "card on the merchant's website yourself."
    ),
    "ACCOUNT_NOT_SUPPORTED": (
        "This kind of merchant account is not supported yet. Update the card "
        "on the merchant's website yourself."
    ),
    "VANISHED": (
        "CardSavr no longer knows this update, so its result is unknown. Check "
        "your card at the merchant, or start a new update."
    ),
}

_DEFAULT_BY_OUTCOME: dict[str, str] = {
    Outcome.SUCCESS: "Nothing to do: your card is saved at this merchant.",
    Outcome.CANCELLED: "This update did not start. Start a new one when you like.",
    Outcome.FAILED: ("The update could not be finished at the merchant. " + _RETRY),
}


def next_steps(status: str, outcome: str, *, vanished: bool = False) -> str:
    """Advice for a finished job; "" while it is still running."""
    if vanished:
        return NEXT_STEPS["VANISHED"]
    if outcome not in _DEFAULT_BY_OUTCOME:
        return ""
    return NEXT_STEPS.get((status or "").upper(), _DEFAULT_BY_OUTCOME[outcome])
