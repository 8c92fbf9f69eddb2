"""The in-process channel layer of the embedded mode.

Channels' InMemoryChannelLayer walks every channel and every group membership
of the process to drop expired entries on each receive() and each group_send(),
and starts a task per member in group_send. Every websocket consumer waits in
receive(), so with N open sockets one push costs O(N) and a poll tick that
updates every cardholder costs O(N²): at 1,000 sockets a tick of 1,000 pushes
took most of a second (docs/benchmarks.md). This layer keeps the same
semantics (capacity, message expiry, group expiry, a copy per recipient) but
runs the expiry sweep at most once per `clean_interval` seconds and puts group
messages straight on the members' queues, so a push costs what its group has.

Each member gets its own copy of the message's top level, but nested values
are shared: a sender hands its message over and does not change it afterwards,
and consumers only read what they receive. (Deep-copying a job payload for
every push was a third of the push's cost.)

A consumer may also `attach` a handler for chosen message types. Group messages
of those types are then handed to the handler at once instead of being queued
for the consumer's receive loop: Channels wakes that loop through two tasks
and a wait per message, which cost about 0.2 ms of CPU per push, most of a
poll tick's push time with a thousand sockets (docs/benchmarks.md). Handlers
run on the loop that attached them, so a group_send from another thread's
loop is passed over to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import NamedTuple

from channels.layers import InMemoryChannelLayer

logger = logging.getLogger(__name__)

Handler = Callable[[dict], Awaitable[None]]


class _Attached(NamedTuple):
    handler: Handler
    types: frozenset[str]
    loop: asyncio.AbstractEventLoop


class LocalChannelLayer(InMemoryChannelLayer):
    def __init__(self, clean_interval: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clean_interval = clean_interval
        self._next_clean = 0.0
        self._attached: dict[str, _Attached] = {}

    def attach(self, channel: str, handler: Handler, types: Collection[str]) -> None:
        """Hand group messages of `types` for `channel` to `handler` directly.

        Call it from the consumer's event loop; other messages stay queued.
        Every attached member of a group gets the same message object, so a
        handler only reads it.
        """
        self._attached[channel] = _Attached(
            handler, frozenset(types), asyncio.get_running_loop()
        )

    def detach(self, channel: str) -> None:
        self._attached.pop(channel, None)

    def _clean_expired(self) -> None:
        # Expiry is measured in seconds (expiry 30 s, group_expiry hours), so
        # sweeping once a second drops nothing noticeably later.
        now = time.monotonic()
        if now < self._next_clean:
            return
        self._next_clean = now + self.clean_interval
        super()._clean_expired()

    async def group_send(self, group: str, message: dict) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        members = self.groups.get(group)
        if not members:
            return
        expires = time.time() + self.expiry
        kind = message.get("type")
        loop = asyncio.get_running_loop()
        for channel in list(members):
            attached = self._attached.get(channel)
            if attached is not None and kind in attached.types:
                await self._hand_over(channel, attached, message, loop)
                continue
            queue = self.channels.get(channel)
            if queue is None:
                queue = self.channels.setdefault(
                    channel, asyncio.Queue(maxsize=self.get_capacity(channel))
                )
            # As in Channels' layers, a member that stopped reading loses this
            # push; versions and the reconnect snapshot repair it.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait((expires, dict(message)))

    async def _hand_over(
        self,
        channel: str,
        attached: _Attached,
        message: dict,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        if attached.loop is not loop:
            handing = attached.handler(message)
            try:
                asyncio.run_coroutine_threadsafe(handing, attached.loop)
            except RuntimeError:
                # That loop has closed: its consumer is gone.
                handing.close()
                self.detach(channel)
            return
        try:
            await attached.handler(message)
        except Exception:
            # One socket's failure must not keep the push from the others.
            logger.warning("Push to channel %s failed", channel, exc_info=True)
