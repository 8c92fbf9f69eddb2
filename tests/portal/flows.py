"""Driving sandbox jobs from tests: sites, polling until a state, waits."""

from __future__ import annotations

import asyncio
import time

from asgiref.sync import sync_to_async

from jobs import selectors, services
from jobs.models import CredentialRequest, Job, MerchantSite
from jobs.poller import Poller

STANDARD_SITE = "synthetic-sites.sandbox.local/standard"
CARD = {
    "pan": "4111111111111111",
    "cvv": "123",
    "expiration_month": "12",
    "expiration_year": "2099",
    "name_on_card": "Alice Example",
    "address": {
        "address1": "1 Main St",
        "city": "Seattle",
        "subnational": "WA",
        "postal_code": "98101",
    },
}


async def site(host: str = STANDARD_SITE) -> MerchantSite:
    return await MerchantSite.objects.aget(host=host)


async def job_state(job_pk: int) -> tuple[Job, CredentialRequest | None]:
    def read():
        job = selectors.jobs_with_state().get(pk=job_pk)
        return job, selectors.open_request_of(job)

    return await sync_to_async(read)()


async def poll_until(poller: Poller, job_pk: int, done, limit: float = 30.0):
    """Tick until done(job, open_request) holds; the sandbox runs at speed."""
    give_up = time.monotonic() + limit
    while True:
        await poller.run_tick()
        job, request = await job_state(job_pk)
        if done(job, request):
            return job, request
        if time.monotonic() > give_up:
            raise AssertionError(f"job stuck at {job.status} ({job.outcome})")
        await asyncio.sleep(0.05)


def open_request_of_type(kind: str):
    return lambda job, request: request is not None and request.type == kind


def finished(job, request):
    return job.is_terminated


async def waiting_for_tfa(wallet, poller: Poller) -> tuple[Job, CredentialRequest]:
    [job] = await services.start_jobs(
        wallet, [(await site(), {"username": "good_email", "password": "tfa"})]
    )
    return await poll_until(poller, job.pk, open_request_of_type("tfa"))
