"""The one place the harness reaches into the product's poller.

The benchmarks drive the poller a tick at a time (to count CPU and CardSavr
calls per tick) and also let it run on its own schedule inside daphne.
"""

from __future__ import annotations

import asyncio
import time

from jobs.poller import Poller


def make_poller(interval: float = 1.0) -> Poller:
    return Poller(interval=interval, batch_limit=1_000_000)


async def tick(poller: Poller) -> dict:
    stats = await poller.tick()
    if stats.fault is not None:
        raise RuntimeError(f"poll tick failed: {stats.fault!r}")
    return {"jobs": stats.jobs, "changed": stats.changed, "calls": stats.calls}


def _step(job) -> int:
    """The driver's sequence number in a job's status message (0 if none)."""
    message = job.status_message
    return int(message.rsplit(" ", 1)[1]) if message.startswith("bench step ") else 0


def watch_list_reads(arrivals: list) -> None:
    """Record (time_ns, [(CardSavr job id, step)]) whenever a job list read
    returns."""
    from cardsavr.client import CardSavrClient

    if getattr(CardSavrClient.list_jobs, "_bench_watched", False):
        return
    original = CardSavrClient.list_jobs

    async def list_jobs(self, *args, **kwargs):
        page = await original(self, *args, **kwargs)
        arrivals.append((time.time_ns(), [(job.id, _step(job)) for job in page.items]))
        return page

    list_jobs._bench_watched = True
    CardSavrClient.list_jobs = list_jobs


def watch_job_reads(arrivals: list) -> None:
    """The same for single job reads."""
    from cardsavr.client import CardSavrClient

    if getattr(CardSavrClient.get_job, "_bench_watched", False):
        return
    original = CardSavrClient.get_job

    async def get_job(self, *args, **kwargs):
        job = await original(self, *args, **kwargs)
        arrivals.append((time.time_ns(), [(job.id, _step(job))]))
        return job

    get_job._bench_watched = True
    CardSavrClient.get_job = get_job


async def run_poller_forever(interval: float, arrivals: list) -> None:
    """The product's own loop (as `pollcardsavr` runs it), in this process."""
    watch_list_reads(arrivals)
    stop = asyncio.Event()
    await make_poller(interval).run(stop)
