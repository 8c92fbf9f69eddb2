"""The job payload and the reads that build it."""

from datetime import timedelta

from django.urls import reverse, set_script_prefix
from django.utils import timezone

from jobs import selectors, services
from jobs.models import CredentialRequest, ReplyState
from jobs.serializers import job_payload
from tests.portal.conftest import T0, remote_job, tfa_request


def test_job_payload_has_the_contract_shape(job):
    payload = selectors.job_payload_by_id(job.pk)

    assert set(payload) >= {
        "id",
        "merchant_site",
        "status",
        "status_message",
        "percent_complete",
        "auth_percent_complete",
        "termination_type",
        "outcome",
        "deadline",
        "seconds_left",
        "version",
        "credential_request",
    }
    assert payload["id"] == job.pk
    assert set(payload["merchant_site"]) == {"id", "name", "host", "logo"}


def test_job_payload_counts_seconds_left_from_the_deadline(job):
    now = timezone.now()
    job.deadline = now + timedelta(seconds=75)

    assert job_payload(job, None, now=now)["seconds_left"] == 75


def test_job_payload_never_counts_below_zero(job):
    now = timezone.now()
    job.deadline = now - timedelta(seconds=5)

    assert job_payload(job, None, now=now)["seconds_left"] == 0


def test_job_payload_shows_the_open_request_fields(job):
    services.apply_remote_job(
        job,
        remote_job(job.cardsavr_id, status="PENDING_TFA", requests=[tfa_request("e1")]),
        source="poll",
    )

    request = selectors.job_payload_by_id(job.pk)["credential_request"]

    assert request["envelope_id"] == "e1"
    assert request["account_link"] == [
        {"key_name": "tfa", "label": "Verification code", "secret": False}
    ]
    assert request["answerable"] is True


def test_dashboard_reads_jobs_in_a_fixed_number_of_queries(
    cardholder, make_job, django_assert_num_queries
):
    for _ in range(3):
        made = make_job(cardholder)
        services.apply_remote_job(
            made,
            remote_job(
                made.cardsavr_id,
                status="PENDING_TFA",
                requests=[tfa_request(f"env-{made.pk}")],
            ),
            source="poll",
        )
    with django_assert_num_queries(3) as few:
        selectors.job_payloads_for_cardholder(cardholder)
    for _ in range(5):
        make_job(cardholder)

    with django_assert_num_queries(len(few.captured_queries)):
        payloads = selectors.job_payloads_for_cardholder(cardholder)

    assert len(payloads) == 8


def test_dashboard_lists_jobs_waiting_for_an_answer_first(cardholder, make_job):
    waiting = make_job(cardholder)
    make_job(cardholder)
    services.apply_remote_job(
        waiting,
        remote_job(
            waiting.cardsavr_id, status="PENDING_TFA", requests=[tfa_request("e1")]
        ),
        source="poll",
    )

    payloads = selectors.job_payloads_for_cardholder(cardholder)

    assert payloads[0]["id"] == waiting.pk


def test_dashboard_shows_no_job_of_another_cardholder(
    cardholder, make_cardholder, make_job
):
    make_job(make_cardholder("bob"))

    assert selectors.job_payloads_for_cardholder(cardholder) == []


def test_merchant_sites_search_matches_name_or_host(site):
    assert list(selectors.merchant_sites("synthetic.ex")) == [site]
    assert list(selectors.merchant_sites("nothing like it")) == []


def test_initial_fields_are_the_typed_initial_ones(site):
    assert [f["key_name"] for f in selectors.initial_fields(site)] == [
        "username",
        "password",
    ]


def _acknowledged_push_approval(job, *, auth_percent_complete):
    services.apply_remote_job(
        job,
        remote_job(
            job.cardsavr_id,
            status="PENDING_TFA_MESSAGE",
            auth_percent_complete=60,
            requests=[
                {
                    "envelope_id": "push-1",
                    "type": "tfa_message",
                    "message": {"status_message": "Approve it on your phone."},
                    "account_link": [
                        {"key_name": "tfa_message", "label": "Tap 42", "secret": False}
                    ],
                }
            ],
        ),
        source="poll",
    )
    CredentialRequest.objects.filter(envelope_id="push-1").update(
        answered_at=timezone.now(), reply_state=ReplyState.SENT
    )
    services.apply_remote_job(
        job,
        remote_job(
            job.cardsavr_id,
            status="TFA_RECEIVED",
            auth_percent_complete=auth_percent_complete,
            last_updated_on=T0 + timedelta(seconds=2),
        ),
        source="poll",
    )


def test_acknowledged_push_approval_stays_shown_while_signing_in(job):
    _acknowledged_push_approval(job, auth_percent_complete=70)

    request = selectors.job_payload_by_id(job.pk)["credential_request"]

    assert request["account_link"][0]["label"] == "Tap 42"
    assert request["answerable"] is False


def test_acknowledged_push_approval_is_gone_once_signed_in(job):
    _acknowledged_push_approval(job, auth_percent_complete=100)

    assert selectors.job_payload_by_id(job.pk)["credential_request"] is None


def test_job_payload_names_the_portals_logo_route_for_a_site_with_a_logo(job):
    site = job.merchant_site
    site.logo_content_type = "image/svg+xml"

    logo = job_payload(job, None)["merchant_site"]["logo"]

    assert logo == reverse("merchant_site_logo", args=[site.pk])


def test_job_payload_logo_follows_the_prefix_the_portal_is_served_under(job):
    job.merchant_site.logo_content_type = "image/svg+xml"
    job_payload(job, None)
    set_script_prefix("/portal/")
    try:
        logo = job_payload(job, None)["merchant_site"]["logo"]
    finally:
        set_script_prefix("/")

    assert logo.startswith("/portal/")
