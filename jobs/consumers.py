"""The cardholder's live view of their jobs over one websocket."""

import json
import logging

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from jobs import events, selectors

logger = logging.getLogger(__name__)

# Browsers only ever send tiny control messages; anything larger is not ours.
MAX_FRAME_BYTES = 4 * 1024

PUSH_EVENTS = frozenset({events.JOB_CHANGED_EVENT, events.UPSTREAM_CHANGED_EVENT})

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NO_CARDHOLDER = 4403
CLOSE_SESSION_REVOKED = 4401
CLOSE_FRAME_TOO_BIG = 1009


@database_sync_to_async
def _cardholder_for(user):
    return selectors.cardholder_for_user(user)


@database_sync_to_async
def _snapshot(cardholder) -> dict:
    return {
        "type": events.SNAPSHOT,
        "jobs": selectors.job_payloads_for_cardholder(cardholder),
        "upstream": selectors.upstream_state(),
    }


class JobsConsumer(AsyncJsonWebsocketConsumer):
    groups: list[str] = []
    # Pushes that arrive while a snapshot is being read wait here, so that no
    # update goes out ahead of an older snapshot and is undone by it.
    held: list[dict] | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        cardholder = await _cardholder_for(user)
        if cardholder is None:
            await self.close(code=CLOSE_NO_CARDHOLDER)
            return
        self.cardholder = cardholder
        self.joined = [
            events.cardholder_group(cardholder.pk),
            events.user_group(user.pk),
            events.BROADCAST_GROUP,
        ]
        self.held = []
        # The embedded mode's layer can hand pushes over without the receive
        # loop (jobs/layers.py); other layers queue them for dispatch().
        attach = getattr(self.channel_layer, "attach", None)
        if attach is not None:
            attach(self.channel_name, self.push, PUSH_EVENTS)
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send_snapshot()
        logger.info("Jobs socket opened for cardholder %s", cardholder.pk)

    async def disconnect(self, code: int) -> None:
        detach = getattr(self.channel_layer, "detach", None)
        if detach is not None:
            detach(self.channel_name)
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def send_snapshot(self) -> None:
        if self.held is None:
            self.held = []
        try:
            await self.send_json(await _snapshot(self.cardholder))
        finally:
            # Sending may let more pushes in; the list is empty before it goes.
            while self.held:
                waiting, self.held = self.held, []
                for message in waiting:
                    await self.deliver(message)
            self.held = None

    async def push(self, message: dict) -> None:
        if self.held is not None:
            self.held.append(message)
            return
        await self.deliver(message)

    async def deliver(self, message: dict) -> None:
        await getattr(self, get_handler_name(message))(message)

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        if bytes_data is not None or text_data is None:
            # Only JSON text is spoken here.
            await self.close(code=1003)
            return
        if len(text_data.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
            logger.warning("Jobs socket frame too large, closing")
            await self.close(code=CLOSE_FRAME_TOO_BIG)
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs) -> None:
        if not isinstance(content, dict):
            return
        if content.get("type") == "resync":
            await self.send_snapshot()
        # Anything else is ignored: the socket only carries pushes.

    async def dispatch(self, message: dict) -> None:
        # Channels closes stale database connections before every handler, a
        # round trip to the database thread; pushes carry their payload and
        # touch no database, and with a thousand sockets those round trips
        # were most of the cost of a poll tick's pushes (docs/benchmarks.md).
        if message["type"] in PUSH_EVENTS:
            await self.push(message)
            return
        await super().dispatch(message)

    # Channel-layer handlers (event types from jobs.events).

    async def job_changed(self, event: dict) -> None:
        await self.send_json({"type": events.JOB_UPDATED, "job": event["job"]})

    async def upstream_changed(self, event: dict) -> None:
        await self.send_json({"type": events.UPSTREAM_STATE, "state": event["state"]})

    async def session_revoked(self, event: dict) -> None:
        await self.close(code=CLOSE_SESSION_REVOKED)
