"""The jobs websocket: who may open it, what it sends, and when it closes."""

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client

from cardsavr_portal.asgi import application
from jobs import consumers, events, selectors

from .factories import PASSWORD, TFA_LINK, make_cardholder, make_job

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = b"http://127.0.0.1:8000"


def socket_for(cookie: str | None, origin: bytes = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", origin)]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(application, "/ws/jobs/", headers=headers)


@sync_to_async
def logged_in(username: str, *, with_job: bool = True):
    holder = make_cardholder(username)
    job = (
        make_job(holder, request_type="tfa", account_link=TFA_LINK)
        if with_job
        else None
    )
    client = Client()
    client.force_login(holder.user)
    return holder, job, client


async def open_socket(client: Client, origin: bytes = ORIGIN):
    socket = socket_for(client.cookies["sessionid"].value, origin)
    connected, code = await socket.connect(timeout=5)
    return socket, connected, code


async def test_anonymous_socket_is_closed_with_4401():
    socket = socket_for(None)
    connected, code = await socket.connect(timeout=5)
    assert (connected, code) == (False, 4401)


async def test_login_without_cardholder_is_closed_with_4403():
    user = await sync_to_async(get_user_model().objects.create_user)(
        "staff-only", password=PASSWORD
    )
    client = Client()
    await sync_to_async(client.force_login)(user)
    _, connected, code = await open_socket(client)
    assert (connected, code) == (False, 4403)


async def test_foreign_origin_is_refused_by_the_application():
    _, _, client = await logged_in("alice")
    _, connected, _ = await open_socket(client, origin=b"https://evil.example")
    assert connected is False


async def test_snapshot_on_connect_holds_own_jobs_and_upstream_state():
    _, job, client = await logged_in("alice")
    await logged_in("bob")
    socket, connected, _ = await open_socket(client)
    assert connected
    snapshot = await socket.receive_json_from(timeout=5)
    assert snapshot["type"] == events.SNAPSHOT
    assert [j["id"] for j in snapshot["jobs"]] == [job.pk]
    assert snapshot["jobs"][0]["credential_request"]["type"] == "tfa"
    assert snapshot["upstream"]["reachable"] is True
    await socket.disconnect()


async def test_own_job_change_is_sent_as_job_updated():
    holder, job, client = await logged_in("alice")
    socket, _, _ = await open_socket(client)
    await socket.receive_json_from(timeout=5)
    payload = await sync_to_async(selectors.job_payload_by_id)(job.pk)
    await get_channel_layer().group_send(
        events.cardholder_group(holder.pk),
        {"type": events.JOB_CHANGED_EVENT, "job": payload},
    )
    message = await socket.receive_json_from(timeout=5)
    assert message == {"type": events.JOB_UPDATED, "job": payload}
    await socket.disconnect()


async def test_push_landing_while_the_snapshot_is_read_follows_the_snapshot(
    monkeypatch,
):
    holder, job, client = await logged_in("alice")
    payload = await sync_to_async(selectors.job_payload_by_id)(job.pk)
    newer = {**payload, "version": payload["version"] + 1}
    read_snapshot = consumers._snapshot

    async def snapshot_overtaken_by_a_push(cardholder):
        snapshot = await read_snapshot(cardholder)
        await get_channel_layer().group_send(
            events.cardholder_group(holder.pk),
            {"type": events.JOB_CHANGED_EVENT, "job": newer},
        )
        return snapshot

    monkeypatch.setattr(consumers, "_snapshot", snapshot_overtaken_by_a_push)
    socket, _, _ = await open_socket(client)

    first = await socket.receive_json_from(timeout=5)
    second = await socket.receive_json_from(timeout=5)

    assert first["type"] == events.SNAPSHOT
    assert second == {"type": events.JOB_UPDATED, "job": newer}
    await socket.disconnect()


async def test_closed_socket_no_longer_takes_pushes():
    holder, job, client = await logged_in("alice")
    layer = get_channel_layer()
    before = set(layer._attached)
    socket, _, _ = await open_socket(client)
    await socket.receive_json_from(timeout=5)
    attached = set(layer._attached) - before

    await socket.disconnect()

    assert len(attached) == 1
    assert not set(layer._attached) & attached
    await layer.group_send(
        events.cardholder_group(holder.pk),
        {"type": events.JOB_CHANGED_EVENT, "job": {"id": job.pk, "version": 9}},
    )


async def test_another_cardholders_job_change_is_not_sent():
    _, _, client = await logged_in("alice")
    bob, bob_job, _ = await logged_in("bob")
    socket, _, _ = await open_socket(client)
    await socket.receive_json_from(timeout=5)
    await get_channel_layer().group_send(
        events.cardholder_group(bob.pk),
        {"type": events.JOB_CHANGED_EVENT, "job": {"id": bob_job.pk, "version": 5}},
    )
    assert await socket.receive_nothing(timeout=0.5)
    await socket.disconnect()


async def test_upstream_change_is_sent_as_upstream_state():
    _, _, client = await logged_in("alice")
    socket, _, _ = await open_socket(client)
    await socket.receive_json_from(timeout=5)
    state = {"reachable": False, "message": "down", "since": None, "retry_in": 4.0}
    await get_channel_layer().group_send(
        events.BROADCAST_GROUP, {"type": events.UPSTREAM_CHANGED_EVENT, "state": state}
    )
    message = await socket.receive_json_from(timeout=5)
    assert message == {"type": events.UPSTREAM_STATE, "state": state}
    await socket.disconnect()


async def test_resync_sends_a_fresh_snapshot():
    holder, job, client = await logged_in("alice")
    socket, _, _ = await open_socket(client)
    await socket.receive_json_from(timeout=5)
    later = await sync_to_async(make_job)(holder)
    await socket.send_json_to({"type": "resync"})
    snapshot = await socket.receive_json_from(timeout=5)
    assert snapshot["type"] == events.SNAPSHOT
    assert {j["id"] for j in snapshot["jobs"]} == {job.pk, later.pk}
    await socket.disconnect()


async def test_snapshot_carries_the_current_upstream_state():
    _, _, client = await logged_in("alice")
    down = {"reachable": False, "message": "down", "since": None, "retry_in": 2.0}
    await sync_to_async(cache.set)(selectors.UPSTREAM_STATE_KEY, down)
    try:
        socket, _, _ = await open_socket(client)
        snapshot = await socket.receive_json_from(timeout=5)
        assert snapshot["upstream"]["reachable"] is False
        await socket.disconnect()
    finally:
        await sync_to_async(cache.delete)(selectors.UPSTREAM_STATE_KEY)


async def test_unknown_message_is_ignored():
    _, _, client = await logged_in("alice")
    socket, _, _ = await open_socket(client)
    await socket.receive_json_from(timeout=5)
    await socket.send_json_to({"type": "subscribe", "group": "cardholder.2"})
    assert await socket.receive_nothing(timeout=0.3)
    await socket.send_json_to({"type": "resync"})
    assert (await socket.receive_json_from(timeout=5))["type"] == events.SNAPSHOT
    await socket.disconnect()


async def test_frame_over_16_kib_closes_the_socket():
    _, _, client = await logged_in("alice")
    socket, _, _ = await open_socket(client)
    await socket.receive_json_from(timeout=5)
    await socket.send_to(text_data='{"type": "resync", "pad": "' + "x" * 16_400 + '"}')
    assert await socket.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 1009,
    }


async def test_logout_closes_the_socket():
    _, _, client = await logged_in("alice")
    socket, _, _ = await open_socket(client)
    await socket.receive_json_from(timeout=5)
    await sync_to_async(client.post)("/accounts/logout/")
    closed = await socket.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}


async def test_logout_leaves_other_users_sockets_open():
    _, _, alice = await logged_in("alice")
    _, _, bob = await logged_in("bob")
    socket, _, _ = await open_socket(bob)
    await socket.receive_json_from(timeout=5)
    await sync_to_async(alice.post)("/accounts/logout/")
    assert await socket.receive_nothing(timeout=0.5)
    await socket.disconnect()
