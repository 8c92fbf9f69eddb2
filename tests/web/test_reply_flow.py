"""Answering a prompt with plain HTML forms (no JavaScript) against the sandbox."""

import time

import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from jobs import services
from jobs.models import Job, MerchantSite
from jobs.poller import Poller

pytestmark = pytest.mark.django_db

PASSWORD = "no-js-test-pass-4"


@pytest.fixture
def client_with_card(portal_on_sandbox) -> Client:
    async_to_sync(services.sync_merchant_sites)()
    holder = async_to_sync(services.create_cardholder)("nojs", PASSWORD)
    client = Client()
    client.force_login(holder.user)
    response = client.post(
        "/card/",
        {
            "number": "4111 1111 1111 1111",
            "expiration_month": "12",
            "expiration_year": str(time.gmtime().tm_year + 2),
            "cvv": "123",
            "name_on_card": "No Script",
            "street": "1 Main Street",
            "city": "Seattle",
            "state": "WA",
            "postal_code": "98101",
        },
    )
    assert response.status_code == 302
    return client


def poll_until(condition, timeout: float = 20):
    poller = Poller(interval=0.1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async_to_sync(poller.tick)()
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("the job did not get there in time")


def test_card_is_saved_and_only_its_last_four_are_shown(client_with_card):
    page = client_with_card.get("/card/").content.decode()
    assert "ending 1111" in page
    assert "4111 1111 1111 1111" not in page
    assert "4111111111111111" not in page


def test_code_prompt_answered_by_form_post_ends_in_success(client_with_card):
    amazon = MerchantSite.objects.get(name="Amazon")
    response = client_with_card.post(
        "/start/",
        {
            "site": str(amazon.pk),
            "mode": "now",
            f"site-{amazon.pk}-username": "good_email",
            f"site-{amazon.pk}-password": "tfa",
        },
    )
    assert response.status_code == 302
    job = Job.objects.get(merchant_site=amazon)

    def open_envelope():
        request = job.credential_requests.filter(closed_at__isnull=True).first()
        return request.envelope_id if request else None

    envelope = poll_until(open_envelope)
    page = client_with_card.get("/").content.decode()
    assert f'name="envelope_id" value="{envelope}"' in page

    response = client_with_card.post(
        f"/jobs/{job.pk}/reply/", {"envelope_id": envelope, "tfa": "1234"}, follow=True
    )
    assert "Sent to Amazon" in response.content.decode()
    assert "1234" not in response.content.decode()

    poll_until(lambda: Job.objects.get(pk=job.pk).outcome == "success")
    page = client_with_card.get("/").content.decode()
    assert "Done: your card is saved here" in page


def test_start_now_without_sign_in_asks_for_it_on_the_dashboard(client_with_card):
    netflix = MerchantSite.objects.get(name="Netflix")
    response = client_with_card.post(
        "/start/", {"site": str(netflix.pk), "mode": "later"}, follow=True
    )
    assert "Started at Netflix" in response.content.decode()
    job = Job.objects.get(merchant_site=netflix)
    poll_until(lambda: job.credential_requests.filter(closed_at__isnull=True).exists())
    page = client_with_card.get("/").content.decode()
    assert "Sign in to Netflix" in page
    assert f'id="f-{job.pk}-password"' in page


def test_cancel_by_form_post_asks_cardsavr_to_stop(client_with_card):
    netflix = MerchantSite.objects.get(name="Netflix")
    client_with_card.post("/start/", {"site": str(netflix.pk), "mode": "later"})
    job = Job.objects.get(merchant_site=netflix)
    response = client_with_card.post(f"/jobs/{job.pk}/cancel/", follow=True)
    assert "Cancel requested for Netflix" in response.content.decode()
    poll_until(lambda: Job.objects.get(pk=job.pk).outcome == "cancelled")
