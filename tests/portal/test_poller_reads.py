"""How many CardSavr calls a tick makes (a fake server at the HTTP boundary)."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from cardsavr.client import CardSavrClient
from jobs import tracking
from jobs.models import CredentialRequest, Job
from jobs.poller import Poller
from tests.client.conftest import FakeCardSavr, Reply, job_json, make_config

pytestmark = pytest.mark.django_db(transaction=True)

JOBS_PATH = "/place_card_on_single_site_jobs"
TFA = {
    "envelope_id": "ZW52ZWxvcGUtb25l",
    "type": "tfa",
    "message": {"status": "PENDING_TFA", "status_message": "Enter the code."},
    "account_link": [{"key_name": "tfa", "label": "Code", "secret": False}],
}


@pytest.fixture
async def fake():
    server = FakeCardSavr()
    client = CardSavrClient(
        make_config(max_read_retries=0), transport=server.transport()
    )
    yield server, client
    await client.close()


def _listing(jobs_by_id: dict[int, dict]):
    def handler(received):
        ids = dict(received.query).get("ids", "")
        wanted = [int(i) for i in ids.split(",") if i]
        return Reply(200, [jobs_by_id[i] for i in wanted if i in jobs_by_id])

    return handler


async def _jobs(make_job, cardholder, count: int) -> list[Job]:
    return [await sync_to_async(make_job)(cardholder) for _ in range(count)]


async def test_tick_lists_jobs_in_chunks_of_at_most_100(
    fake, make_job, cardholder, monkeypatch
):
    # The SQLite poller reads up to tracking.LIST_CHUNK ids per list (1,000);
    # 100 here keeps the test small.
    monkeypatch.setattr(tracking, "LIST_CHUNK", 100)
    server, client = fake
    jobs = await _jobs(make_job, cardholder, 150)
    server.route(
        "GET",
        JOBS_PATH,
        _listing({j.cardsavr_id: job_json(j.cardsavr_id) for j in jobs}),
    )

    stats = await Poller(interval=0.05, client_factory=lambda: client).tick()

    lists = server.calls("GET", JOBS_PATH)
    assert stats.fault is None
    assert sorted(len(dict(c.query)["ids"].split(",")) for c in lists) == [50, 100]
    pages = sorted(
        json.loads(c.headers["x-cardsavr-paging"])["page_length"] for c in lists
    )
    assert pages == [50, 100]
    assert stats.calls == 2


async def test_pending_job_listed_without_its_request_is_read_alone(
    fake, make_job, cardholder
):
    server, client = fake
    [job] = await _jobs(make_job, cardholder, 1)
    pending = job_json(job.cardsavr_id, status="PENDING_TFA")
    server.route("GET", JOBS_PATH, _listing({job.cardsavr_id: pending}))
    server.route(
        "GET",
        f"{JOBS_PATH}/{job.cardsavr_id}",
        lambda received: Reply(200, {**pending, "credential_requests": [TFA]}),
    )

    stats = await Poller(interval=0.05, client_factory=lambda: client).tick()

    assert stats.calls == 2
    request = await CredentialRequest.objects.aget(job_id=job.pk)
    assert request.envelope_id == TFA["envelope_id"]


async def test_unchanged_jobs_cost_one_list_call_per_tick(fake, make_job, cardholder):
    server, client = fake
    jobs = await _jobs(make_job, cardholder, 3)
    server.route(
        "GET",
        JOBS_PATH,
        _listing({j.cardsavr_id: job_json(j.cardsavr_id) for j in jobs}),
    )
    poller = Poller(interval=0.05, client_factory=lambda: client)
    await poller.tick()

    second = await poller.tick()

    assert (second.calls, second.changed) == (1, 0)
