"""The naive baseline every figure is compared with, written the obvious way.

A tick reads the active jobs from the database, sends one GET per job to
CardSavr (ten at a time, on the same long-lived client the product uses),
saves each changed row with `asave()` and pushes each update with one
`group_send` through Channels' stock in-memory layer. It keeps the whole parsed
job of every tracked job between ticks.
"""

from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async
from django.utils import timezone

from jobs import events
from jobs.models import Job
from jobs.serializers import job_payload

CONCURRENCY = 10


def _active_jobs() -> list[Job]:
    return list(
        Job.objects.select_related("merchant_site")
        .defer("merchant_site__logo")
        .filter(termination_type="", vanished_at__isnull=True)
    )


class NaivePoller:
    def __init__(self, client, layer) -> None:
        self.client = client
        self.layer = layer
        self.remote: dict[int, object] = {}
        self.jobs: list[Job] = []

    async def tick(self) -> dict:
        self.jobs = await sync_to_async(_active_jobs)()
        limiter = asyncio.Semaphore(CONCURRENCY)
        changed = 0

        async def one(job: Job) -> None:
            nonlocal changed
            async with limiter:
                remote = await self.client.get_job(job.cardsavr_id)
            self.remote[job.cardsavr_id] = remote
            wanted = {
                "status": remote.status,
                "status_message": remote.status_message,
                "percent_complete": remote.percent_complete,
                "auth_percent_complete": remote.auth_percent_complete,
                "termination_type": remote.termination_type or "",
            }
            if all(getattr(job, k) == v for k, v in wanted.items()):
                return
            for name, value in wanted.items():
                setattr(job, name, value)
            job.last_updated_on = remote.last_updated_on
            job.last_synced_at = timezone.now()
            job.version += 1
            await job.asave()
            changed += 1
            await self.layer.group_send(
                events.cardholder_group(job.cardholder_id),
                {"type": events.JOB_CHANGED_EVENT, "job": job_payload(job, None)},
            )

        await asyncio.gather(*(one(job) for job in self.jobs))
        return {"jobs": len(self.jobs), "changed": changed, "calls": len(self.jobs)}


async def run_forever(interval: float, layer) -> None:
    """Poll, then sleep the interval: the naive loop's own schedule."""
    from jobs.cardsavr_client import get_client

    poller = NaivePoller(get_client(), layer)
    while True:
        await poller.tick()
        await asyncio.sleep(interval)
