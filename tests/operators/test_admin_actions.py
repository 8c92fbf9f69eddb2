"""Admin actions that reach CardSavr, run against the sandbox."""

from http import HTTPStatus

import pytest
from asgiref.sync import async_to_sync
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from jobs import services
from jobs.models import Job, JobEvent, MerchantSite

pytestmark = pytest.mark.django_db

STANDARD_SITE = "synthetic-sites.sandbox.local/standard"
CARD = {
    "pan": "4111111111111111",
    "cvv": "123",
    "expiration_month": "12",
    "expiration_year": "2099",
    "name_on_card": "Ann Example",
    "address": {
        "address1": "1 Main St",
        "city": "Seattle",
        "subnational": "WA",
        "postal_code": "98101",
    },
}
JOBS = reverse("admin:jobs_job_changelist")


@pytest.fixture
def running_job(portal_on_sandbox, settings) -> Job:
    """A job at the sandbox waiting for the cardholder's first credentials."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

    async def start() -> Job:
        cardholder = await services.create_cardholder("ann", "a-long-portal-pass-41")
        await services.add_card(cardholder, **CARD)
        await services.sync_merchant_sites()
        site = await MerchantSite.objects.aget(host=STANDARD_SITE)
        [job] = await services.start_jobs(cardholder, [(site, None)])
        return job

    return async_to_sync(start)()


def act(client, action: str, jobs: list[Job]):
    return client.post(
        JOBS,
        {"action": action, "_selected_action": [job.pk for job in jobs]},
        follow=True,
    )


def messages_of(response) -> str:
    return " ".join(str(message) for message in response.context["messages"])


def test_operator_cancels_a_job_at_cardsavr(operator_client, running_job):
    response = act(operator_client, "cancel_at_cardsavr", [running_job])

    assert response.status_code == HTTPStatus.OK
    assert "Cancel requested at CardSavr" in messages_of(response)
    assert JobEvent.objects.filter(
        job=running_job, kind=JobEvent.Kind.CANCEL_REQUESTED
    ).exists()
    running_job.refresh_from_db()
    assert running_job.status in ("CANCEL_REQUESTED", "CANCELLED", "CANCELED")


def test_cancel_is_recorded_in_the_admin_log(operator_client, operator, running_job):
    act(operator_client, "cancel_at_cardsavr", [running_job])

    entry = LogEntry.objects.get(object_id=str(running_job.pk))
    assert entry.user == operator
    assert entry.get_change_message() == "Cancel requested at CardSavr"


def test_cancel_cardsavr_refuses_is_reported_as_a_failure(
    operator_client, running_job, sandbox
):
    sandbox.engine.faults.add(kind="500", count=None)

    response = act(operator_client, "cancel_at_cardsavr", [running_job])

    assert "Could not cancel" in messages_of(response)
    entry = LogEntry.objects.get(object_id=str(running_job.pk))
    assert entry.get_change_message().startswith("Cancel at CardSavr failed")


def test_operator_refreshes_a_job_from_cardsavr(operator_client, running_job):
    response = act(operator_client, "refresh_from_cardsavr", [running_job])

    text = messages_of(response)
    assert str(running_job.cardsavr_id) in text
    assert "Could not refresh" not in text
    assert LogEntry.objects.get(object_id=str(running_job.pk)).get_change_message() == (
        "Refreshed from CardSavr"
    )


def test_operator_resyncs_merchant_sites_with_none_mirrored_yet(
    operator_client, portal_on_sandbox
):
    response = operator_client.post(
        reverse("admin:jobs_merchantsite_resync"), follow=True
    )

    assert response.status_code == HTTPStatus.OK
    assert MerchantSite.objects.exists()
    assert "Resynced" in messages_of(response)
    assert LogEntry.objects.get().object_repr == "All merchant sites"


def test_resync_action_on_selected_sites_resyncs_them_all(operator_client, running_job):
    site = running_job.merchant_site
    MerchantSite.objects.filter(pk=site.pk).update(name="Stale name")

    response = operator_client.post(
        reverse("admin:jobs_merchantsite_changelist"),
        {"action": "resync_merchant_sites", "_selected_action": [site.pk]},
        follow=True,
    )

    site.refresh_from_db()
    assert "Resynced" in messages_of(response)
    assert site.name != "Stale name"


def test_resync_failure_is_reported_and_logged(operator_client, sandbox, settings):
    settings.CARDSAVR_API_URL = "https://127.0.0.1:9/"
    settings.CARDSAVR_TIMEOUT = 1.0

    response = operator_client.post(
        reverse("admin:jobs_merchantsite_resync"), follow=True
    )

    assert "Resync from CardSavr failed" in messages_of(response)
    assert LogEntry.objects.get().change_message.startswith(
        "Resync from CardSavr failed"
    )


def test_no_credential_or_card_number_reaches_any_operator_page(
    superuser_client, portal_on_sandbox, settings
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    canary = "Canary-Merchant-Pass-5521"

    async def start() -> Job:
        cardholder = await services.create_cardholder("cat", "a-long-portal-pass-41")
        await services.add_card(cardholder, **CARD)
        await services.sync_merchant_sites()
        site = await MerchantSite.objects.aget(host=STANDARD_SITE)
        [job] = await services.start_jobs(
            cardholder, [(site, {"username": "good_email", "password": canary})]
        )
        return await services.refresh_job(job.pk)

    job = async_to_sync(start)()
    pages = [
        reverse("admin:jobs_job_changelist"),
        reverse("admin:jobs_job_change", args=[job.pk]),
        reverse("admin:jobs_cardholder_change", args=[job.cardholder_id]),
        reverse("admin:jobs_credentialrequest_changelist"),
        reverse("admin:jobs_jobevent_changelist"),
        reverse("admin:jobs_card_changelist"),
        reverse("admin:jobs_report") + "?format=csv",
    ]

    for page in pages:
        text = superuser_client.get(page).content.decode()

        assert canary not in text, page
        assert CARD["pan"] not in text, page
