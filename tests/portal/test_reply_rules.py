"""Rules a reply must pass before anything is sent to CardSavr."""

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from jobs import services
from jobs.models import CredentialRequest, ReplyState
from tests.portal.conftest import remote_job, tfa_request

submit_reply = async_to_sync(services.submit_reply)


@pytest.fixture
def waiting_job(job):
    services.apply_remote_job(
        job,
        remote_job(job.cardsavr_id, status="PENDING_TFA", requests=[tfa_request("e1")]),
        source="poll",
    )
    return job


def _error(call) -> services.ServiceError:
    with pytest.raises(services.ServiceError) as caught:
        call()
    return caught.value


def test_reply_to_another_cardholders_job_is_not_found(waiting_job, make_cardholder):
    mallory = make_cardholder("mallory")

    error = _error(lambda: submit_reply(mallory, waiting_job.pk, "e1", {"tfa": "1"}))

    assert isinstance(error, services.JobNotFound)
    assert error.status == 404


def test_reply_to_an_unknown_envelope_conflicts(waiting_job, cardholder):
    error = _error(
        lambda: submit_reply(cardholder, waiting_job.pk, "other", {"tfa": "1"})
    )

    assert isinstance(error, services.ReplyConflict)
    assert error.status == 409


def test_reply_to_a_claimed_request_conflicts(waiting_job, cardholder):
    CredentialRequest.objects.filter(envelope_id="e1").update(
        answered_at=timezone.now(), reply_state=ReplyState.SENDING
    )

    error = _error(lambda: submit_reply(cardholder, waiting_job.pk, "e1", {"tfa": "1"}))

    assert isinstance(error, services.ReplyConflict)


def test_reply_to_a_finished_job_conflicts(waiting_job, cardholder):
    waiting_job.termination_type = "USER_DATA_FAILURE"
    waiting_job.save()

    error = _error(lambda: submit_reply(cardholder, waiting_job.pk, "e1", {"tfa": "1"}))

    assert isinstance(error, services.ReplyConflict)


@pytest.mark.parametrize(
    ("account_link", "field"),
    [
        ({}, "tfa"),
        ({"tfa": ""}, "tfa"),
        ({"tfa": 1234}, "tfa"),
        ({"tfa": "x" * 257}, "tfa"),
        ({"tfa": "12\n34"}, "tfa"),
        ({"tfa": "12\x0034"}, "tfa"),
        ({"tfa": "1234", "password": "hunter2"}, "password"),
    ],
)
def test_bad_reply_is_refused_naming_the_field(
    waiting_job, cardholder, account_link, field
):
    error = _error(lambda: submit_reply(cardholder, waiting_job.pk, "e1", account_link))

    assert isinstance(error, services.InvalidInput)
    assert error.field == field


def test_bad_reply_never_echoes_the_value(waiting_job, cardholder):
    error = _error(
        lambda: submit_reply(cardholder, waiting_job.pk, "e1", {"tfa": "secret\x07"})
    )

    assert "secret" not in error.message


def test_bad_reply_leaves_the_request_unclaimed(waiting_job, cardholder):
    _error(lambda: submit_reply(cardholder, waiting_job.pk, "e1", {"tfa": ""}))

    request = CredentialRequest.objects.get(envelope_id="e1")
    assert (request.answered_at, request.reply_state) == (None, ReplyState.NONE)


CARD = {
    "pan": "4111 1111 1111 1111",
    "cvv": "123",
    "expiration_month": "12",
    "expiration_year": "2099",
    "name_on_card": "Alice Example",
    "address": {
        "address1": "1 Main St",
        "city": "Seattle",
        "subnational": "WA",
        "postal_code": "98101",
    },
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"pan": "4111111111111112"}, "pan"),
        ({"pan": "4111-abc"}, "pan"),
        ({"cvv": "12"}, "cvv"),
        ({"cvv": "12345"}, "cvv"),
        ({"expiration_month": "13"}, "expiration_month"),
        ({"expiration_year": "2001"}, "expiration_year"),
        ({"name_on_card": "  "}, "name_on_card"),
        ({"address": {"address1": "1 Main St"}}, "city"),
        ({"address": "Seattle"}, "address"),
    ],
)
def test_bad_card_is_refused_naming_the_field(change, field):
    with pytest.raises(services.InvalidInput) as caught:
        services.validate_card(**{**CARD, **change})

    assert caught.value.field == field


def test_valid_card_keeps_digits_and_a_four_digit_year():
    pan, _cvv, month, year, _name, address = services.validate_card(
        **{**CARD, "expiration_year": "99"}
    )

    assert (pan, month, year) == ("4111111111111111", 12, 2099)
    assert address["subnational"] == "WA"
