"""The jobs websocket: who may open it, what it carries, and when it closes."""

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client

from cardsavr_portal.asgi import application
from jobs import events

from .factories import make_cardholder, make_job, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

ALLOWED_ORIGIN = b"http://127.0.0.1:8000"


def communicator(cookie: str | None, origin: bytes | None = ALLOWED_ORIGIN):
    headers = [(b"host", b"127.0.0.1:8000")]
    if origin is not None:
        headers.append((b"origin", origin))
    if cookie is not None:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(application, "/ws/jobs/", headers=headers)


@sync_to_async
def cardholder_with_job(username: str):
    holder = make_cardholder(username)
    job = make_job(holder)
    return holder, job, session_cookie(holder)


async def test_foreign_origin_is_refused_before_accept():
    _, _, cookie = await cardholder_with_job("alice")
    socket = communicator(cookie, origin=b"https://evil.example")
    connected, _ = await socket.connect()
    assert connected is False
    await socket.disconnect()


async def test_missing_origin_is_refused():
    _, _, cookie = await cardholder_with_job("alice")
    socket = communicator(cookie, origin=None)
    connected, _ = await socket.connect()
    assert connected is False
    await socket.disconnect()


async def test_null_origin_is_refused():
    _, _, cookie = await cardholder_with_job("alice")
    socket = communicator(cookie, origin=b"null")
    connected, _ = await socket.connect()
    assert connected is False
    await socket.disconnect()


async def test_anonymous_socket_is_refused():
    socket = communicator(None)
    connected, _ = await socket.connect()
    assert connected is False
    await socket.disconnect()


async def test_forged_session_cookie_is_refused():
    socket = communicator("a" * 32)
    connected, _ = await socket.connect()
    assert connected is False
    await socket.disconnect()


async def test_session_from_before_a_password_change_is_refused():
    holder, _, cookie = await cardholder_with_job("alice")

    @sync_to_async
    def change_password():
        holder.user.set_password("a-new-long-passphrase")
        holder.user.save()

    await change_password()
    socket = communicator(cookie)
    connected, code = await socket.connect()
    assert (connected, code) == (False, 4401)
    await socket.disconnect()


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "reply", "job_id": 1, "envelope_id": "\\ud800"}',
        '{"type": "reply", "job_id": "1", "envelope_id": "ZW52", "account_link": {}}',
        '{"type": "reply", "job_id": true, "envelope_id": "ZW52", "account_link": {}}',
    ],
    ids=["surrogate", "text-id", "bool-id"],
)
async def test_malformed_reply_gets_an_error_and_the_socket_keeps_working(frame):
    _, _, cookie = await cardholder_with_job("alice")
    socket = communicator(cookie)
    await socket.connect()
    await socket.receive_json_from(timeout=5)

    await socket.send_to(text_data=frame)

    result = await socket.receive_json_from(timeout=5)
    assert (result["type"], result["ok"], result["status"]) == (
        events.REPLY_RESULT,
        False,
        400,
    )
    assert result["field"] in {"job_id", "envelope_id"}
    assert result["error"]
    await socket.send_json_to({"type": "resync"})
    assert (await socket.receive_json_from(timeout=5))["type"] == events.SNAPSHOT
    await socket.disconnect()


async def test_snapshot_holds_only_the_cardholders_own_jobs():
    _, alice_job, cookie = await cardholder_with_job("alice")
    await cardholder_with_job("bob")
    socket = communicator(cookie)
    connected, _ = await socket.connect()
    assert connected
    snapshot = await socket.receive_json_from(timeout=5)
    assert snapshot["type"] == events.SNAPSHOT
    assert [job["id"] for job in snapshot["jobs"]] == [alice_job.pk]
    await socket.disconnect()


async def test_another_cardholders_push_never_reaches_the_socket():
    _, _, cookie = await cardholder_with_job("alice")
    bob, bob_job, _ = await cardholder_with_job("bob")
    socket = communicator(cookie)
    await socket.connect()
    await socket.receive_json_from(timeout=5)
    await get_channel_layer().group_send(
        events.cardholder_group(bob.pk),
        {"type": events.JOB_CHANGED_EVENT, "job": {"id": bob_job.pk, "version": 9}},
    )
    assert await socket.receive_nothing(timeout=0.5)
    await socket.disconnect()


async def test_logout_closes_the_open_socket():
    holder, _, _ = await cardholder_with_job("alice")
    browser = Client()
    await sync_to_async(browser.force_login)(holder.user)
    cookie = browser.cookies["sessionid"].value
    socket = communicator(cookie)
    await socket.connect()
    await socket.receive_json_from(timeout=5)
    await sync_to_async(browser.post)("/accounts/logout/")
    closed = await socket.receive_output(timeout=5)
    assert closed["type"] == "websocket.close"
    assert closed["code"] in {1008, 4401}


async def test_oversized_frame_closes_the_socket():
    _, _, cookie = await cardholder_with_job("alice")
    socket = communicator(cookie)
    await socket.connect()
    await socket.receive_json_from(timeout=5)
    await socket.send_to(text_data='{"type": "resync", "pad": "' + "x" * 70000 + '"}')
    closed = await socket.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 1009}


async def test_binary_frame_closes_the_socket():
    _, _, cookie = await cardholder_with_job("alice")
    socket = communicator(cookie)
    await socket.connect()
    await socket.receive_json_from(timeout=5)
    await socket.send_to(bytes_data=b"\x00\x01")
    closed = await socket.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 1003}


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        '{"type": ',
        "[" * 2000 + "]" * 2000,
        '"just a string"',
        '{"type": "\\u0000\\r\\n"}',
    ],
    ids=["text", "truncated", "deep", "scalar", "control"],
)
async def test_malformed_frames_leave_the_socket_working(frame):
    _, job, cookie = await cardholder_with_job("alice")
    socket = communicator(cookie)
    await socket.connect()
    await socket.receive_json_from(timeout=5)
    await socket.send_to(text_data=frame)
    await socket.send_json_to({"type": "resync"})
    snapshot = await socket.receive_json_from(timeout=5)
    assert snapshot["type"] == events.SNAPSHOT
    assert [j["id"] for j in snapshot["jobs"]] == [job.pk]
    await socket.disconnect()
