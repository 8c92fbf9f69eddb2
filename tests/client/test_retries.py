"""Retries for reads, none for credential replies and job creation, deadlines."""

import asyncio
import datetime
import email.utils

import httpx
import pytest

from cardsavr.client import CardSavrClient
from cardsavr.errors import (
    RateLimitedError,
    ServerError,
    TransportError,
    UpstreamTimeoutError,
)
from cardsavr.types import JobSpec
from tests.client.conftest import Reply, job_json, make_config

JOB_PATH = "/place_card_on_single_site_jobs/11"


def failing_then(status: int, times: int, success: Reply, headers=None):
    """A route answering `status` `times` times, then `success`."""
    state = {"left": times}

    def handler(received):
        if state["left"] > 0:
            state["left"] -= 1
            return Reply(status, {"_errors": [{"name": "Busy"}]}, headers or {})
        return success

    return handler


async def test_429_retry_after_is_honoured(server, client, sleeps):
    server.route(
        "GET",
        JOB_PATH,
        failing_then(429, 1, Reply(200, job_json(11)), {"Retry-After": "2"}),
    )

    job = await client.get_job(11)

    assert job.id == 11
    assert sleeps == [2.0]


async def test_retry_after_is_capped(server, sleeps):
    server.route(
        "GET",
        JOB_PATH,
        failing_then(429, 1, Reply(200, job_json(11)), {"Retry-After": "3600"}),
    )
    client = CardSavrClient(
        make_config(retry_after_cap=5.0), transport=server.transport()
    )

    await client.get_job(11)
    await client.close()

    assert sleeps == [5.0]


async def test_429_on_read_gives_up_with_retry_after(server, client, sleeps):
    server.route(
        "GET",
        JOB_PATH,
        failing_then(429, 10, Reply(200, job_json(11)), {"Retry-After": "1.5"}),
    )

    with pytest.raises(RateLimitedError) as caught:
        await client.get_job(11)

    assert caught.value.retry_after == 1.5
    assert len(server.calls("GET", JOB_PATH)) == 4


async def test_5xx_on_read_is_retried_with_capped_jittered_backoff(
    server, client, sleeps
):
    server.route("GET", JOB_PATH, failing_then(503, 3, Reply(200, job_json(11))))

    job = await client.get_job(11)

    assert job.id == 11
    assert len(server.calls("GET", JOB_PATH)) == 4
    # Full jitter: each pause lies between 0 and base * 2**attempt.
    assert len(sleeps) == 3
    for attempt, pause in enumerate(sleeps):
        assert 0 <= pause <= 0.5 * 2**attempt


async def test_read_gives_up_after_max_read_retries(server, client, sleeps):
    server.route("GET", JOB_PATH, failing_then(500, 100, Reply(200, job_json(11))))

    with pytest.raises(ServerError) as caught:
        await client.get_job(11)

    assert caught.value.status == 500
    assert len(server.calls("GET", JOB_PATH)) == 4


async def test_read_with_no_retries_fails_at_the_first_error(server, client, sleeps):
    server.route("GET", JOB_PATH, failing_then(503, 1, Reply(200, job_json(11))))

    with pytest.raises(ServerError):
        await client.get_job(11, retries=0)

    assert len(server.calls("GET", JOB_PATH)) == 1
    assert sleeps == []


async def test_list_read_takes_its_own_retry_count(server, client, sleeps):
    path = "/place_card_on_single_site_jobs"
    server.route("GET", path, failing_then(500, 100, Reply(200, [])))

    with pytest.raises(ServerError):
        await client.list_jobs(ids=[11], retries=1)

    assert len(server.calls("GET", path)) == 2
    assert len(sleeps) == 1


async def test_transport_error_on_read_is_retried(server, client, sleeps):
    server.route("GET", JOB_PATH, lambda received: Reply(200, job_json(11)))
    state = {"failures": 2}

    def drop(request):
        if request.url.path == JOB_PATH and state["failures"]:
            state["failures"] -= 1
            raise httpx.ConnectError("connection reset")
        return None

    server.fault = drop

    job = await client.get_job(11)

    assert job.id == 11
    assert len(sleeps) == 2


async def test_5xx_on_credential_reply_is_not_retried(server, client, sleeps):
    server.route("PUT", JOB_PATH, failing_then(503, 1, Reply(200, job_json(11))))

    with pytest.raises(ServerError):
        await client.answer_credential_request(11, "env", {"tfa": "1234"})

    assert len(server.calls("PUT", JOB_PATH)) == 1
    assert sleeps == []


async def test_timeout_on_credential_reply_is_not_retried(server, sleeps):
    async def slow(received):
        await asyncio.sleep(30)
        return Reply(200, job_json(11))

    server.route("PUT", JOB_PATH, slow)
    client = CardSavrClient(make_config(timeout=0.2), transport=server.transport())

    with pytest.raises(UpstreamTimeoutError):
        await asyncio.wait_for(
            client.answer_credential_request(11, "env", {"tfa": "1234"}), 10
        )
    await client.close()

    assert len(server.calls("PUT", JOB_PATH)) == 1
    assert sleeps == []


async def test_5xx_on_job_creation_is_not_retried(server, client, sleeps):
    path = "/place_card_on_single_site_jobs"
    server.route("POST", path, failing_then(500, 1, Reply(201, [job_json(11)])))

    with pytest.raises(ServerError):
        await client.create_job(JobSpec(5, 6, 1))

    assert len(server.calls("POST", path)) == 1
    assert sleeps == []


async def test_transport_error_on_job_creation_is_not_retried(server, client, sleeps):
    path = "/place_card_on_single_site_jobs"
    server.route("POST", path, lambda received: Reply(201, [job_json(11)]))
    attempts = []

    def reset(request):
        if request.url.path == path:
            attempts.append(request)
            raise httpx.ReadError("connection reset")
        return None

    server.fault = reset

    with pytest.raises(TransportError):
        await client.create_job(JobSpec(5, 6, 1))

    assert len(attempts) == 1
    assert sleeps == []


async def test_cancel_is_retried_on_5xx(server, client, sleeps):
    server.route(
        "PUT",
        JOB_PATH,
        failing_then(502, 1, Reply(200, job_json(11, status="CANCEL_REQUESTED"))),
    )

    job = await client.cancel_job(11)

    assert job.status == "CANCEL_REQUESTED"
    assert len(server.calls("PUT", JOB_PATH)) == 2


async def test_deadline_stops_a_dripping_response(server, sleeps):
    async def drip():
        yield b'{"encrypted_body":"'
        await asyncio.sleep(30)
        yield b'"}'

    server.route("GET", JOB_PATH, lambda received: httpx.Response(200, content=drip()))
    client = CardSavrClient(
        make_config(timeout=0.2, max_read_retries=0), transport=server.transport()
    )

    with pytest.raises(UpstreamTimeoutError):
        # The outer guard only turns a missing deadline into a failure, not a hang.
        await asyncio.wait_for(client.get_job(11), 10)
    await client.close()


async def test_deadline_applies_to_each_read_attempt(server, sleeps):
    async def drip():
        await asyncio.sleep(30)
        yield b"{}"

    server.route("GET", JOB_PATH, lambda received: httpx.Response(200, content=drip()))
    client = CardSavrClient(
        make_config(timeout=0.1, max_read_retries=2), transport=server.transport()
    )

    with pytest.raises(UpstreamTimeoutError):
        await asyncio.wait_for(client.get_job(11), 10)
    await client.close()

    assert len(server.calls("GET", JOB_PATH)) == 3
    assert len(sleeps) == 2


async def test_retry_after_as_http_date_is_honoured(server, client, sleeps):
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=20)
    server.route(
        "GET",
        JOB_PATH,
        failing_then(
            429,
            1,
            Reply(200, job_json(11)),
            {"Retry-After": email.utils.format_datetime(when, usegmt=True)},
        ),
    )

    await client.get_job(11)

    assert len(sleeps) == 1
    assert 10 < sleeps[0] <= 20
