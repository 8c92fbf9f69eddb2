"""Mirroring CardSavr's job state into the database (no CardSavr needed)."""

from datetime import timedelta

import pytest

from jobs import events, selectors, services
from jobs.models import CloseReason, CredentialRequest, Job, JobEvent, Outcome
from tests.portal.conftest import T0, remote_job, tfa_request


def _prefetched(job: Job) -> Job:
    return selectors.jobs_with_state().get(pk=job.pk)


def test_apply_remote_job_makes_no_query_when_nothing_changed(
    job, django_assert_num_queries
):
    services.apply_remote_job(
        job, remote_job(job.cardsavr_id, status="AUTH"), source="poll", read_at=T0
    )
    current = _prefetched(job)

    with django_assert_num_queries(0):
        changed = services.apply_remote_job(
            current,
            remote_job(job.cardsavr_id, status="AUTH"),
            source="poll",
            read_at=T0 + timedelta(seconds=1),
        )

    assert changed is False


def test_apply_remote_job_raises_version_by_one_for_a_change(job):
    services.apply_remote_job(
        job,
        remote_job(job.cardsavr_id, status="AUTH", percent_complete=40),
        source="poll",
    )

    job.refresh_from_db()
    assert job.version == 2
    assert (job.status, job.percent_complete) == ("AUTH", 40)


def test_apply_remote_job_records_a_status_change_event(job):
    services.apply_remote_job(
        job, remote_job(job.cardsavr_id, status="AUTH"), source="poll"
    )

    event = JobEvent.objects.get(job=job, kind=JobEvent.Kind.STATUS)
    assert (event.status, event.data["from"]) == ("AUTH", "REQUESTED")


def test_apply_remote_job_records_progress_without_status_change(job):
    services.apply_remote_job(
        job,
        remote_job(job.cardsavr_id, status="REQUESTED", percent_complete=55),
        source="poll",
    )

    assert JobEvent.objects.filter(job=job, kind=JobEvent.Kind.PROGRESS).count() == 1
    assert not JobEvent.objects.filter(job=job, kind=JobEvent.Kind.STATUS).exists()


def test_apply_remote_job_opens_a_request_with_field_definitions_only(job):
    remote = remote_job(
        job.cardsavr_id, status="PENDING_TFA", requests=[tfa_request("env-1")]
    )

    services.apply_remote_job(job, remote, source="poll")

    request = CredentialRequest.objects.get(job=job)
    assert request.envelope_id == "env-1"
    assert request.account_link == [
        {"key_name": "tfa", "label": "Verification code", "secret": False}
    ]
    assert request.is_open
    job.refresh_from_db()
    assert job.outcome == Outcome.NEEDS_INPUT
    assert JobEvent.objects.get(job=job, kind=JobEvent.Kind.PROMPT_OPENED).data[
        "fields"
    ] == ["tfa"]


def test_apply_remote_job_supersedes_a_request_replaced_by_a_new_envelope(job):
    services.apply_remote_job(
        job,
        remote_job(
            job.cardsavr_id, status="PENDING_TFA", requests=[tfa_request("env-1")]
        ),
        source="poll",
    )

    services.apply_remote_job(
        job,
        remote_job(
            job.cardsavr_id,
            status="PENDING_TFA",
            requests=[tfa_request("env-2")],
            last_updated_on=T0 + timedelta(seconds=5),
        ),
        source="poll",
    )

    first = CredentialRequest.objects.get(envelope_id="env-1")
    assert first.close_reason == CloseReason.SUPERSEDED
    assert CredentialRequest.objects.get(envelope_id="env-2").is_open


def test_apply_remote_job_closes_requests_when_the_job_ends(job):
    services.apply_remote_job(
        job,
        remote_job(
            job.cardsavr_id, status="PENDING_TFA", requests=[tfa_request("env-1")]
        ),
        source="poll",
    )

    services.apply_remote_job(
        job,
        remote_job(
            job.cardsavr_id,
            status="TIMEOUT_TFA",
            termination_type="USER_DATA_FAILURE",
            last_updated_on=T0 + timedelta(minutes=4),
        ),
        source="poll",
    )

    job.refresh_from_db()
    assert job.outcome == Outcome.FAILED
    assert CredentialRequest.objects.get(envelope_id="env-1").close_reason == (
        CloseReason.JOB_ENDED
    )
    assert JobEvent.objects.filter(job=job, kind=JobEvent.Kind.TERMINATED).exists()


def test_apply_remote_job_closes_an_answered_request_as_answered(job):
    services.apply_remote_job(
        job,
        remote_job(
            job.cardsavr_id, status="PENDING_TFA", requests=[tfa_request("env-1")]
        ),
        source="poll",
    )
    CredentialRequest.objects.filter(envelope_id="env-1").update(answered_at=T0)

    services.apply_remote_job(
        job,
        remote_job(
            job.cardsavr_id,
            status="TFA_RECEIVED",
            last_updated_on=T0 + timedelta(seconds=3),
        ),
        source="poll",
    )

    assert CredentialRequest.objects.get(envelope_id="env-1").close_reason == (
        CloseReason.ANSWERED
    )


def test_apply_remote_job_keeps_a_request_open_when_a_pending_read_lacks_it(job):
    services.apply_remote_job(
        job,
        remote_job(
            job.cardsavr_id, status="PENDING_TFA", requests=[tfa_request("env-1")]
        ),
        source="poll",
    )

    services.apply_remote_job(
        job,
        remote_job(
            job.cardsavr_id,
            status="PENDING_TFA",
            last_updated_on=T0 + timedelta(seconds=1),
        ),
        source="poll",
    )

    assert CredentialRequest.objects.get(envelope_id="env-1").is_open


def test_apply_remote_job_ignores_a_read_older_than_the_stored_state(job):
    services.apply_remote_job(
        job, remote_job(job.cardsavr_id, status="UPDATING"), source="poll"
    )

    changed = services.apply_remote_job(
        job,
        remote_job(
            job.cardsavr_id, status="AUTH", last_updated_on=T0 - timedelta(seconds=1)
        ),
        source="poll",
    )

    job.refresh_from_db()
    assert changed is False
    assert job.status == "UPDATING"


def test_apply_remote_job_pins_the_deadline_from_job_timeout(job):
    services.apply_remote_job(
        job, remote_job(job.cardsavr_id, job_timeout=90_000), source="poll", read_at=T0
    )

    job.refresh_from_db()
    assert job.deadline == T0 + timedelta(seconds=90)


def test_apply_remote_job_stores_an_unknown_status_as_it_comes(job):
    services.apply_remote_job(
        job, remote_job(job.cardsavr_id, status="BRAND_NEW_STATUS"), source="poll"
    )

    job.refresh_from_db()
    assert (job.status, job.outcome) == ("BRAND_NEW_STATUS", Outcome.IN_PROGRESS)


def test_apply_remote_job_never_changes_a_finished_job(job):
    services.apply_remote_job(
        job,
        remote_job(job.cardsavr_id, status="SUCCESSFUL", termination_type="BILLABLE"),
        source="poll",
    )

    changed = services.apply_remote_job(
        job,
        remote_job(
            job.cardsavr_id, status="UPDATING", last_updated_on=T0 + timedelta(hours=1)
        ),
        source="poll",
    )

    assert changed is False


def test_apply_remote_job_pushes_the_new_payload_after_commit(
    job, cardholder_pushes, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        services.apply_remote_job(
            job, remote_job(job.cardsavr_id, status="AUTH"), source="poll"
        )

    [message] = cardholder_pushes.messages()
    assert message["type"] == events.JOB_CHANGED_EVENT
    assert (
        message["job"]["id"],
        message["job"]["status"],
        message["job"]["version"],
    ) == (
        job.pk,
        "AUTH",
        2,
    )


def test_apply_remote_job_pushes_nothing_before_commit(
    job, cardholder_pushes, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        services.apply_remote_job(
            job, remote_job(job.cardsavr_id, status="AUTH"), source="poll"
        )

    assert cardholder_pushes.messages() == []


def test_mark_job_vanished_fails_the_job_with_a_clear_message(job):
    services.mark_job_vanished(job)

    job.refresh_from_db()
    assert job.vanished_at is not None
    assert job.outcome == Outcome.FAILED
    assert "no longer knows" in job.status_message
    assert JobEvent.objects.filter(job=job, kind=JobEvent.Kind.VANISHED).exists()


def test_apply_webhook_job_ends_the_job(job):
    services.apply_webhook_job(
        job.cardsavr_id,
        status="SUCCESSFUL",
        status_message="Done.",
        termination_type="BILLABLE",
        completed_on=T0,
    )

    job.refresh_from_db()
    assert (job.outcome, job.completed_on) == (Outcome.SUCCESS, T0)


def test_apply_webhook_job_returns_none_for_a_job_not_ours(db):
    assert (
        services.apply_webhook_job(
            424242,
            status="SUCCESSFUL",
            status_message="",
            termination_type="BILLABLE",
            completed_on=None,
        )
        is None
    )


def test_set_upstream_state_broadcasts_only_on_change(
    listen, django_capture_on_commit_callbacks
):
    broadcast = listen(events.BROADCAST_GROUP)

    services.set_upstream_state(False, "CardSavr is not answering; retrying in 4 s", 4)
    services.set_upstream_state(False, "CardSavr is not answering; retrying in 4 s", 4)
    services.set_upstream_state(True, "", None)

    messages = broadcast.messages()
    assert [m["state"]["reachable"] for m in messages] == [False, True]
    assert selectors.upstream_state()["reachable"] is True


@pytest.fixture(autouse=True)
def _fresh_upstream_state():
    from django.core.cache import cache

    cache.delete(selectors.UPSTREAM_STATE_KEY)
    yield
    cache.delete(selectors.UPSTREAM_STATE_KEY)


def test_apply_remote_job_ignores_a_request_with_a_malformed_envelope_id(job):
    services.apply_remote_job(
        job,
        remote_job(
            job.cardsavr_id, status="PENDING_TFA", requests=[tfa_request("bad\r\nid")]
        ),
        source="poll",
    )

    assert not CredentialRequest.objects.filter(job=job).exists()
