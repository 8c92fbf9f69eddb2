"""The poller against the sandbox: faults, vanished jobs, the command."""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.core.management import call_command

from jobs import selectors, services
from jobs.models import Job, JobEvent, Outcome, ReplyState
from jobs.poller import Poller
from tests.portal.flows import CARD, finished, poll_until, site, waiting_for_tfa

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_upstream_state():
    cache.delete(selectors.UPSTREAM_STATE_KEY)
    yield
    cache.delete(selectors.UPSTREAM_STATE_KEY)


@pytest.fixture
async def waiting_job(wallet):
    job, _ = await waiting_for_tfa(wallet, Poller(interval=0.05))
    return job


@pytest.mark.parametrize("kind", ["500", "503", "garbage"])
async def test_upstream_fault_marks_cardsavr_unreachable_then_recovers(
    portal,
    waiting_job,
    kind,
):
    poller = Poller(interval=0.05)
    portal.engine.faults.add(kind)

    await poller.run_tick()
    down = await sync_to_async(selectors.upstream_state)()
    portal.engine.faults.clear()
    await poller.run_tick()
    up = await sync_to_async(selectors.upstream_state)()

    assert down["reachable"] is False
    assert "CardSavr is not answering; retrying in" in down["message"]
    assert up["reachable"] is True


async def test_one_failed_read_tells_pages_at_once(portal, waiting_job):
    # The portal's client retries reads three times by default; a poll tick
    # does not wait for those retries before saying CardSavr is not answering.
    poller = Poller(interval=0.05)
    portal.engine.faults.add("503", count=1)

    await poller.run_tick()
    state = await sync_to_async(selectors.upstream_state)()

    assert state["reachable"] is False
    assert poller.failures == 1


async def test_upstream_fault_leaves_the_job_as_it_was(
    portal,
    waiting_job,
):
    poller = Poller(interval=0.05)
    portal.engine.faults.add("500")

    await poller.run_tick()

    current = await Job.objects.aget(pk=waiting_job.pk)
    assert current.version == waiting_job.version


async def test_rate_limit_waits_at_least_retry_after(
    portal,
    waiting_job,
):
    poller = Poller(interval=0.05)
    portal.engine.faults.add("429", retry_after=7)

    delay = await poller.run_tick()

    assert delay >= 7


async def test_backoff_grows_with_consecutive_faults_up_to_the_cap(
    portal,
    waiting_job,
):
    poller = Poller(interval=0.05, backoff_cap=0.4)
    portal.engine.faults.add("500")

    delays = [await poller.run_tick() for _ in range(6)]

    assert delays[0] <= 0.1
    assert max(delays) <= 0.4
    assert delays[-1] >= 0.2


async def test_job_cardsavr_no_longer_knows_is_marked_vanished(
    portal,
    waiting_job,
):
    await Job.objects.filter(pk=waiting_job.pk).aupdate(cardsavr_id=999_999_999)
    poller = Poller(interval=0.05)

    await poller.run_tick()

    job = await Job.objects.aget(pk=waiting_job.pk)
    assert job.vanished_at is not None
    assert job.outcome == Outcome.FAILED
    assert await JobEvent.objects.filter(job=job, kind=JobEvent.Kind.VANISHED).aexists()
    stats = await poller.tick()
    assert stats.jobs == 0


async def test_uncertain_reply_is_not_resent_and_closes_when_cardsavr_moves_on(
    portal,
    wallet,
    settings,
):
    poller = Poller(interval=0.05)
    job, request = await waiting_for_tfa(wallet, poller)
    settings.CARDSAVR_TIMEOUT = 0.5
    from jobs.cardsavr_client import reset_clients

    reset_clients()
    portal.engine.faults.add("delay", job_id=job.cardsavr_id, seconds=1.5, count=1)

    with pytest.raises(services.UpstreamUnavailable) as caught:
        await services.submit_reply(
            wallet, job.pk, request.envelope_id, {"tfa": "1234"}
        )

    await request.arefresh_from_db()
    assert request.reply_state == ReplyState.UNCERTAIN
    assert "may have been received" in caught.value.message
    settings.CARDSAVR_TIMEOUT = 10.0
    reset_clients()
    job, _ = await poll_until(poller, job.pk, finished)
    await request.arefresh_from_db()
    assert not request.is_open
    replies = portal.engine.stats()["credential_replies_per_envelope"]
    assert replies[request.envelope_id] == 1


def test_pollcardsavr_once_mirrors_active_jobs(portal_on_sandbox, django_user_model):
    from asgiref.sync import async_to_sync

    from jobs.cardsavr_client import close_clients

    async def start() -> int:
        try:
            cardholder = await services.create_cardholder("carol", "a-long-pass-77x")
            await services.add_card(cardholder, **CARD)
            await services.sync_merchant_sites()
            [job] = await services.start_jobs(cardholder, [(await site(), None)])
            return job.pk
        finally:
            await close_clients()

    job_pk = async_to_sync(start)()
    # Make the mirror stale, as if CardSavr moved on while no poller ran.
    Job.objects.filter(pk=job_pk).update(status="STALE", last_updated_on=None)

    call_command("pollcardsavr", "--once", "--interval", "0.1")

    job = Job.objects.get(pk=job_pk)
    assert job.status not in ("STALE", "")
    assert job.version == 2


def test_pollcardsavr_logs_start_and_stop(portal_on_sandbox, caplog):
    caplog.set_level(logging.INFO, logger="jobs.poller")

    call_command("pollcardsavr", "--once")

    messages = [r.getMessage() for r in caplog.records if r.name == "jobs.poller"]
    assert any("started" in m for m in messages)
    assert any("stopped" in m for m in messages)


async def test_unreachable_banner_clears_when_there_is_no_job_to_read(portal):
    await sync_to_async(services.set_upstream_state)(
        False, "CardSavr is not answering; retrying in 4 s", 4
    )

    await Poller(interval=0.05).run_tick()

    state = await sync_to_async(selectors.upstream_state)()
    assert state["reachable"] is True
