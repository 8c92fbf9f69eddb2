"""The poller's fast path: compact per-job state, delta reads, batched writes.

A tick of the plain poller loads every active job from the database and reads
every one from CardSavr, so its cost follows the number of jobs. This tracker
keeps what the database holds for each active job in a small slotted object
and, between full sweeps, asks CardSavr only for jobs updated since the last
read (`last_updated_on_min`). A job whose CardSavr state equals its tracked
state costs a few comparisons and no query. Jobs that only moved along (status,
message, progress, deadline) are written in chunks, one UPDATE per row guarded
by the version the tracker saw and one bulk insert of their events per
transaction; each chunk's pushes leave after its commit, straight from the
event loop.
Anything rarer (a question opened or closed, a job ending, a row someone else
changed meanwhile) goes through services.apply_remote_job as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import close_old_connections, connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from cardsavr import types as remote_types
from cardsavr.errors import NotFoundError
from jobs import events, selectors, services
from jobs.models import CredentialRequest, Job, JobEvent, MerchantSite
from jobs.outcomes import derive_outcome
from jobs.serializers import job_payload

logger = logging.getLogger(__name__)

# Ids per list read and the page length of delta reads.
LIST_CHUNK = 1000
# The poller's reads are not retried inside the client: a failed tick is
# retried on the poller's own backoff, and pages hear at once that CardSavr
# is not answering instead of after the client's retries (with three of them,
# four deadlines: about 40 s at the default 10 s).
READ_RETRIES = 0
CONCURRENT_LISTS = 4
# Every this many seconds all tracked jobs are read by id and the tracked
# state is reloaded from the database, whatever the delta reads said.
SWEEP_SECONDS = 15.0
# Delta reads reach this far behind the newest update already seen, for
# updates stamped in the same instant and clocks that disagree a little.
DELTA_OVERLAP = timedelta(seconds=0.5)
MEMBERSHIP_OVERLAP = timedelta(seconds=2)
# Moves written per transaction; each chunk is pushed before the next is
# written.
WRITE_CHUNK = 100
# Pushes between two turns of the event loop, so frames go out as they are
# made instead of after the whole tick's.
PUSH_YIELD_EVERY = 25

_FIELDS = (
    "pk",
    "cardsavr_id",
    "cardholder_id",
    "merchant_site_id",
    "version",
    "status",
    "status_message",
    "percent_complete",
    "auth_percent_complete",
    "termination_type",
    "outcome",
    "deadline",
    "last_updated_on",
    "created_at",
    "started_on",
)


@dataclass(slots=True)
class Tracked:
    """What the database holds for one active job (about 500 bytes)."""

    pk: int
    cardsavr_id: int
    cardholder_id: int
    merchant_site_id: int
    version: int
    status: str
    status_message: str
    percent_complete: float
    auth_percent_complete: float
    termination_type: str
    outcome: str
    # Unix times: a float is half the size of a datetime.
    deadline: float | None
    last_updated_on: float | None
    created_at: float | None
    started: bool
    # Envelope ids of open questions; any job that ever had one is written
    # and rendered through the ORM, which knows its questions.
    envelopes: tuple[str, ...]
    had_requests: bool


@dataclass(slots=True)
class _PayloadSource:
    """The fields serializers.job_payload reads, for a job the tracker holds
    whole. Building a Job model instance instead was most of a tick's write
    time (20 µs per changed job)."""

    pk: int
    merchant_site: MerchantSite
    status: str
    status_message: str
    percent_complete: float
    auth_percent_complete: float
    termination_type: str
    outcome: str
    deadline: datetime | None
    version: int
    created_at: datetime | None
    # Tracked jobs are active: a vanished job is no longer tracked.
    vanished_at: None = None

    is_terminated = Job.is_terminated


def _seconds(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _moment(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


def _tracked(row: tuple, envelopes: tuple[str, ...], had_requests: bool) -> Tracked:
    (
        pk,
        cardsavr_id,
        cardholder_id,
        site_id,
        version,
        status,
        message,
        percent,
        auth,
        termination,
        outcome,
        deadline,
        last_updated,
        created,
        started_on,
    ) = row
    return Tracked(
        pk,
        cardsavr_id,
        cardholder_id,
        site_id,
        version,
        sys.intern(status),
        message,
        percent,
        auth,
        sys.intern(termination),
        sys.intern(outcome),
        _seconds(deadline),
        _seconds(last_updated),
        _seconds(created),
        started_on is not None,
        envelopes,
        had_requests,
    )


@dataclass(slots=True)
class _Move:
    """A simple change: the job moved along, nothing else."""

    tracked: Tracked
    remote: remote_types.Job
    updates: dict[str, Any]


class JobTracker:
    def __init__(self, *, sweep_seconds: float = SWEEP_SECONDS) -> None:
        self.sweep_seconds = sweep_seconds
        self.by_cardsavr_id: dict[int, Tracked] = {}
        self.sites: dict[int, MerchantSite] = {}
        self.next_sweep = 0.0
        self.membership_mark: datetime | None = None
        self.newest_update: datetime | None = None

    # -- what the database holds (sync) ---------------------------------

    def _rows(self, jobs) -> dict[int, Tracked]:
        rows = list(
            jobs.annotate(
                had_requests=Exists(
                    CredentialRequest.objects.filter(job_id=OuterRef("pk"))
                )
            ).values_list(*_FIELDS, "had_requests", "vanished_at")
        )
        pks = [row[0] for row in rows if row[-2]]
        envelopes: dict[int, list[str]] = {}
        if pks:
            for job_pk, envelope in CredentialRequest.objects.filter(
                job_id__in=pks, closed_at__isnull=True
            ).values_list("job_id", "envelope_id"):
                envelopes.setdefault(job_pk, []).append(envelope)
        found = {}
        for row in rows:
            *fields, had_requests, vanished_at = row
            if fields[9] or vanished_at is not None:
                found[fields[1]] = None
                continue
            found[fields[1]] = _tracked(
                tuple(fields), tuple(sorted(envelopes.get(row[0], ()))), had_requests
            )
        return found

    def refresh(self, full: bool) -> list[int]:
        """Bring the tracked set up to date; return CardSavr ids new to it."""
        if not connection.in_atomic_block:
            close_old_connections()
        started = timezone.now()
        if full or self.membership_mark is None:
            found = self._rows(selectors.active_jobs())
            fresh = [i for i in found if i not in self.by_cardsavr_id]
            self.by_cardsavr_id = {i: t for i, t in found.items() if t is not None}
            self.sites = {}
        else:
            # Rows written since the last look; most are this poller's own
            # writes, which the tracked versions already match.
            recent = Job.objects.filter(
                updated_at__gte=self.membership_mark - MEMBERSHIP_OVERLAP
            ).values_list("cardsavr_id", "version", "termination_type", "vanished_at")
            # Streamed: in a busy tick this is every job written meanwhile,
            # and a list of them all was the tick's largest allocation.
            stale = [
                cardsavr_id
                for cardsavr_id, version, termination, vanished_at in recent.iterator(
                    chunk_size=2000
                )
                if termination
                or vanished_at is not None
                or getattr(self.by_cardsavr_id.get(cardsavr_id), "version", None)
                != version
            ]
            found = (
                self._rows(Job.objects.filter(cardsavr_id__in=stale)) if stale else {}
            )
            fresh = []
            for cardsavr_id, tracked in found.items():
                if tracked is None:
                    self.by_cardsavr_id.pop(cardsavr_id, None)
                    continue
                if cardsavr_id not in self.by_cardsavr_id:
                    fresh.append(cardsavr_id)
                self.by_cardsavr_id[cardsavr_id] = tracked
        self.membership_mark = started
        return [i for i in fresh if i in self.by_cardsavr_id]

    # -- comparing (no I/O) -------------------------------------------------

    def classify(
        self, remote: remote_types.Job, read_at: datetime
    ) -> tuple[str, dict[str, Any]]:
        """ "same", "move" (with the fields to write) or "other"."""
        tracked = self.by_cardsavr_id[remote.id]
        remote_updated = _seconds(remote.last_updated_on)
        if (
            remote_updated is not None
            and tracked.last_updated_on is not None
            and remote_updated < tracked.last_updated_on
        ):
            return "same", {}
        envelopes = tuple(sorted(r.envelope_id for r in remote.credential_requests))
        if (
            envelopes != tracked.envelopes
            or remote.termination_type
            or (remote.started_on is not None and not tracked.started)
            or (remote.completed_on is not None)
        ):
            return "other", {}
        updates: dict[str, Any] = {}
        status = remote.status or tracked.status
        if status != tracked.status:
            updates["status"] = status[:64]
        if remote.status_message != tracked.status_message:
            updates["status_message"] = remote.status_message[:500]
        if remote.percent_complete != tracked.percent_complete:
            updates["percent_complete"] = remote.percent_complete
        if remote.auth_percent_complete != tracked.auth_percent_complete:
            updates["auth_percent_complete"] = remote.auth_percent_complete
        if remote.job_timeout is not None:
            deadline = read_at + timedelta(milliseconds=max(0, remote.job_timeout))
            if (
                tracked.deadline is None
                or abs(deadline.timestamp() - tracked.deadline)
                > services.DEADLINE_TOLERANCE.total_seconds()
            ):
                updates["deadline"] = deadline
        if not updates:
            return "same", {}
        outcome = derive_outcome(
            updates.get("status", tracked.status), "", bool(envelopes)
        )
        if outcome != tracked.outcome:
            updates["outcome"] = outcome
        if remote_updated is not None and remote_updated != tracked.last_updated_on:
            updates["last_updated_on"] = remote.last_updated_on
        return "move", updates

    # -- writing (sync, one transaction) -------------------------------------

    def write_moves(self, moves: list[_Move]) -> tuple[list[tuple[str, dict]], list]:
        """Write simple changes; return (pushes, moves someone else overtook)."""
        now = timezone.now()
        ops = connection.ops
        table = ops.quote_name(Job._meta.db_table)
        stamp = ops.adapt_datetimefield_value(now)
        # Rows changing the same columns go in one executemany.
        groups: dict[tuple[str, ...], list[_Move]] = {}
        for move in moves:
            groups.setdefault(tuple(move.updates), []).append(move)
        overtaken: list[_Move] = []
        with (
            _mirror_durability(),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            for columns, group in groups.items():
                names = [*columns, "version", "last_synced_at", "updated_at"]
                assignments = ", ".join(f"{ops.quote_name(c)} = %s" for c in names)
                rows = [
                    [
                        *(
                            ops.adapt_datetimefield_value(v)
                            if isinstance(v, datetime)
                            else v
                            for v in move.updates.values()
                        ),
                        move.tracked.version + 1,
                        stamp,
                        stamp,
                        move.tracked.pk,
                        move.tracked.version,
                    ]
                    for move in group
                ]
                sql = f"UPDATE {table} SET {assignments} WHERE id = %s AND version = %s"  # noqa: S608  (names from the model)
                cursor.executemany(sql, rows)
                if cursor.rowcount != len(rows):
                    overtaken.extend(self._overtaken(cursor, table, group))
            written = [m for m in moves if m not in overtaken] if overtaken else moves
            self._insert_events(cursor, written, stamp)
        for move in written:
            tracked = move.tracked
            for name, value in move.updates.items():
                if isinstance(value, datetime):
                    value = value.timestamp()
                elif isinstance(value, str) and name != "status_message":
                    value = sys.intern(value)
                setattr(tracked, name, value)
            tracked.version += 1
        return self._payloads(written, now), overtaken

    @staticmethod
    def _overtaken(cursor, table: str, group: list[_Move]) -> list[_Move]:
        """The moves whose row did not take the update: its version moved on
        (a reply, a webhook, a cancel wrote it meanwhile)."""
        expected = {m.tracked.pk: m.tracked.version + 1 for m in group}
        marks = ", ".join(["%s"] * len(expected))
        cursor.execute(
            f"SELECT id, version FROM {table} WHERE id IN ({marks})",  # noqa: S608
            list(expected),
        )
        took = {pk for pk, version in cursor.fetchall() if version == expected[pk]}
        return [m for m in group if m.tracked.pk not in took]

    def _insert_events(self, cursor, written: list[_Move], stamp) -> None:
        """One history row per written move, as services record them."""
        ops = connection.ops
        fields = ("job_id", "created_at", "kind", "status", "status_message")
        fields += ("percent_complete", "data")
        columns = ", ".join(ops.quote_name(f) for f in fields)
        marks = ", ".join(["%s"] * len(fields))
        rows = []
        for move in written:
            kind, status, message, percent, data = self._event(move)
            rows.append(
                (
                    move.tracked.pk,
                    stamp,
                    kind,
                    status,
                    message,
                    percent,
                    json.dumps(data),
                )
            )
        if rows:
            cursor.executemany(
                f"INSERT INTO {ops.quote_name(JobEvent._meta.db_table)} "  # noqa: S608
                f"({columns}) VALUES ({marks})",
                rows,
            )

    @staticmethod
    def _event(move: _Move) -> tuple[str, str, str, float, dict]:
        """(kind, status, status_message, percent, data) as services record a
        status change or progress."""
        tracked, updates = move.tracked, move.updates
        status = updates.get("status", tracked.status)
        message = updates.get("status_message", tracked.status_message)
        percent = updates.get("percent_complete", tracked.percent_complete)
        if "status" in updates:
            data = {"from": tracked.status, "version": tracked.version + 1}
            kind = JobEvent.Kind.STATUS
        else:
            auth = updates.get("auth_percent_complete", tracked.auth_percent_complete)
            data = {"auth_percent_complete": auth, "version": tracked.version + 1}
            kind = JobEvent.Kind.PROGRESS
        data["source"] = "poll"
        return kind.value, status, message, percent, data

    def _payloads(self, written: list[_Move], now: datetime) -> list[tuple[str, dict]]:
        """The pushes for written moves: built from the tracked state for jobs
        that never had a question, from the ORM for the others."""
        plain = [m.tracked for m in written if not m.tracked.had_requests]
        asked = [m.tracked.pk for m in written if m.tracked.had_requests]
        missing = {t.merchant_site_id for t in plain} - self.sites.keys()
        if missing:
            for site in MerchantSite.objects.defer("logo").filter(pk__in=missing):
                self.sites[site.pk] = site
        pushes = []
        for tracked in plain:
            job = _PayloadSource(
                pk=tracked.pk,
                merchant_site=self.sites[tracked.merchant_site_id],
                status=tracked.status,
                status_message=tracked.status_message,
                percent_complete=tracked.percent_complete,
                auth_percent_complete=tracked.auth_percent_complete,
                termination_type=tracked.termination_type,
                outcome=tracked.outcome,
                deadline=_moment(tracked.deadline),
                version=tracked.version,
                created_at=_moment(tracked.created_at),
            )
            pushes.append(
                (
                    events.cardholder_group(tracked.cardholder_id),
                    {
                        "type": events.JOB_CHANGED_EVENT,
                        "job": job_payload(job, None, now=now),
                    },
                )
            )
        if asked:
            for job in selectors.jobs_for_payload().filter(pk__in=asked):
                pushes.append(
                    (
                        events.cardholder_group(job.cardholder_id),
                        {
                            "type": events.JOB_CHANGED_EVENT,
                            "job": selectors.payload_for(job, now=now),
                        },
                    )
                )
        return pushes

    def others(self) -> list[Job]:
        """ORM jobs for the slow path, with their open requests."""
        return []


@contextlib.contextmanager
def _mirror_durability() -> Iterator[None]:
    """Commit without waiting for the disk, on SQLite.

    These rows only mirror CardSavr, which stays the source of truth: a power
    loss could take the last of them back, and the poller's next sweep reads
    them again. Waiting for the disk (synchronous=FULL, one fsync per commit,
    up to 3 ms measured here) held each chunk's pushes back. In WAL mode the
    next commit that does wait, a reply's claim among them, makes these
    durable too, so claims keep their guarantee.
    """
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous")
        (previous,) = cursor.fetchone()
        cursor.execute("PRAGMA synchronous = NORMAL")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            # PRAGMA takes no parameters; `previous` is SQLite's own integer.
            cursor.execute(f"PRAGMA synchronous = {int(previous)}")


async def read_remote(
    tracker: JobTracker, client, stats, *, sweep: bool, fresh: list[int]
) -> tuple[list[tuple[remote_types.Job, datetime]], list[int]]:
    """CardSavr's view of what may have changed; (reads, ids no list showed)."""
    limiter = asyncio.Semaphore(CONCURRENT_LISTS)
    reads: list[tuple[remote_types.Job, datetime]] = []

    async def by_ids(ids: list[int]) -> set[int]:
        async with limiter:
            stats.calls += 1
            page = await client.list_jobs(
                ids=ids,
                hydrate=("credential_requests",),
                page_length=len(ids),
                retries=READ_RETRIES,
            )
        read_at = timezone.now()
        reads.extend((remote, read_at) for remote in page.items)
        return {remote.id for remote in page.items}

    async def since(moment: datetime) -> None:
        page_number = 1
        while True:
            stats.calls += 1
            page = await client.list_jobs(
                last_updated_on_min=moment,
                hydrate=("credential_requests",),
                page=page_number,
                page_length=LIST_CHUNK,
                retries=READ_RETRIES,
            )
            read_at = timezone.now()
            reads.extend(
                (remote, read_at)
                for remote in page.items
                if remote.id in tracker.by_cardsavr_id
            )
            if len(page.items) < LIST_CHUNK:
                return
            page_number += 1

    wanted = list(tracker.by_cardsavr_id) if sweep else list(fresh)
    chunks = [wanted[i : i + LIST_CHUNK] for i in range(0, len(wanted), LIST_CHUNK)]
    jobs = [by_ids(chunk) for chunk in chunks]
    if not sweep and tracker.newest_update is not None:
        jobs.append(since(tracker.newest_update - DELTA_OVERLAP))
    outcomes = await asyncio.gather(*jobs)
    shown = set().union(*[o for o in outcomes if isinstance(o, set)])
    unseen = [i for i in wanted if i not in shown]
    for remote, _ in reads:
        if remote.last_updated_on is not None and (
            tracker.newest_update is None
            or remote.last_updated_on > tracker.newest_update
        ):
            tracker.newest_update = remote.last_updated_on
    return reads, unseen


async def tracked_tick(
    tracker: JobTracker, client, stats, apply_batch, is_incomplete
) -> list[int]:
    """One tick on the fast path; fills `stats` as Poller.tick does and
    returns the push approvals to acknowledge."""
    # A sweep until one read succeeded: there is no newest update to go from.
    sweep = time.monotonic() >= tracker.next_sweep or tracker.newest_update is None
    fresh = await sync_to_async(tracker.refresh)(sweep)
    stats.jobs = len(tracker.by_cardsavr_id)
    if not tracker.by_cardsavr_id:
        return []
    reads, unseen = await read_remote(tracker, client, stats, sweep=sweep, fresh=fresh)
    if sweep:
        tracker.next_sweep = time.monotonic() + tracker.sweep_seconds

    # Jobs a list left incomplete or left out are read alone, as before.
    singles: list[tuple[remote_types.Job, datetime]] = []
    vanished_ids: list[int] = []
    for cardsavr_id in unseen + [r.id for r, _ in reads if is_incomplete(r)]:
        stats.calls += 1
        try:
            remote = await client.get_job(cardsavr_id, retries=READ_RETRIES)
            singles.append((remote, timezone.now()))
        except NotFoundError:
            vanished_ids.append(cardsavr_id)
    single_ids = {r.id for r, _ in singles}
    reads = [(r, t) for r, t in reads if r.id not in single_ids] + singles

    moves: list[_Move] = []
    slow: dict[int, tuple[remote_types.Job, datetime]] = {}
    for remote, read_at in reads:
        kind, updates = tracker.classify(remote, read_at)
        if kind == "move":
            moves.append(_Move(tracker.by_cardsavr_id[remote.id], remote, updates))
        elif kind == "other":
            slow[remote.id] = (remote, read_at)
    # Jobs with open questions go the slow way every tick (stale claims,
    # push approvals to acknowledge), whether or not CardSavr changed them.
    waiting = {i for i, t in tracker.by_cardsavr_id.items() if t.envelopes}

    layer = get_channel_layer()
    pushed = await _write_and_push_moves(tracker, moves, slow, layer)
    to_ack, changed = await sync_to_async(_write_others)(
        tracker, slow, waiting, vanished_ids, apply_batch
    )
    stats.changed = pushed + changed
    stats.vanished = len(vanished_ids)
    return to_ack


async def _write_and_push_moves(
    tracker: JobTracker, moves: list[_Move], slow: dict, layer
) -> int:
    """Write moves a chunk at a time, each in its own transaction, and push
    each chunk once it has committed: the first jobs of a busy tick reach
    their pages without waiting for the last ones to be written. Moves someone
    else overtook are added to `slow`; returns how many were pushed."""
    # One chunk at a time: writing the next chunk in the database thread while
    # this one is pushed was no faster here, as both need the GIL.
    write = sync_to_async(tracker.write_moves)
    pushed = 0
    for start in range(0, len(moves), WRITE_CHUNK):
        pushes, overtaken = await write(moves[start : start + WRITE_CHUNK])
        for move in overtaken:
            slow[move.remote.id] = (move.remote, timezone.now())
        pushed += len(pushes)
        if layer is not None:
            await _push(layer, pushes)
    return pushed


async def _push(layer, pushes: list[tuple[str, dict]]) -> None:
    for sent, (group, message) in enumerate(pushes, 1):
        try:
            await layer.group_send(group, message)
        except Exception:
            # A lost push costs a browser a late update (versions and
            # snapshots repair it); the write has committed.
            logger.warning("Push to %s failed", group, exc_info=True)
        if sent % PUSH_YIELD_EVERY == 0:
            # Handing frames to a socket only queues them; the server writes
            # them when the event loop next looks at its sockets.
            await asyncio.sleep(0)


def _write_others(tracker, slow, waiting, vanished_ids, apply_batch):
    """The slow path: jobs whose questions, ending or rows need the ORM.
    Returns (push approvals to acknowledge, jobs changed)."""
    slow_ids = set(slow) | waiting | set(vanished_ids)
    if not slow_ids:
        return [], 0
    jobs = {
        job.cardsavr_id: job
        for job in selectors.jobs_with_state().filter(cardsavr_id__in=slow_ids)
    }
    reads = [
        (jobs[i], remote, read_at) for i, (remote, read_at) in slow.items() if i in jobs
    ]
    # Waiting jobs CardSavr did not change are passed with no read, so only
    # their questions are looked at.
    quiet = [jobs[i] for i in waiting if i in jobs and i not in slow]
    vanished = [jobs[i] for i in vanished_ids if i in jobs]
    changed, to_ack = apply_batch(reads, vanished, quiet)
    found = tracker._rows(Job.objects.filter(pk__in=[j.pk for j in jobs.values()]))
    for cardsavr_id, tracked in found.items():
        if tracked is None:
            tracker.by_cardsavr_id.pop(cardsavr_id, None)
        else:
            tracker.by_cardsavr_id[cardsavr_id] = tracked
    return to_ack, changed
