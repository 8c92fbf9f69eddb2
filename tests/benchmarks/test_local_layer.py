import asyncio

import pytest

from jobs.layers import LocalChannelLayer


@pytest.fixture
def layer():
    return LocalChannelLayer(capacity=2, expiry=30, group_expiry=3600)


async def test_group_send_reaches_every_member_once(layer):
    await layer.group_add("cardholder.1", "a!1")
    await layer.group_add("cardholder.1", "b!1")
    await layer.group_add("cardholder.2", "c!1")

    await layer.group_send("cardholder.1", {"type": "job.changed", "n": 1})

    assert await layer.receive("a!1") == {"type": "job.changed", "n": 1}
    assert await layer.receive("b!1") == {"type": "job.changed", "n": 1}
    assert "c!1" not in layer.channels


async def test_each_member_gets_its_own_envelope(layer):
    await layer.group_add("g", "a!1")
    await layer.group_add("g", "b!1")
    await layer.group_send("g", {"type": "x", "job": {"v": 1}})

    first = await layer.receive("a!1")
    first.pop("type")

    assert await layer.receive("b!1") == {"type": "x", "job": {"v": 1}}


async def test_a_full_member_loses_the_push_and_others_still_get_it(layer):
    await layer.group_add("g", "slow!1")
    await layer.group_add("g", "live!1")
    await layer.send("slow!1", {"type": "x", "n": 0})
    await layer.send("slow!1", {"type": "x", "n": 1})

    await layer.group_send("g", {"type": "x", "n": 2})

    assert [(await layer.receive("slow!1"))["n"] for _ in range(2)] == [0, 1]
    assert "slow!1" not in layer.channels
    assert (await layer.receive("live!1"))["n"] == 2


async def test_a_waiting_receiver_is_woken_by_a_group_send(layer):
    await layer.group_add("g", "a!1")
    waiter = asyncio.ensure_future(layer.receive("a!1"))
    await asyncio.sleep(0)

    await layer.group_send("g", {"type": "x"})

    assert await asyncio.wait_for(waiter, 1) == {"type": "x"}


async def test_expired_messages_and_their_members_are_dropped_by_the_sweep():
    layer = LocalChannelLayer(expiry=0, clean_interval=0)
    await layer.group_add("g", "gone!1")
    await layer.group_send("g", {"type": "x"})
    await asyncio.sleep(0.01)

    await layer.group_send("other", {"type": "x"})

    assert "gone!1" not in layer.channels
    assert "gone!1" not in layer.groups.get("g", {})


async def test_the_sweep_runs_at_most_once_per_interval():
    layer = LocalChannelLayer(expiry=0, clean_interval=60)
    await layer.group_send("other", {"type": "x"})
    await layer.group_add("g", "kept!1")
    await layer.group_send("g", {"type": "x"})
    await asyncio.sleep(0.01)

    await layer.group_send("other", {"type": "x"})

    assert "kept!1" in layer.groups["g"]


async def test_attached_handler_gets_its_types_without_the_queue(layer):
    got = []

    async def handler(message):
        got.append(message)

    layer.attach("a!1", handler, {"job.changed"})
    await layer.group_add("g", "a!1")

    await layer.group_send("g", {"type": "job.changed", "n": 1})

    assert got == [{"type": "job.changed", "n": 1}]
    assert "a!1" not in layer.channels


async def test_attached_channel_still_queues_other_types(layer):
    async def handler(message):
        raise AssertionError("not for the handler")

    layer.attach("a!1", handler, {"job.changed"})
    await layer.group_add("g", "a!1")

    await layer.group_send("g", {"type": "session.revoked"})

    assert await layer.receive("a!1") == {"type": "session.revoked"}


async def test_detached_channel_gets_its_pushes_queued_again(layer):
    got = []

    async def handler(message):
        got.append(message)

    layer.attach("a!1", handler, {"job.changed"})
    layer.detach("a!1")
    await layer.group_add("g", "a!1")

    await layer.group_send("g", {"type": "job.changed"})

    assert got == []
    assert await layer.receive("a!1") == {"type": "job.changed"}


async def test_a_failing_handler_does_not_keep_the_push_from_other_members(layer):
    got = []

    async def broken(message):
        raise ConnectionError("socket gone")

    async def handler(message):
        got.append(message)

    layer.attach("a!1", broken, {"x"})
    layer.attach("b!1", handler, {"x"})
    await layer.group_add("g", "a!1")
    await layer.group_add("g", "b!1")

    await layer.group_send("g", {"type": "x"})

    assert got == [{"type": "x"}]


def test_a_group_send_from_another_loop_runs_the_handler_on_its_own_loop():
    layer = LocalChannelLayer()
    home = asyncio.new_event_loop()
    ran_on = []

    async def handler(message):
        ran_on.append(asyncio.get_running_loop())

    async def attach():
        layer.attach("a!1", handler, {"x"})
        await layer.group_add("g", "a!1")

    try:
        home.run_until_complete(attach())
        asyncio.run(layer.group_send("g", {"type": "x"}))
        home.run_until_complete(asyncio.sleep(0.01))
    finally:
        home.close()

    assert ran_on == [home]


def test_a_group_send_to_a_handler_whose_loop_closed_detaches_it():
    layer = LocalChannelLayer()
    home = asyncio.new_event_loop()

    async def handler(message):
        raise AssertionError("its loop is closed")

    async def attach():
        layer.attach("a!1", handler, {"x"})
        await layer.group_add("g", "a!1")

    home.run_until_complete(attach())
    home.close()

    asyncio.run(layer.group_send("g", {"type": "x"}))

    assert "a!1" not in layer._attached
