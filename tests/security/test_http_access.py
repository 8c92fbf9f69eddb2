"""Access control, reply integrity and input robustness over HTTP, against the
sandbox: what one cardholder may do to another's jobs, CSRF, replayed and late
replies, and hostile input. "Refused" means the documented status and no
reply reaching the sandbox."""

from __future__ import annotations

import json
import logging

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.utils import timezone

from jobs import services
from jobs.models import Job, MerchantSite
from jobs.poller import Poller
from tests.portal.flows import CARD, STANDARD_SITE

pytestmark = pytest.mark.django_db(transaction=True)

TFA = {"username": "good_email", "password": "tfa"}


def replies_at_sandbox(sandbox) -> int:
    return sum(sandbox.engine.replies_per_envelope.values())


@async_to_sync
async def make_cardholder(username: str):
    holder = await services.create_cardholder(username, "long-enough-pass-1")
    await services.add_card(holder, **CARD)
    return holder


@async_to_sync
async def start_tfa_job(holder) -> Job:
    site = await MerchantSite.objects.aget(host=STANDARD_SITE)
    (job,) = await services.start_jobs(holder, [(site, TFA)])
    poller = Poller(interval=0.05)
    for _ in range(400):
        await poller.run_tick()
        job = await Job.objects.aget(pk=job.pk)
        if job.status == "PENDING_TFA":
            break
    return job


def envelope_of(job: Job) -> str:
    return job.credential_requests.get(closed_at__isnull=True).envelope_id


def signed_in(holder, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(holder.user)
    return client


@pytest.fixture
def one_cardholder(portal_on_sandbox):
    async_to_sync(services.sync_merchant_sites)()
    alice = make_cardholder("alice")
    return alice, start_tfa_job(alice), portal_on_sandbox


@pytest.fixture
def two_cardholders(portal_on_sandbox):
    async_to_sync(services.sync_merchant_sites)()
    alice = make_cardholder("alice")
    bob = make_cardholder("bob")
    return alice, bob, start_tfa_job(alice), start_tfa_job(bob), portal_on_sandbox


def reply(client: Client, job_id: int, envelope_id: str, link: dict, **extra):
    return client.post(
        f"/api/jobs/{job_id}/reply/",
        data=json.dumps({"envelope_id": envelope_id, "account_link": link}),
        content_type="application/json",
        **extra,
    )


def test_another_cardholders_job_is_404_like_a_missing_one(two_cardholders):
    alice, _, _, bob_job, _ = two_cardholders
    client = signed_in(alice)
    foreign = client.get(f"/api/jobs/{bob_job.pk}/")
    missing = client.get("/api/jobs/999999/")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()


def test_another_cardholders_job_page_is_404(two_cardholders):
    alice, _, _, bob_job, _ = two_cardholders
    assert signed_in(alice).get(f"/jobs/{bob_job.pk}/").status_code == 404


def test_reply_to_another_cardholders_job_is_refused(two_cardholders):
    alice, _, _, bob_job, sandbox = two_cardholders
    before = replies_at_sandbox(sandbox)
    response = reply(signed_in(alice), bob_job.pk, envelope_of(bob_job), {"tfa": "1"})
    assert response.status_code == 404
    assert replies_at_sandbox(sandbox) == before


def test_own_job_with_another_cardholders_envelope_is_refused(two_cardholders):
    alice, _, alice_job, bob_job, sandbox = two_cardholders
    before = replies_at_sandbox(sandbox)
    response = reply(
        signed_in(alice), alice_job.pk, envelope_of(bob_job), {"tfa": "1234"}
    )
    assert response.status_code in {404, 409}
    assert replies_at_sandbox(sandbox) == before


def test_anonymous_api_and_pages_are_refused(one_cardholder):
    _, alice_job, _ = one_cardholder
    client = Client()
    assert client.get("/api/jobs/").status_code == 401
    assert client.get(f"/api/jobs/{alice_job.pk}/").status_code == 401
    page = client.get(f"/jobs/{alice_job.pk}/")
    assert page.status_code == 302
    assert page["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "CSRF cookie not set"),
        ({"HTTP_X_CSRFTOKEN": "x" * 32}, "CSRF cookie not set"),
    ],
    ids=["no-token", "forged-token"],
)
def test_reply_without_a_valid_csrf_token_is_refused(
    one_cardholder, caplog, headers, reason
):
    alice, alice_job, sandbox = one_cardholder
    before = replies_at_sandbox(sandbox)
    client = signed_in(alice, enforce_csrf_checks=True)
    with caplog.at_level(logging.WARNING, logger="django.security.csrf"):
        response = reply(client, alice_job.pk, envelope_of(alice_job), TFA, **headers)
    assert response.status_code == 403
    assert any(reason in r.getMessage() for r in caplog.records)
    assert replies_at_sandbox(sandbox) == before


def test_reply_with_a_token_from_a_foreign_origin_is_refused(one_cardholder, caplog):
    alice, alice_job, sandbox = one_cardholder
    before = replies_at_sandbox(sandbox)
    client = signed_in(alice, enforce_csrf_checks=True)
    token = "a" * 32
    client.cookies["csrftoken"] = token
    with caplog.at_level(logging.WARNING, logger="django.security.csrf"):
        response = reply(
            client,
            alice_job.pk,
            envelope_of(alice_job),
            {"tfa": "1234"},
            HTTP_X_CSRFTOKEN=token,
            HTTP_ORIGIN="https://evil.example",
        )
    assert response.status_code == 403
    assert any("Origin checking failed" in r.getMessage() for r in caplog.records)
    assert replies_at_sandbox(sandbox) == before


def test_reply_with_a_valid_token_reaches_cardsavr_once(one_cardholder):
    alice, alice_job, sandbox = one_cardholder
    envelope = envelope_of(alice_job)
    client = signed_in(alice, enforce_csrf_checks=True)
    token = "b" * 32
    client.cookies["csrftoken"] = token
    response = reply(
        client, alice_job.pk, envelope, {"tfa": "1234"}, HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 202
    assert sandbox.engine.replies_per_envelope[envelope] == 1


def test_replayed_envelope_is_refused_and_sent_once(one_cardholder):
    alice, alice_job, sandbox = one_cardholder
    envelope = envelope_of(alice_job)
    client = signed_in(alice)
    first = reply(client, alice_job.pk, envelope, {"tfa": "1234"})
    again = reply(client, alice_job.pk, envelope, {"tfa": "9999"})
    assert first.status_code == 202
    assert again.status_code == 409
    assert sandbox.engine.replies_per_envelope[envelope] == 1


def test_reply_after_the_job_ended_is_refused(one_cardholder):
    alice, alice_job, sandbox = one_cardholder
    envelope = envelope_of(alice_job)
    Job.objects.filter(pk=alice_job.pk).update(
        termination_type="USER_DATA_FAILURE",
        status="TIMEOUT_TFA",
        completed_on=timezone.now(),
    )
    before = replies_at_sandbox(sandbox)
    response = reply(signed_in(alice), alice_job.pk, envelope, {"tfa": "1234"})
    assert response.status_code in {409, 410}
    assert replies_at_sandbox(sandbox) == before


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"envelope_id": ',
        b"[1, 2, 3]",
        b"[" * 5000 + b"]" * 5000,
        json.dumps({"envelope_id": "x", "account_link": ["tfa", "1234"]}).encode(),
        json.dumps({"envelope_id": ["a"], "account_link": {"tfa": "1234"}}).encode(),
    ],
    ids=["text", "truncated", "array", "deep", "link-array", "envelope-array"],
)
def test_malformed_reply_gets_a_clear_400(one_cardholder, body):
    alice, alice_job, sandbox = one_cardholder
    before = replies_at_sandbox(sandbox)
    response = signed_in(alice).post(
        f"/api/jobs/{alice_job.pk}/reply/", data=body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"]
    assert replies_at_sandbox(sandbox) == before


def test_oversized_body_is_refused_without_reaching_cardsavr(one_cardholder):
    alice, alice_job, sandbox = one_cardholder
    before = replies_at_sandbox(sandbox)
    link = {"tfa": "1" * 200_000}
    response = reply(signed_in(alice), alice_job.pk, envelope_of(alice_job), link)
    assert response.status_code in {400, 413}
    assert replies_at_sandbox(sandbox) == before


def test_overlong_answer_is_refused_naming_the_field(one_cardholder):
    alice, alice_job, sandbox = one_cardholder
    before = replies_at_sandbox(sandbox)
    link = {"tfa": "1" * 10_000}
    response = reply(signed_in(alice), alice_job.pk, envelope_of(alice_job), link)
    assert response.status_code == 400
    assert response.json()["field"] == "tfa"
    assert replies_at_sandbox(sandbox) == before


@pytest.mark.parametrize(
    "value",
    ["12\x0034", "12\r\n34", "\ud800", "12\x1b[2J"],
    ids=["nul", "crlf", "lone-surrogate", "escape"],
)
def test_control_characters_and_lone_surrogates_are_refused(one_cardholder, value):
    alice, alice_job, sandbox = one_cardholder
    before = replies_at_sandbox(sandbox)
    body = json.dumps(
        {"envelope_id": envelope_of(alice_job), "account_link": {"tfa": value}}
    )
    response = signed_in(alice).post(
        f"/api/jobs/{alice_job.pk}/reply/", data=body, content_type="application/json"
    )
    assert response.status_code == 400
    assert replies_at_sandbox(sandbox) == before


def test_unicode_password_reaches_cardsavr_byte_for_byte(portal_on_sandbox):
    async_to_sync(services.sync_merchant_sites)()
    holder = make_cardholder("carol")
    site = MerchantSite.objects.get(host=STANDARD_SITE)
    password = " Ünïcode 密码 🔐\u200d e\u0301 "
    (job,) = async_to_sync(services.start_jobs)(
        holder, [(site, {"username": "nobody", "password": "x"})]
    )
    poller = Poller(interval=0.05)

    @async_to_sync
    async def until_prompt():
        for _ in range(400):
            await poller.run_tick()
            current = await Job.objects.aget(pk=job.pk)
            if current.status == "PENDING_NEWCREDS":
                return current
        raise AssertionError("no new-credentials prompt")

    prompted = until_prompt()
    response = reply(
        signed_in(holder),
        job.pk,
        envelope_of(prompted),
        {"username": "nobody", "password": password},
    )
    assert response.status_code == 202
    remote = portal_on_sandbox.engine.jobs[job.cardsavr_id]
    stored = portal_on_sandbox.engine.account_secrets[remote.account_id]
    assert stored["password"] == password


def test_form_with_too_many_fields_is_refused(one_cardholder):
    alice, alice_job, sandbox = one_cardholder
    before = replies_at_sandbox(sandbox)
    fields = {f"f{n}": "x" for n in range(300)}
    fields.update(envelope_id=envelope_of(alice_job), tfa="1234")
    response = signed_in(alice).post(f"/jobs/{alice_job.pk}/reply/", data=fields)
    assert response.status_code == 400
    assert replies_at_sandbox(sandbox) == before


def test_form_body_over_the_upload_limit_is_refused(one_cardholder):
    alice, alice_job, sandbox = one_cardholder
    before = replies_at_sandbox(sandbox)
    response = signed_in(alice).post(
        f"/jobs/{alice_job.pk}/reply/",
        data={"envelope_id": envelope_of(alice_job), "tfa": "1" * 100_000},
    )
    assert response.status_code == 400
    assert replies_at_sandbox(sandbox) == before
