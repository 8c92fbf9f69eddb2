"""session_complete webhooks: signed like CardSavr's, retried until accepted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cardsavr import crypto

GOOD = {"username": "good_email", "password": "no_tfa"}


class Receiver:
    """A local webhook endpoint that fails the first ``failures`` deliveries."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.failures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                receiver.calls.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers.items()),
                        "body": self.rfile.read(length),
                    }
                )
                status = 500 if len(receiver.calls) <= receiver.failures else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = (
            f"http://127.0.0.1:{self.server.server_address[1]}/hooks/cardsavr?x=1"
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.calls


def _attempts(sandbox, job_id: int, count: int, timeout: float = 5.0) -> dict:
    """The job's delivery record once the sandbox has seen ``count`` answers.

    The receiver records a call before the sandbox reads the answer, so tests
    wait here before moving the clock on to the next retry.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = sandbox.engine.stats()["webhooks"]
        record = next((w for w in records if w["job_id"] == job_id), None)
        if record and len(record["attempts"]) >= count:
            return record
        if time.monotonic() > deadline:
            return record or {}
        time.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    hook.thread.start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


async def _finished_job(client, clock, receiver: Receiver) -> dict:
    holder = await client.new_cardholder(
        webhook_url=receiver.url, cuid=f"hook-{time.monotonic_ns()}"
    )
    job = await client.start_job(GOOD, cardholder=holder)
    clock.advance(60)
    return await client.job(job["id"])


async def test_webhook_payload_matches_session_complete(client, clock, receiver):
    job = await _finished_job(client, clock, receiver)

    call = receiver.wait_for(1)[0]
    payload = json.loads(call["body"])
    entry = payload["jobs"][0]
    assert call["path"] == "/hooks/cardsavr?x=1"
    assert entry["job_id"] == job["id"]
    assert entry["job_status"] == "SUCCESSFUL"
    assert entry["termination_type"] == "BILLABLE"
    assert entry["merchant_site"]["id"] == 1
    assert entry["completed_on"] == job["completed_on"]
    assert payload["cuid"] == payload["username"]
    assert {"financial_institution", "trace", "custom_data"} <= set(payload)


async def test_webhook_signature_verifies_with_the_app_key(
    client, clock, receiver, manual_sandbox
):
    await _finished_job(client, clock, receiver)

    call = receiver.wait_for(1)[0]
    headers = {k.lower(): v for k, v in call["headers"].items()}
    expected = crypto.sign_webhook(
        manual_sandbox.config.app_key,
        receiver.url,
        headers["x-cardsavr-authorization"],
        headers["x-cardsavr-nonce"],
        call["body"],
    )
    assert headers["x-cardsavr-authorization"] == crypto.authorization_value(
        manual_sandbox.config.app_name
    )
    assert headers["x-cardsavr-signature"] == expected


async def test_failed_webhook_is_retried_at_10_then_20_seconds(
    client, clock, receiver, manual_sandbox
):
    receiver.failures = 2
    job = await _finished_job(client, clock, receiver)
    _attempts(manual_sandbox, job["id"], 1)
    clock.advance(9)
    time.sleep(0.3)  # the ticker runs every 50 ms; nothing is due yet
    early = len(receiver.calls)
    clock.advance(1)
    _attempts(manual_sandbox, job["id"], 2)
    clock.advance(20)
    record = _attempts(manual_sandbox, job["id"], 3)

    assert early == 1
    assert len(receiver.calls) == 3
    assert receiver.calls[0]["body"] == receiver.calls[2]["body"]
    assert [a["status"] for a in record["attempts"]] == [500, 500, 200]
    assert record["delivered"] is True


async def test_webhook_gives_up_after_the_last_retry(
    client, clock, receiver, manual_sandbox
):
    receiver.failures = 100
    job = await _finished_job(client, clock, receiver)
    for expected, wait in ((1, 10), (2, 20), (3, 40), (4, 80)):
        _attempts(manual_sandbox, job["id"], expected)
        clock.advance(wait)
    time.sleep(0.3)
    record = _attempts(manual_sandbox, job["id"], 4)

    assert len(receiver.calls) == 4
    assert len(record["attempts"]) == 4
    assert record["delivered"] is False


async def test_cancelled_job_is_reported_too(client, clock, receiver):
    holder = await client.new_cardholder(webhook_url=receiver.url)
    job = await client.start_job(GOOD, cardholder=holder)
    await client.call(
        "PUT",
        f"/place_card_on_single_site_jobs/{job['id']}",
        {"status": "CANCEL_REQUESTED"},
    )
    clock.advance(5)
    await client.job(job["id"])

    payload = json.loads(receiver.wait_for(1)[0]["body"])
    assert payload["jobs"][0]["termination_type"] == "NEVER_STARTED"
