"""The cardholder's live view of their jobs over one websocket.

The server sends a snapshot on connect and on `{"type": "resync"}`, then each
job change and CardSavr's reachability as they happen. The page also sends its
answers here while the socket is open: `{"type": "reply", "ref", "job_id",
"envelope_id", "account_link"}`, answered by `{"type": "reply.result", "ref",
"ok", "status", "error", "field"}` with the statuses of the HTTP API.
"""

import json
import logging
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.views.decorators.debug import sensitive_variables

from cardsavr_portal.websocket_auth import session_user
from jobs import events, ratelimit, selectors, services
from jobs.models import Cardholder

logger = logging.getLogger(__name__)

# Browsers send resyncs and answers (a few fields of 256 characters at most,
# as the HTTP API's 16 KiB body); anything larger is not ours.
MAX_FRAME_BYTES = 16 * 1024

PUSH_EVENTS = frozenset({events.JOB_CHANGED_EVENT, events.UPSTREAM_CHANGED_EVENT})

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NO_CARDHOLDER = 4403
CLOSE_SESSION_REVOKED = 4401
CLOSE_FRAME_TOO_BIG = 1009


@database_sync_to_async
def _cardholder_for(user):
    return selectors.cardholder_for_user(user)


class _SessionEnded(Exception):
    pass


class _RateLimited(Exception):
    def __init__(self, wait: int) -> None:
        super().__init__(wait)
        self.wait = wait


@database_sync_to_async
@sensitive_variables("account_link")
def _claim_reply(
    scope: dict[str, Any],
    cardholder: Cardholder,
    job_id: int,
    envelope_id: str,
    account_link: dict[str, str],
) -> services.Claim:
    """The checks an HTTP reply passes through (session, rate limit), then the
    claim, in one trip to the database thread."""
    user = session_user(scope.get("session_key"))
    if not user.is_authenticated or user.pk != scope["user"].pk:
        raise _SessionEnded
    wait = ratelimit.reply_retry_after(user.pk)
    if wait is not None:
        raise _RateLimited(wait)
    return services.claim_reply(cardholder, job_id, envelope_id, account_link)


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
        kind = content.get("type")
        if kind == events.RESYNC:
            await self.send_snapshot()
        elif kind == events.REPLY:
            await self.reply(content)
        # Anything else is ignored.

    @sensitive_variables("content", "account_link")
    async def reply(self, content: dict) -> None:
        """Answer a job's question, as POST /api/jobs/<id>/reply/ does; the
        page sends its answers here while the socket is open."""
        ref = content.get("ref")
        result: dict[str, Any] = {
            "type": events.REPLY_RESULT,
            "ref": ref if isinstance(ref, str) and len(ref) <= 64 else None,
        }
        job_id, envelope_id = content.get("job_id"), content.get("envelope_id")
        account_link = content.get("account_link")
        try:
            if not isinstance(job_id, int) or isinstance(job_id, bool):
                raise services.InvalidInput(
                    "The update this answers is missing; reload the page.",
                    field="job_id",
                )
            services.check_reply_shape(envelope_id, account_link)
            claim = await _claim_reply(
                self.scope, self.cardholder, job_id, envelope_id, account_link
            )
            await services.forward_reply(claim, account_link)
        except _SessionEnded:
            await self.close(code=CLOSE_SESSION_REVOKED)
            return
        except _RateLimited as exc:
            result.update(
                ok=False,
                status=429,
                error=ratelimit.reply_rate_limited_message(exc.wait),
                field=None,
            )
        except services.ServiceError as exc:
            result.update(
                ok=False, status=exc.status, error=exc.message, field=exc.field
            )
        else:
            result.update(ok=True, status=202)
        await self.send_json(result)

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
