import pytest

from jobs.models import Outcome
from jobs.outcomes import derive_outcome, may_leave, next_steps


@pytest.mark.parametrize(
    ("status", "termination_type", "has_open_request", "expected"),
    [
        ("PENDING_TFA", None, False, Outcome.NEEDS_INPUT),
        ("PENDING", None, False, Outcome.NEEDS_INPUT),
        ("CREDS_RECEIVED", None, True, Outcome.NEEDS_INPUT),
        ("SUCCESSFUL", "BILLABLE", False, Outcome.SUCCESS),
        ("INVALID_CARD", "USER_DATA_FAILURE", False, Outcome.FAILED),
        ("CARD_FORM_FAILED", "SITE_INTERACTION_FAILURE", False, Outcome.FAILED),
        ("INTERNAL_ERROR", "PROCESS_FAILURE", False, Outcome.FAILED),
        ("SOMETHING_NEW", "SOME_NEW_TERMINATION", False, Outcome.FAILED),
        ("CANCELLED", "NEVER_STARTED", False, Outcome.CANCELLED),
        ("UPDATING", None, False, Outcome.IN_PROGRESS),
        ("A_STATUS_NOBODY_KNOWS", None, False, Outcome.IN_PROGRESS),
    ],
)
def test_derive_outcome_maps_state_to_outcome(
    status, termination_type, has_open_request, expected
):
    assert derive_outcome(status, termination_type, has_open_request) == expected


def test_derive_outcome_prefers_termination_over_a_question_left_open():
    assert derive_outcome("SUCCESSFUL", "BILLABLE", True) == Outcome.SUCCESS


def test_may_leave_once_updating_or_account_linked():
    assert may_leave("UPDATING", 80)
    assert may_leave("AUTH", 100)
    assert not may_leave("PENDING_TFA", 60)


def test_next_steps_names_the_remedy_for_a_known_status():
    assert "reset your password" in next_steps("PASSWORD_RESET_REQUIRED", "failed")


def test_next_steps_falls_back_to_the_outcome_for_an_unknown_status():
    assert next_steps("BRAND_NEW_FAILURE", Outcome.FAILED).startswith(
        "The update could not be finished"
    )


def test_next_steps_is_empty_while_the_job_runs():
    assert next_steps("UPDATING", Outcome.IN_PROGRESS) == ""
