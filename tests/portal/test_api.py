"""The JSON API: session auth, CSRF, ownership and input errors."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client

from jobs import services
from jobs.models import CredentialRequest, Job
from jobs.poller import Poller
from tests.portal.conftest import remote_job, tfa_request
from tests.portal.flows import CARD, open_request_of_type, poll_until, site


@pytest.fixture
def browser() -> Client:
    """A client that must send the CSRF token, as a browser page does."""
    client = Client(enforce_csrf_checks=True)
    client.csrf_token = _get_new_csrf_string()
    client.cookies["csrftoken"] = client.csrf_token
    return client


def post(client: Client, url: str, body, *, token: bool = True, raw: bool = False):
    headers = {"X-CSRFToken": client.csrf_token} if token else {}
    data = body if raw else json.dumps(body)
    return client.post(url, data, content_type="application/json", headers=headers)


@pytest.fixture
def signed_in(browser, cardholder) -> Client:
    browser.force_login(cardholder.user)
    return browser


@pytest.fixture
def waiting_job(job):
    services.apply_remote_job(
        job,
        remote_job(job.cardsavr_id, status="PENDING_TFA", requests=[tfa_request("e1")]),
        source="poll",
    )
    return job


def test_api_answers_anonymous_callers_with_401_json(browser, db):
    response = browser.get("/api/jobs/")

    assert response.status_code == 401
    assert response.json() == {"error": "Sign in to continue.", "field": None}


def test_api_refuses_a_post_without_csrf_token(signed_in, waiting_job):
    response = post(
        signed_in,
        f"/api/jobs/{waiting_job.pk}/reply/",
        {"envelope_id": "e1", "account_link": {"tfa": "1234"}},
        token=False,
    )

    assert response.status_code == 403
    assert CredentialRequest.objects.get(envelope_id="e1").answered_at is None


def test_api_hides_another_cardholders_job(browser, waiting_job, make_cardholder):
    browser.force_login(make_cardholder("mallory").user)

    response = browser.get(f"/api/jobs/{waiting_job.pk}/")

    assert response.status_code == 404
    assert set(response.json()) == {"error", "field"}


def test_api_refuses_a_reply_to_another_cardholders_job(
    browser, waiting_job, make_cardholder
):
    browser.force_login(make_cardholder("mallory").user)

    response = post(
        browser,
        f"/api/jobs/{waiting_job.pk}/reply/",
        {"envelope_id": "e1", "account_link": {"tfa": "1234"}},
    )

    assert response.status_code == 404


def test_api_lists_the_cardholders_jobs(signed_in, waiting_job):
    response = signed_in.get("/api/jobs/")

    assert response.status_code == 200
    [payload] = response.json()["jobs"]
    assert payload["credential_request"]["envelope_id"] == "e1"
    assert response.json()["upstream"]["reachable"] in (True, False)


def test_api_job_detail_has_the_timeline(signed_in, waiting_job):
    response = signed_in.get(f"/api/jobs/{waiting_job.pk}/")

    kinds = [event["kind"] for event in response.json()["timeline"]]
    assert "prompt_opened" in kinds


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{not json", None),
        ("[1, 2]", None),
        (json.dumps({"account_link": {"tfa": "1"}}), "envelope_id"),
        (json.dumps({"envelope_id": "e1", "account_link": ["1234"]}), "account_link"),
        (json.dumps({"envelope_id": "e1", "account_link": {"tfa": 12}}), "tfa"),
        (json.dumps({"envelope_id": "e1", "account_link": {}}), "tfa"),
        (json.dumps({"envelope_id": "e\r\n1", "account_link": {}}), "envelope_id"),
    ],
)
def test_api_refuses_bad_reply_input_naming_the_field(
    signed_in, waiting_job, body, field
):
    response = post(signed_in, f"/api/jobs/{waiting_job.pk}/reply/", body, raw=True)

    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["error"]


def test_api_refuses_an_oversized_body(signed_in, waiting_job):
    body = {"envelope_id": "e1", "account_link": {"tfa": "1" * 40_000}}

    response = post(signed_in, f"/api/jobs/{waiting_job.pk}/reply/", body)

    assert response.status_code == 413


def test_api_refuses_a_job_for_an_unknown_merchant(signed_in, site):
    response = post(signed_in, "/api/jobs/", {"jobs": [{"merchant_site_id": 987654}]})

    assert response.status_code == 400
    assert response.json()["field"] == "merchant_site_id"


def test_api_refuses_a_merchant_site_id_of_the_wrong_type(signed_in, site):
    response = post(signed_in, "/api/jobs/", {"jobs": [{"merchant_site_id": "1"}]})

    assert response.status_code == 400
    assert response.json()["field"] == "merchant_site_id"


def test_api_lists_merchant_sites_with_initial_fields_only(signed_in, site):
    response = signed_in.get("/api/merchant-sites/", {"q": "synth"})

    [listed] = response.json()
    assert listed["id"] == site.pk
    assert [f["key_name"] for f in listed["account_link"]] == ["username", "password"]
    assert set(listed) == {"id", "name", "host", "logo", "tags", "account_link"}


def test_api_refuses_a_get_where_only_post_is_allowed(signed_in, waiting_job):
    response = signed_in.get(f"/api/jobs/{waiting_job.pk}/reply/")

    assert response.status_code == 405


def test_api_reply_is_accepted_once_and_conflicts_after(portal_on_sandbox, browser, db):
    async def prepare():
        cardholder = await services.create_cardholder("dave", "a-long-pass-dave-9")
        await services.add_card(cardholder, **CARD)
        await services.sync_merchant_sites()
        [job] = await services.start_jobs(
            cardholder, [(await site(), {"username": "good_email", "password": "tfa"})]
        )
        return cardholder, job

    cardholder, job = async_to_sync(prepare)()

    async def wait():
        return await poll_until(
            Poller(interval=0.05), job.pk, open_request_of_type("tfa")
        )

    _, request = async_to_sync(wait)()
    browser.force_login(cardholder.user)
    body = {"envelope_id": request.envelope_id, "account_link": {"tfa": "1234"}}

    first = post(browser, f"/api/jobs/{job.pk}/reply/", body)
    second = post(browser, f"/api/jobs/{job.pk}/reply/", body)

    assert first.status_code == 202
    assert first.json()["job"]["id"] == job.pk
    assert second.status_code == 409
    replies = portal_on_sandbox.engine.stats()["credential_replies_per_envelope"]
    assert replies[request.envelope_id] == 1
    assert Job.objects.get(pk=job.pk).version > 1
