"""The sandbox delivers session_complete to the portal's own webhook view."""

import time

import pytest
from asgiref.sync import async_to_sync

from jobs import services
from jobs.models import Job, MerchantSite, WebhookNotification
from tests.operators.test_admin_actions import CARD, STANDARD_SITE

pytestmark = pytest.mark.django_db(transaction=True)


def test_finished_sandbox_job_reaches_the_portal_by_webhook_without_polling(
    live_server, portal_on_sandbox, settings
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.CARDSAVR_CARDHOLDER_WEBHOOK_URL = f"{live_server.url}/webhooks/cardsavr/"

    async def start() -> Job:
        cardholder = await services.create_cardholder("web", "a-long-portal-pass-41")
        await services.add_card(cardholder, **CARD)
        await services.sync_merchant_sites()
        site = await MerchantSite.objects.aget(host=STANDARD_SITE)
        [job] = await services.start_jobs(
            cardholder, [(site, {"username": "good_email", "password": "no_tfa"})]
        )
        return job

    job = async_to_sync(start)()
    deadline = time.monotonic() + 60
    while not WebhookNotification.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.1)

    job.refresh_from_db()
    notification = WebhookNotification.objects.get()
    assert notification.job_ids == [job.cardsavr_id]
    assert notification.unknown_job_ids == []
    assert (job.status, job.termination_type) == ("SUCCESSFUL", "BILLABLE")
