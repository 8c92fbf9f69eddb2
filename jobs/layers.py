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
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from channels.layers import InMemoryChannelLayer


class LocalChannelLayer(InMemoryChannelLayer):
    def __init__(self, clean_interval: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clean_interval = clean_interval
        self._next_clean = 0.0

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
        for channel in list(members):
            queue = self.channels.get(channel)
            if queue is None:
                queue = self.channels.setdefault(
                    channel, asyncio.Queue(maxsize=self.get_capacity(channel))
                )
            # As in Channels' layers, a member that stopped reading loses this
            # push; versions and the reconnect snapshot repair it.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait((expires, dict(message)))
