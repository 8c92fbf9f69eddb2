"""The poller's fast path (jobs/tracking.py) against a fake CardSavr at the
HTTP boundary: what it reads, what it writes and what it pushes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.db import connection

from cardsavr.client import CardSavrClient
from jobs import events, selectors, tracking
from jobs.models import Cardholder, Job, JobEvent, MerchantSite
from jobs.poller import Poller
from tests.client.conftest import FakeCardSavr, Reply, job_json, make_config

pytestmark = pytest.mark.django_db(transaction=True)

JOBS_PATH = "/place_card_on_single_site_jobs"
T0 = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Upstream:
    """CardSavr's current jobs; answers lists by ids and by last update."""

    def __init__(self) -> None:
        self.jobs: dict[int, dict] = {}

    def set(self, job_id: int, updated: datetime, **fields) -> None:
        self.jobs[job_id] = job_json(job_id, last_updated_on=_iso(updated), **fields)

    def handler(self, received):
        query = dict(received.query)
        if "ids" in query:
            wanted = {int(i) for i in query["ids"].split(",") if i}
            return Reply(200, [j for i, j in self.jobs.items() if i in wanted])
        since = datetime.fromisoformat(
            query["last_updated_on_min"].replace("Z", "+00:00")
        )
        return Reply(
            200,
            [
                j
                for j in self.jobs.values()
                if datetime.fromisoformat(j["last_updated_on"].replace("Z", "+00:00"))
                >= since
            ],
        )


@pytest.fixture
async def fake():
    server = FakeCardSavr()
    upstream = Upstream()
    server.route("GET", JOBS_PATH, upstream.handler)
    client = CardSavrClient(
        make_config(max_read_retries=0), transport=server.transport()
    )
    yield server, upstream, client
    await client.close()


@sync_to_async
def _job(cardsavr_id: int) -> Job:
    user = User.objects.create(username=f"u{cardsavr_id}")
    holder = Cardholder.objects.create(user=user, cuid=f"c{cardsavr_id}")
    site, _ = MerchantSite.objects.get_or_create(
        cardsavr_id=1, defaults={"name": "Site", "host": "site.example"}
    )
    return Job.objects.create(
        cardsavr_id=cardsavr_id, cardholder=holder, merchant_site=site, status="QUEUED"
    )


async def _mirrored(fake, count: int = 1) -> tuple[Poller, list[Job]]:
    _, upstream, client = fake
    jobs = [await _job(41000 + i) for i in range(count)]
    for job in jobs:
        upstream.set(job.cardsavr_id, T0)
    poller = Poller(interval=0.05, client_factory=lambda: client)
    await poller.tick()
    return poller, [await Job.objects.aget(pk=job.pk) for job in jobs]


async def _pushes_to(job: Job):
    """Listen to the job's cardholder group; returns the receive call."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.cardholder_group(job.cardholder_id), channel)
    return lambda: layer.receive(channel)


async def test_delta_tick_asks_only_for_jobs_updated_since_the_newest_seen(fake):
    server, _, _ = fake
    poller, _ = await _mirrored(fake)
    server.received.clear()

    await poller.tick()

    [call] = server.calls("GET", JOBS_PATH)
    query = dict(call.query)
    assert "ids" not in query
    assert query["last_updated_on_min"] <= _iso(T0)


async def test_unchanged_job_costs_no_write(fake):
    poller, [job] = await _mirrored(fake)
    events_before = await JobEvent.objects.filter(job=job).acount()

    stats = await poller.tick()

    assert stats.changed == 0
    assert (await Job.objects.aget(pk=job.pk)).version == job.version
    assert await JobEvent.objects.filter(job=job).acount() == events_before


async def test_moved_job_is_written_once_with_its_event_and_pushed(fake):
    _, upstream, _ = fake
    poller, [job] = await _mirrored(fake)
    receive = await _pushes_to(job)
    upstream.set(
        job.cardsavr_id,
        T0 + timedelta(seconds=1),
        status="AUTH",
        status_message="Signing in.",
        percent_complete=20,
    )

    stats = await poller.tick()

    stored = await Job.objects.aget(pk=job.pk)
    assert (stats.changed, stored.status, stored.version) == (
        1,
        "AUTH",
        job.version + 1,
    )
    event = await JobEvent.objects.filter(job=job).alatest("id")
    assert (event.kind, event.data["from"]) == (JobEvent.Kind.STATUS, "QUEUED")
    pushed = await receive()
    assert pushed["job"]["status_message"] == "Signing in."
    assert pushed["job"]["version"] == stored.version


def _move_all(upstream, jobs: list[Job], seconds: int = 1) -> None:
    for job in jobs:
        upstream.set(
            job.cardsavr_id,
            T0 + timedelta(seconds=seconds),
            status="AUTH",
            status_message="Signing in.",
        )


async def test_tick_larger_than_one_write_chunk_writes_and_pushes_every_job(
    fake, monkeypatch
):
    monkeypatch.setattr(tracking, "WRITE_CHUNK", 2)
    _, upstream, _ = fake
    poller, jobs = await _mirrored(fake, count=5)
    receivers = [await _pushes_to(job) for job in jobs]
    _move_all(upstream, jobs)

    stats = await poller.tick()

    assert stats.changed == 5
    for job, receive in zip(jobs, receivers, strict=True):
        stored = await Job.objects.aget(pk=job.pk)
        assert (stored.status, stored.version) == ("AUTH", job.version + 1)
        assert (await receive())["job"]["version"] == stored.version


async def test_first_chunk_is_pushed_before_the_last_chunk_is_written(
    fake, monkeypatch
):
    monkeypatch.setattr(tracking, "WRITE_CHUNK", 2)
    _, upstream, _ = fake
    poller, jobs = await _mirrored(fake, count=5)
    for job in jobs:
        await _pushes_to(job)
    _move_all(upstream, jobs)
    order: list[str] = []
    write_moves = tracking.JobTracker.write_moves

    def spy_write(tracker, moves):
        order.append("write")
        return write_moves(tracker, moves)

    layer = get_channel_layer()
    group_send = layer.group_send

    async def spy_send(group, message):
        order.append("push")
        await group_send(group, message)

    monkeypatch.setattr(tracking.JobTracker, "write_moves", spy_write)
    monkeypatch.setattr(layer, "group_send", spy_send)

    await poller.tick()

    writes = [i for i, step in enumerate(order) if step == "write"]
    assert len(writes) == 3
    assert order.index("push") < writes[-1]


# SQLite's PRAGMA synchronous values.
NORMAL, FULL = 1, 2


@sync_to_async
def _synchronous() -> int:
    """The setting on the connection that ticks and socket replies share."""
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous")
        return cursor.fetchone()[0]


async def test_moves_commit_without_waiting_for_the_disk(fake, monkeypatch):
    _, upstream, _ = fake
    poller, jobs = await _mirrored(fake)
    _move_all(upstream, jobs)
    seen: list[int] = []
    insert_events = tracking.JobTracker._insert_events

    def spy_insert(tracker, cursor, written, stamp):
        cursor.execute("PRAGMA synchronous")
        seen.append(cursor.fetchone()[0])
        return insert_events(tracker, cursor, written, stamp)

    monkeypatch.setattr(tracking.JobTracker, "_insert_events", spy_insert)

    await poller.tick()

    assert seen == [NORMAL]


async def test_tick_leaves_the_connection_waiting_for_the_disk_again(fake):
    _, upstream, _ = fake
    poller, jobs = await _mirrored(fake)
    _move_all(upstream, jobs)

    await poller.tick()

    assert await _synchronous() == FULL


async def test_fast_path_push_is_the_payload_the_database_gives(fake):
    _, upstream, _ = fake
    poller, [job] = await _mirrored(fake)
    receive = await _pushes_to(job)
    upstream.set(
        job.cardsavr_id,
        T0 + timedelta(seconds=1),
        status="UPDATING",
        status_message="Saving the card.",
        percent_complete=80,
        job_timeout=240_000,
    )

    await poller.tick()

    pushed = (await receive())["job"]
    stored = await sync_to_async(selectors.job_payload_by_id)(job.pk)
    assert abs(pushed.pop("seconds_left") - stored.pop("seconds_left")) <= 1
    assert pushed == stored


async def test_row_written_elsewhere_meanwhile_is_mirrored_without_losing_that_write(
    fake,
):
    _, upstream, _ = fake
    poller, [job] = await _mirrored(fake)
    # A reply or a webhook wrote the row after the poller last saw it.
    await Job.objects.filter(pk=job.pk).aupdate(version=job.version + 5)
    upstream.set(job.cardsavr_id, T0 + timedelta(seconds=1), status="UPDATING")

    await poller.tick()

    stored = await Job.objects.aget(pk=job.pk)
    assert (stored.status, stored.version) == ("UPDATING", job.version + 6)


async def test_job_that_ended_elsewhere_is_no_longer_read(fake):
    poller, [first, _] = await _mirrored(fake, count=2)
    ended = await Job.objects.aget(pk=first.pk)
    ended.termination_type = "BILLABLE"
    await ended.asave()

    stats = await poller.tick()

    assert stats.jobs == 1
