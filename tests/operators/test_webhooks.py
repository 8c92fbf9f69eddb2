import json
import logging
from datetime import UTC, datetime
from http import HTTPStatus

import pytest
from django.core.cache import cache
from django.test import Client

from cardsavr import crypto
from jobs.models import Job, JobEvent, WebhookNotification
from jobs.webhooks import MAX_BODY_BYTES, CardSavrWebhookView
from tests.operators.conftest import make_cardholder, make_job, make_site

pytestmark = pytest.mark.django_db

# Published test vector V15 (CardSavr's Java SigningTest).
V15_KEY = "Gp0nCuj+XiA0pb8AFKUzqbx5JL1GzBexbzds4oqahAc="
V15_URL = "https://synthetic-sites-server.vercel.app/webhook"
V15_APP = "cardupdatr_ux_integrator"
V15_AUTHORIZATION = f"SWCH-HMAC-SHA256 Credentials={V15_APP}"
V15_NONCE = "1695884151469"
V15_BODY = (
    b'{"jobs":[{"job_id":228,"completed_on":"2023-09-28T06:53:22.505Z",'
    b'"merchant_site":{"id":1,"host":"synthetic-sites-server.vercel.app/index.html",'
    b'"name":"SS Standard Login"},"termination_type":"BILLABLE",'
    b'"job_status_message":"Your card was placed successfully.",'
    b'"job_status":"SUCCESSFUL","custom_data":null,'
    b'"card_customer_key":"C111jwNWwu0YW6f4qN4UDBExKnNs="}],'
    b'"financial_institution_id":2,"financial_institution":"Default",'
    b'"trace":{"key":"iiodknpfk33i57zmghij"},"custom_data":null,'
    b'"cuid":"iiodknpfk33i57zmghij","username":"iiodknpfk33i57zmghij"}'
)
V15_SIGNATURE = "IvP5sku4yDw9ALA3hkaqodHNNCmPqYEYzfGtwY2ZdNE="
# The moment the vector was signed, as the nonce says.
V15_TIME = int(V15_NONCE) / 1000
OTHER_KEY = "VeY9uD0w3zRdrlmIPxnU/l+Vr8w2bbV26E6DxajFu+A="
URL = "/webhooks/cardsavr/"


@pytest.fixture(autouse=True)
def vector_settings(settings, monkeypatch):
    settings.CARDSAVR_WEBHOOK_URL = V15_URL
    settings.CARDSAVR_APP_KEY = V15_KEY
    settings.CARDSAVR_APP_NAME = V15_APP
    settings.CARDSAVR_PREVIOUS_APP_KEYS = []
    monkeypatch.setattr(CardSavrWebhookView, "clock", staticmethod(lambda: V15_TIME))
    cache.clear()
    return settings


def post(
    client: Client,
    body: bytes = V15_BODY,
    *,
    nonce: str = V15_NONCE,
    signature: str = V15_SIGNATURE,
    authorization: str = V15_AUTHORIZATION,
):
    return client.post(
        URL,
        data=body,
        content_type="application/json",
        headers={
            "x-cardsavr-signature": signature,
            "x-cardsavr-authorization": authorization,
            "x-cardsavr-nonce": nonce,
        },
    )


def signed(body: bytes, nonce: str, key: str = V15_KEY, url: str = V15_URL) -> dict:
    return {
        "body": body,
        "nonce": nonce,
        "signature": crypto.sign_webhook(key, url, V15_AUTHORIZATION, nonce, body),
    }


def test_signing_helper_reproduces_published_vector_v15():
    assert (
        crypto.sign_webhook(V15_KEY, V15_URL, V15_AUTHORIZATION, V15_NONCE, V15_BODY)
        == V15_SIGNATURE
    )


def test_published_vector_v15_is_accepted(client):
    response = post(client)

    assert response.status_code == HTTPStatus.OK
    assert WebhookNotification.objects.get().cuid == "iiodknpfk33i57zmghij"


def test_webhook_needs_no_csrf_token_because_the_signature_authenticates_it():
    response = post(Client(enforce_csrf_checks=True))

    assert response.status_code == HTTPStatus.OK


def test_tampered_body_is_refused_and_logged_without_the_body(client, caplog):
    tampered = V15_BODY.replace(b"BILLABLE", b"USER_DATA_FAILURE")

    with caplog.at_level(logging.WARNING, logger="jobs.webhooks.security"):
        response = post(client, tampered)

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert not WebhookNotification.objects.exists()
    record = next(r for r in caplog.records if r.name == "jobs.webhooks.security")
    assert "bad signature" in record.getMessage()
    assert "127.0.0.1" in record.getMessage()
    assert "iiodknpfk33i57zmghij" not in caplog.text


def test_signature_by_another_key_is_refused(client, settings):
    settings.CARDSAVR_APP_KEY = OTHER_KEY

    response = post(client)

    assert response.status_code == HTTPStatus.UNAUTHORIZED


def test_previous_key_is_accepted_during_rotation(client, settings):
    settings.CARDSAVR_APP_KEY = OTHER_KEY
    settings.CARDSAVR_PREVIOUS_APP_KEYS = [V15_KEY]

    response = post(client)

    assert response.status_code == HTTPStatus.OK


def test_authorization_naming_another_app_is_refused(client, settings):
    settings.CARDSAVR_APP_NAME = "someone_else"

    response = post(client)

    assert response.status_code == HTTPStatus.UNAUTHORIZED


def test_missing_signature_headers_are_refused(client):
    response = client.post(URL, data=V15_BODY, content_type="application/json")

    assert response.status_code == HTTPStatus.UNAUTHORIZED


@pytest.mark.parametrize("offset", [-301, 301], ids=["stale", "from-the-future"])
def test_nonce_outside_five_minutes_is_refused(client, monkeypatch, caplog, offset):
    monkeypatch.setattr(
        CardSavrWebhookView, "clock", staticmethod(lambda: V15_TIME + offset)
    )

    response = post(client)

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert "time window" in caplog.text


def test_nonce_within_five_minutes_is_accepted(client, monkeypatch):
    monkeypatch.setattr(
        CardSavrWebhookView, "clock", staticmethod(lambda: V15_TIME + 299)
    )

    response = post(client)

    assert response.status_code == HTTPStatus.OK


def test_replayed_nonce_and_signature_are_refused(client, caplog):
    post(client)

    response = post(client)

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert "replayed" in caplog.text


def test_replay_is_refused_even_after_the_cache_was_emptied(client):
    post(client)
    cache.clear()

    response = post(client)

    assert response.status_code == HTTPStatus.UNAUTHORIZED


def test_retry_of_the_same_delivery_is_acknowledged_and_does_nothing_new(client):
    ann = make_cardholder("ann")
    job = make_job(ann, make_site("Synthetic"), status="UPDATING")
    Job.objects.filter(pk=job.pk).update(cardsavr_id=228)
    post(client)
    events = JobEvent.objects.count()

    # CardSavr's retry: same body, new nonce, new signature.
    response = post(client, **signed(V15_BODY, str(int(V15_NONCE) + 10_000)))

    assert response.status_code == HTTPStatus.OK
    assert response.json()["status"] == "duplicate"
    assert WebhookNotification.objects.count() == 1
    assert JobEvent.objects.count() == events


def test_notification_updates_the_mirrored_job(client):
    job = make_job(make_cardholder("ann"), make_site("Synthetic"), status="UPDATING")
    Job.objects.filter(pk=job.pk).update(cardsavr_id=228)

    response = post(client)

    job.refresh_from_db()
    assert response.status_code == HTTPStatus.OK
    assert (job.status, job.termination_type) == ("SUCCESSFUL", "BILLABLE")
    assert job.status_message == "Your card was placed successfully."
    assert job.outcome == "success"


def test_unknown_job_is_acknowledged_and_logged(client, caplog):
    with caplog.at_level(logging.WARNING, logger="jobs.webhooks"):
        response = post(client)

    assert response.status_code == HTTPStatus.OK
    assert response.json()["unknown_job_ids"] == [228]
    assert WebhookNotification.objects.get().unknown_job_ids == [228]
    assert "228" in caplog.text


def test_never_started_entry_still_updates_the_job(client):
    job = make_job(make_cardholder("ann"), make_site("Synthetic"), status="QUEUED")
    body = json.dumps(
        {
            "jobs": [
                {
                    "job_id": job.cardsavr_id,
                    "job_status": "CANCELLED",
                    "termination_type": "NEVER_STARTED",
                    "job_status_message": "Cancelled.",
                    "completed_on": "2023-09-28T06:53:22.505Z",
                }
            ],
            "cuid": "cuid-ann",
        }
    ).encode()

    response = post(client, **signed(body, V15_NONCE))

    job.refresh_from_db()
    assert response.status_code == HTTPStatus.OK
    assert (job.status, job.termination_type) == ("CANCELLED", "NEVER_STARTED")


def test_unknown_status_is_kept_as_it_comes(client):
    job = make_job(make_cardholder("ann"), make_site("Synthetic"), status="QUEUED")
    body = json.dumps(
        {
            "jobs": [
                {
                    "job_id": job.cardsavr_id,
                    "job_status": "BRAND_NEW_STATUS",
                    "termination_type": "PROCESS_FAILURE",
                }
            ]
        }
    ).encode()

    post(client, **signed(body, V15_NONCE))

    job.refresh_from_db()
    assert job.status == "BRAND_NEW_STATUS"


def test_malformed_json_with_a_good_signature_is_a_bad_request(client):
    response = post(client, **signed(b"{not json", V15_NONCE))

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert not WebhookNotification.objects.exists()


def test_json_without_a_jobs_list_is_a_bad_request(client):
    response = post(client, **signed(b'{"jobs": "many"}', V15_NONCE))

    assert response.status_code == HTTPStatus.BAD_REQUEST


def test_malformed_json_without_a_good_signature_is_unauthorized(client):
    response = post(client, b"{not json")

    assert response.status_code == HTTPStatus.UNAUTHORIZED


def test_oversized_body_is_refused(client):
    body = b'{"jobs": [], "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'

    response = post(client, **signed(body, V15_NONCE))

    assert response.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def test_get_is_not_allowed(client):
    response = client.get(URL)

    assert response.status_code == HTTPStatus.METHOD_NOT_ALLOWED


def test_without_a_configured_url_the_request_url_is_what_was_signed(client, settings):
    settings.CARDSAVR_WEBHOOK_URL = ""

    response = post(
        client,
        **signed(V15_BODY, V15_NONCE, url="http://testserver/webhooks/cardsavr/"),
    )

    assert response.status_code == HTTPStatus.OK


def test_notification_after_the_poller_already_mirrored_changes_nothing(client):
    job = make_job(
        make_cardholder("ann"),
        make_site("Synthetic"),
        status="SUCCESSFUL",
        termination_type="BILLABLE",
        status_message="Your card was placed successfully.",
    )
    Job.objects.filter(pk=job.pk).update(
        cardsavr_id=228,
        percent_complete=100,
        completed_on=datetime(2023, 9, 28, 6, 53, 22, 505000, tzinfo=UTC),
    )
    job.refresh_from_db()
    events = JobEvent.objects.count()

    response = post(client)

    after = Job.objects.get(pk=job.pk)
    assert response.status_code == HTTPStatus.OK
    assert after.version == job.version
    assert JobEvent.objects.count() == events
