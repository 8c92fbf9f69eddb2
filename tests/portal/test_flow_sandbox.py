"""Whole job lifecycles against the sandbox, driven through services and the poller."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer

from jobs import events, services
from jobs.models import CredentialRequest, Job, Outcome, ReplyState
from jobs.poller import Poller
from tests.portal.flows import (
    finished,
    open_request_of_type,
    poll_until,
    site,
    waiting_for_tfa,
)

pytestmark = pytest.mark.django_db(transaction=True)


async def test_tfa_job_waits_for_the_code_and_succeeds_after_it(wallet):
    [job] = await services.start_jobs(
        wallet, [(await site(), {"username": "good_email", "password": "tfa"})]
    )
    poller = Poller(interval=0.05)

    job, request = await poll_until(poller, job.pk, open_request_of_type("tfa"))
    assert job.status == "PENDING_TFA"
    assert job.outcome == Outcome.NEEDS_INPUT

    await services.submit_reply(wallet, job.pk, request.envelope_id, {"tfa": "1234"})
    job, _ = await poll_until(poller, job.pk, finished)

    assert (job.status, job.outcome) == ("SUCCESSFUL", Outcome.SUCCESS)


async def test_push_approval_is_acknowledged_by_the_poller(wallet, portal):
    [job] = await services.start_jobs(
        wallet, [(await site(), {"username": "good_email", "password": "tfa_message"})]
    )
    poller = Poller(interval=0.05)

    job, _ = await poll_until(poller, job.pk, finished)

    request = await CredentialRequest.objects.aget(job=job, type="tfa_message")
    assert request.reply_state == ReplyState.SENT
    replies = portal.engine.stats()["credential_replies_per_envelope"]
    assert replies[request.envelope_id] == 1
    assert job.outcome == Outcome.SUCCESS


async def test_second_reply_to_an_envelope_conflicts_without_calling_cardsavr(
    wallet, portal
):
    job, request = await waiting_for_tfa(wallet, Poller(interval=0.05))
    await services.submit_reply(wallet, job.pk, request.envelope_id, {"tfa": "1234"})

    with pytest.raises(services.ReplyConflict):
        await services.submit_reply(
            wallet, job.pk, request.envelope_id, {"tfa": "9999"}
        )

    replies = portal.engine.stats()["credential_replies_per_envelope"]
    assert replies[request.envelope_id] == 1


async def test_concurrent_replies_to_an_envelope_reach_cardsavr_once(wallet, portal):
    job, request = await waiting_for_tfa(wallet, Poller(interval=0.05))

    results = await asyncio.gather(
        *(
            services.submit_reply(wallet, job.pk, request.envelope_id, {"tfa": "1234"})
            for _ in range(5)
        ),
        return_exceptions=True,
    )

    conflicts = [r for r in results if isinstance(r, services.ReplyConflict)]
    assert len(conflicts) == 4
    replies = portal.engine.stats()["credential_replies_per_envelope"]
    assert replies[request.envelope_id] == 1


async def test_reply_cardsavr_refuses_leaves_the_request_open(wallet, portal):
    from cardsavr.client import CardSavrClient
    from jobs.cardsavr_client import client_config_from_settings

    job, request = await waiting_for_tfa(wallet, Poller(interval=0.05))
    # Someone else answers first, so CardSavr refuses the portal's reply.
    async with CardSavrClient(client_config_from_settings()) as other:
        await other.answer_credential_request(
            job.cardsavr_id, request.envelope_id, {"tfa": "1234"}
        )

    with pytest.raises(services.UpstreamRejected) as caught:
        await services.submit_reply(
            wallet, job.pk, request.envelope_id, {"tfa": "1234"}
        )

    await request.arefresh_from_db()
    assert (request.reply_state, request.answered_at) == (ReplyState.REJECTED, None)
    assert request.is_open
    assert "did not accept" in caught.value.message


async def test_job_details_not_matching_the_site_start_nothing(wallet, portal):
    jobs_before = portal.engine.stats()["jobs"]

    with pytest.raises(services.InvalidInput) as caught:
        await services.start_jobs(wallet, [(await site(), {"username": "good_email"})])

    assert caught.value.field == "password"
    assert portal.engine.stats()["jobs"] == jobs_before
    assert await Job.objects.acount() == 0


async def test_cancel_ends_the_job_as_cancelled(wallet):
    job, _ = await waiting_for_tfa(wallet, Poller(interval=0.05))

    await services.cancel_job(job.pk, cardholder=wallet)
    job, _ = await poll_until(Poller(interval=0.05), job.pk, finished)

    assert job.outcome == Outcome.CANCELLED


async def test_reply_pushes_rising_versions_ending_in_cardsavrs_new_state(wallet):
    job, request = await waiting_for_tfa(wallet, Poller(interval=0.05))
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.cardholder_group(wallet.pk), channel)

    await services.submit_reply(wallet, job.pk, request.envelope_id, {"tfa": "1234"})

    pushed = []
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), 0.5)
        except TimeoutError:
            break
        pushed.append(message["job"])
    versions = [payload["version"] for payload in pushed]
    assert len(pushed) == 2
    assert versions == sorted(set(versions))
    assert pushed[0]["credential_request"]["answerable"] is False
    assert (pushed[-1]["credential_request"] or {}).get("envelope_id") != (
        request.envelope_id
    )
