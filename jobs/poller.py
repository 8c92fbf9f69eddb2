"""Reads every active job from CardSavr and mirrors what changed.

Each tick reads the active jobs in lists of up to 100 ids (one call each) and
reads a job on its own only when the list cannot tell its whole state. All
state lives in the database, so a restarted poller picks up where the last one
stopped. CardSavr faults slow the poller down; nothing stops it but a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from cardsavr import types as remote_types
from cardsavr.client import CardSavrClient
from cardsavr.errors import CardSavrError, NotFoundError, RateLimitedError
from jobs import services
from jobs.cardsavr_client import get_client
from jobs.models import CredentialRequest, Job, ReplyState
from jobs.selectors import (
    PUSH_APPROVAL_TYPE,
    active_jobs,
    jobs_with_state,
    upstream_state,
)
from jobs.tracking import READ_RETRIES, JobTracker, tracked_tick

logger = logging.getLogger(__name__)

LIST_CHUNK = 100
# Lists read at the same time; bounds the load one tick puts on CardSavr.
CONCURRENT_LISTS = 4
BACKOFF_CAP = 60.0
LEASE_INTERVALS = 3
DEFAULT_BATCH_LIMIT = 10_000


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


def claim_active_jobs(
    owner: str, limit: int, lease_seconds: float | None = None
) -> list[Job]:
    """The active jobs this poller reads in this tick, with their open requests.

    On PostgreSQL each poller leases the jobs it reads (lease_owner,
    lease_expires_at), skipping rows another poller holds, so several pollers
    share the work and a dead poller's jobs are taken over when its lease runs
    out. SQLite has one poller per database, which simply reads them all.
    """
    if lease_seconds is None:
        lease_seconds = LEASE_INTERVALS * settings.POLL_INTERVAL
    jobs = jobs_with_state().order_by("pk")
    if connection.vendor != "postgresql":
        return list(jobs.filter(termination_type="", vanished_at__isnull=True)[:limit])
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            active_jobs()
            .select_for_update(skip_locked=True)
            .filter(
                Q(lease_expires_at__isnull=True)
                | Q(lease_expires_at__lt=now)
                | Q(lease_owner=owner)
            )
            .order_by("lease_expires_at", "pk")
            .values_list("pk", flat=True)[:limit]
        )
        Job.objects.filter(pk__in=ids).update(
            lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds)
        )
    return list(jobs.filter(pk__in=ids))


def _tick_jobs(owner: str, limit: int, lease_seconds: float) -> list[Job]:
    # A long-lived process must drop connections the database closed, as a
    # request cycle would; inside a test's transaction there is nothing to do.
    if not connection.in_atomic_block:
        close_old_connections()
    return claim_active_jobs(owner, limit, lease_seconds)


@dataclass
class TickStats:
    jobs: int = 0
    changed: int = 0
    calls: int = 0
    vanished: int = 0
    acknowledged: int = 0
    ms: float = 0.0
    fault: BaseException | None = None


def _is_incomplete(remote: remote_types.Job) -> bool:
    """PENDING without its request: the list left it out; read the job alone."""
    return (
        not remote.termination_type
        and not remote.credential_requests
        and remote.status.upper().startswith("PENDING")
    )


def _stale_claim_cutoff() -> datetime:
    # A reply still "sending" long after any call could have ended was cut off
    # by a crash between claim and answer: whether it went out is unknown.
    return timezone.now() - timedelta(seconds=2 * settings.CARDSAVR_TIMEOUT + 30)


def _apply_batch(
    reads: list[tuple[Job, remote_types.Job, datetime]],
    vanished: list[Job],
    quiet: Sequence[Job] = (),
) -> tuple[int, list[int]]:
    """Mirror one tick, a transaction per job; return (changed, requests to
    ack).

    `quiet` jobs were not read (CardSavr did not change them); only their
    open questions are looked at.
    """
    cutoff = _stale_claim_cutoff()
    looked_at = [job for job, _, _ in reads] + list(quiet)
    stale = [
        request.pk
        for job in looked_at
        for request in job.open_requests
        if request.reply_state == ReplyState.SENDING
        and request.answered_at is not None
        and request.answered_at < cutoff
    ]
    if stale:
        CredentialRequest.objects.filter(
            pk__in=stale, reply_state=ReplyState.SENDING
        ).update(
            reply_state=ReplyState.UNCERTAIN,
            reply_error=services.UNCERTAIN_REPLY_MESSAGE[:300],
        )
    # Each job is written and pushed in a transaction of its own: a reply or
    # a cancel waits for that one job's write, not for the whole tick, and the
    # first jobs reach their pages while the others are still being written.
    # Each write re-reads its row under lock, so a job another poller wrote
    # meanwhile is planned from what that poller left.
    changed = 0
    for job, remote, read_at in reads:
        try:
            if services.apply_remote_job(job, remote, source="poll", read_at=read_at):
                changed += 1
        except Job.DoesNotExist:
            # Deleted since it was read (by an operator): nothing to mirror.
            logger.info("Job %s was deleted before it could be mirrored", job.pk)
        except DatabaseError:
            # Its transaction rolled back; the others are written.
            logger.exception("Mirroring job %s failed", job.pk)
    for job in vanished:
        services.mark_job_vanished(job, source="poll")
        changed += 1
    to_ack = [
        request.pk
        for job in looked_at
        if not job.is_terminated
        for request in job.open_requests
        if request.type == PUSH_APPROVAL_TYPE
        and request.answered_at is None
        and request.reply_state == ReplyState.NONE
    ]
    return changed, to_ack


class Poller:
    def __init__(
        self,
        *,
        interval: float | None = None,
        owner: str | None = None,
        batch_limit: int = DEFAULT_BATCH_LIMIT,
        backoff_cap: float = BACKOFF_CAP,
        client_factory: Callable[[], CardSavrClient] = get_client,
    ) -> None:
        self.interval = interval if interval is not None else settings.POLL_INTERVAL
        self.owner = owner or default_owner()
        self.batch_limit = batch_limit
        self.backoff_cap = max(backoff_cap, self.interval)
        self.client_factory = client_factory
        self.failures = 0
        self.ticks = 0
        self.last_tick_seconds = 0.0
        # One poller per SQLite database keeps its jobs' state in memory and
        # reads only what CardSavr changed (jobs/tracking.py); pollers sharing
        # PostgreSQL take leases and read every job they hold each tick.
        self.tracker = JobTracker() if connection.vendor != "postgresql" else None

    @property
    def lease_seconds(self) -> float:
        # A lease must outlast a slow tick, or another poller would read the
        # same jobs while this one still writes them.
        return LEASE_INTERVALS * max(self.interval, self.last_tick_seconds)

    async def tick(self) -> TickStats:
        """Read and mirror every active job once; faults end up in `fault`."""
        if self.tracker is not None:
            return await self._tracked_tick()
        started = time.monotonic()
        stats = TickStats()
        jobs = await sync_to_async(_tick_jobs)(
            self.owner, self.batch_limit, self.lease_seconds
        )
        stats.jobs = len(jobs)
        client = self.client_factory()
        if not jobs:
            # Nothing to read, but a banner saying CardSavr is down must not
            # outlive the outage: one cheap call tells whether it is back.
            state = await sync_to_async(upstream_state)()
            if not state["reachable"]:
                stats.calls += 1
                try:
                    await client.list_merchant_sites(
                        page_length=1, retries=READ_RETRIES
                    )
                except CardSavrError as exc:
                    stats.fault = exc
            stats.ms = (time.monotonic() - started) * 1000
            return stats
        reads: list[tuple[Job, remote_types.Job, datetime]] = []
        vanished: list[Job] = []
        limiter = asyncio.Semaphore(CONCURRENT_LISTS)

        async def read_chunk(chunk: list[Job]) -> None:
            async with limiter:
                stats.calls += 1
                page = await client.list_jobs(
                    ids=[job.cardsavr_id for job in chunk],
                    hydrate=("credential_requests",),
                    page_length=len(chunk),
                    retries=READ_RETRIES,
                )
                read_at = timezone.now()
                found = {remote.id: remote for remote in page.items}
                for job in chunk:
                    remote = found.get(job.cardsavr_id)
                    if remote is not None and not _is_incomplete(remote):
                        reads.append((job, remote, read_at))
                        continue
                    stats.calls += 1
                    try:
                        alone = await client.get_job(
                            job.cardsavr_id, retries=READ_RETRIES
                        )
                    except NotFoundError:
                        vanished.append(job)
                        continue
                    reads.append((job, alone, timezone.now()))

        chunks = [jobs[i : i + LIST_CHUNK] for i in range(0, len(jobs), LIST_CHUNK)]
        outcomes = await asyncio.gather(
            *(read_chunk(chunk) for chunk in chunks), return_exceptions=True
        )
        faults = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        # What was read is mirrored even when other chunks failed.
        stats.changed, to_ack = await sync_to_async(_apply_batch)(reads, vanished)
        stats.vanished = len(vanished)
        stats.calls += len(to_ack)
        acked = await asyncio.gather(
            *(self._acknowledge(request_pk, limiter) for request_pk in to_ack)
        )
        stats.acknowledged = sum(acked)
        if faults:
            stats.fault = next(
                (f for f in faults if not isinstance(f, CardSavrError)), faults[0]
            )
        stats.ms = (time.monotonic() - started) * 1000
        return stats

    async def _tracked_tick(self) -> TickStats:
        started = time.monotonic()
        stats = TickStats()
        client = self.client_factory()
        to_ack = await tracked_tick(
            self.tracker, client, stats, _apply_batch, _is_incomplete
        )
        if not stats.jobs:
            # Nothing to read, but a banner saying CardSavr is down must not
            # outlive the outage: one cheap call tells whether it is back.
            state = await sync_to_async(upstream_state)()
            if not state["reachable"]:
                stats.calls += 1
                try:
                    await client.list_merchant_sites(
                        page_length=1, retries=READ_RETRIES
                    )
                except CardSavrError as exc:
                    stats.fault = exc
        limiter = asyncio.Semaphore(CONCURRENT_LISTS)
        stats.calls += len(to_ack)
        acked = await asyncio.gather(
            *(self._acknowledge(request_pk, limiter) for request_pk in to_ack)
        )
        stats.acknowledged = sum(acked)
        stats.ms = (time.monotonic() - started) * 1000
        return stats

    @staticmethod
    async def _acknowledge(request_pk: int, limiter: asyncio.Semaphore) -> bool:
        async with limiter:
            return await services.acknowledge_push_approval(request_pk)

    def next_delay(self, fault: BaseException | None) -> float:
        if fault is None:
            return self.interval
        ceiling = min(self.backoff_cap, self.interval * 2**self.failures)
        # Equal jitter: spread pollers apart, never faster than the interval.
        delay = max(self.interval, random.uniform(ceiling / 2, ceiling))
        if isinstance(fault, RateLimitedError) and fault.retry_after:
            delay = max(delay, min(fault.retry_after, self.backoff_cap))
        return delay

    async def run_tick(self) -> float:
        """One tick with its bookkeeping; return the seconds to wait next."""
        self.ticks += 1
        started = time.monotonic()
        try:
            stats = await self.tick()
        except (CardSavrError, DatabaseError) as exc:
            stats = TickStats(fault=exc)
        except Exception as exc:
            logger.exception("Poll tick failed")
            stats = TickStats(fault=exc)
        self.last_tick_seconds = time.monotonic() - started
        if stats.fault is None:
            if self.failures:
                logger.info("CardSavr answers again after %s failures", self.failures)
            self.failures = 0
            if stats.calls:
                await sync_to_async(services.set_upstream_state)(True, "", None)
            logger.debug(
                "Poll tick: %s jobs read, %s changed, %s calls, %.0f ms",
                stats.jobs,
                stats.changed,
                stats.calls,
                stats.ms,
            )
            return self.next_delay(None)
        self.failures += 1
        delay = self.next_delay(stats.fault)
        logger.warning(
            "Poll tick failed (%s), failure %s; retrying in %.1f s",
            type(stats.fault).__name__,
            self.failures,
            delay,
        )
        if isinstance(stats.fault, CardSavrError):
            await sync_to_async(services.set_upstream_state)(
                False,
                f"CardSavr is not answering; retrying in {max(1, round(delay))} s",
                delay,
            )
        return delay

    async def run(self, stop: asyncio.Event, *, once: bool = False) -> None:
        """Tick until `stop` is set; a tick under way always finishes."""
        logger.info("Poller %s started, every %.1f s", self.owner, self.interval)
        try:
            while not stop.is_set():
                started = time.monotonic()
                delay = await self.run_tick()
                if once:
                    break
                if not self.failures:
                    # Ticks start one interval apart (a tick's own time is
                    # not added to the wait), so a change waits T/2 on average.
                    delay = max(0.0, delay - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
        finally:
            logger.info("Poller %s stopped after %s ticks", self.owner, self.ticks)
