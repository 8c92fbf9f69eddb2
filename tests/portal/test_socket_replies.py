"""Answers sent over the jobs websocket, as the live page sends them, against
the sandbox: the same claim-once path and checks as POST /api/jobs/<id>/reply/."""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.models import Session
from django.test import Client, override_settings

from cardsavr_portal.asgi import application
from jobs import events
from jobs.models import CredentialRequest, ReplyState
from jobs.poller import Poller
from tests.portal.flows import waiting_for_tfa

pytestmark = pytest.mark.django_db(transaction=True)

CODE = "246813"


@sync_to_async
def _session_of(cardholder) -> str:
    client = Client()
    client.force_login(cardholder.user)
    return client.cookies["sessionid"].value


async def _socket(session: str) -> WebsocketCommunicator:
    socket = WebsocketCommunicator(
        application,
        "/ws/jobs/",
        headers=[
            (b"host", b"127.0.0.1:8000"),
            (b"origin", b"http://127.0.0.1:8000"),
            (b"cookie", f"sessionid={session}".encode()),
        ],
    )
    connected, _ = await socket.connect(timeout=5)
    assert connected
    assert (await socket.receive_json_from(timeout=5))["type"] == events.SNAPSHOT
    return socket


async def _result(socket: WebsocketCommunicator) -> dict:
    """The next reply.result, passing over the pushes sent meanwhile."""
    while True:
        message = await socket.receive_json_from(timeout=10)
        if message["type"] == events.REPLY_RESULT:
            return message


def _reply(job, request, **overrides) -> dict:
    return {
        "type": events.REPLY,
        "ref": "r1",
        "job_id": job.pk,
        "envelope_id": request.envelope_id,
        "account_link": {"tfa": CODE},
        **overrides,
    }


async def test_reply_over_the_socket_reaches_cardsavr_once(wallet, portal):
    job, request = await waiting_for_tfa(wallet, Poller(interval=0.05))
    socket = await _socket(await _session_of(wallet))

    await socket.send_json_to(_reply(job, request))

    assert await _result(socket) == {
        "type": events.REPLY_RESULT,
        "ref": "r1",
        "ok": True,
        "status": 202,
    }
    replies = portal.engine.stats()["credential_replies_per_envelope"]
    assert replies[request.envelope_id] == 1
    await request.arefresh_from_db()
    assert request.reply_state == ReplyState.SENT
    await socket.disconnect()


async def test_second_socket_reply_to_a_question_conflicts_upstream_untouched(
    wallet, portal
):
    job, request = await waiting_for_tfa(wallet, Poller(interval=0.05))
    socket = await _socket(await _session_of(wallet))
    await socket.send_json_to(_reply(job, request))
    await _result(socket)

    await socket.send_json_to(_reply(job, request, ref="r2"))

    second = await _result(socket)
    assert (second["ref"], second["ok"], second["status"]) == ("r2", False, 409)
    replies = portal.engine.stats()["credential_replies_per_envelope"]
    assert replies[request.envelope_id] == 1
    await socket.disconnect()


async def test_socket_reply_to_another_cardholders_job_is_not_found(wallet, portal):
    from jobs import services

    job, request = await waiting_for_tfa(wallet, Poller(interval=0.05))
    mallory = await services.create_cardholder("mallory", "a-long-portal-pass-42")
    socket = await _socket(await _session_of(mallory))

    await socket.send_json_to(_reply(job, request))

    result = await _result(socket)
    assert (result["ok"], result["status"]) == (False, 404)
    assert (
        request.envelope_id
        not in portal.engine.stats()["credential_replies_per_envelope"]
    )
    await socket.disconnect()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"envelope_id": "bad\nid"}, "envelope_id"),
        ({"account_link": "246813"}, "account_link"),
        ({"account_link": {"tfa": ""}}, "tfa"),
        ({"account_link": {"tfa": CODE, "pin": "1"}}, "pin"),
    ],
    ids=["envelope", "not-fields", "empty", "unasked"],
)
async def test_bad_socket_reply_names_the_problem_and_changes_nothing(
    wallet, portal, overrides, field
):
    job, request = await waiting_for_tfa(wallet, Poller(interval=0.05))
    socket = await _socket(await _session_of(wallet))

    await socket.send_json_to(_reply(job, request, **overrides))

    result = await _result(socket)
    assert (result["ok"], result["status"], result["field"]) == (False, 400, field)
    await request.arefresh_from_db()
    assert (request.answered_at, request.reply_state) == (None, "")
    assert (
        request.envelope_id
        not in portal.engine.stats()["credential_replies_per_envelope"]
    )
    await socket.disconnect()


async def test_socket_reply_after_the_session_ended_closes_the_socket(wallet, portal):
    job, request = await waiting_for_tfa(wallet, Poller(interval=0.05))
    session = await _session_of(wallet)
    socket = await _socket(session)
    await Session.objects.filter(session_key=session).adelete()

    await socket.send_json_to(_reply(job, request))

    closed = await socket.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}
    await request.arefresh_from_db()
    assert request.answered_at is None


@override_settings(RATELIMIT_REPLIES_PER_CARDHOLDER=(1, 600))
@pytest.mark.usefixtures("one_ratelimit_window")
async def test_socket_replies_over_the_limit_are_refused_with_429(wallet, portal):
    job, request = await waiting_for_tfa(wallet, Poller(interval=0.05))
    socket = await _socket(await _session_of(wallet))
    await socket.send_json_to(_reply(job, request, account_link={"tfa": ""}))
    await _result(socket)

    await socket.send_json_to(_reply(job, request, ref="r2"))

    result = await _result(socket)
    assert (result["ok"], result["status"]) == (False, 429)
    assert "Too many answers" in result["error"]
    await socket.disconnect()


async def test_socket_reply_code_is_never_logged_or_stored(wallet, portal, caplog):
    job, request = await waiting_for_tfa(wallet, Poller(interval=0.05))
    socket = await _socket(await _session_of(wallet))

    with caplog.at_level(logging.DEBUG):
        await socket.send_json_to(_reply(job, request))
        await _result(socket)

    assert CODE not in caplog.text
    stored = await sync_to_async(
        lambda: repr(list(CredentialRequest.objects.values()))
    )()
    assert CODE not in stored
    await socket.disconnect()
