"""Browser stand-ins for scripted runs: a websocket that behaves like the page,
and an HTTP session that talks to the JSON API.

`PageSocket` keeps what a page keeps: the newest version of every job it was
shown. It applies a pushed job only when its version is newer, reconnects
with backoff and full jitter when the socket closes (the snapshot on connect
resyncs it), and records everything it saw so a test can check order,
duplicates and isolation afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from dataclasses import dataclass, field

import httpx
import websockets

from jobs import events


@dataclass
class Seen:
    at: float
    kind: str  # "snapshot" or "update"
    job_id: int
    version: int
    status: str
    termination_type: str | None
    envelope_id: str | None


@dataclass
class PageSocket:
    host: str
    port: int
    session_key: str
    name: str = ""
    holder: int = 0  # the cardholder pk this page belongs to
    jobs: dict[int, dict] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    upstream: dict | None = None
    upstream_history: list[dict] = field(default_factory=list)
    connects: int = 0
    snapshots: int = 0
    close_codes: list[int | None] = field(default_factory=list)
    # Applied versions that went backwards (never expected), and pushes older
    # than what the page holds (expected after a resync; ignored like the page).
    regressions: list[tuple[int, int, int]] = field(default_factory=list)
    stale_ignored: int = 0
    on_job: object = None  # callable(payload) for tests that react to prompts
    stop_on_close_codes: tuple[int, ...] = ()
    _stopping: bool = False
    _task: asyncio.Task | None = None
    _ws: object = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/jobs/"

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"page-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                async with websockets.connect(
                    self.url,
                    additional_headers={
                        "Cookie": f"sessionid={self.session_key}",
                        "Origin": self.origin,
                    },
                    open_timeout=20,
                    max_size=2**22,
                    ping_interval=None,
                ) as ws:
                    self._ws = ws
                    async for raw in ws:
                        attempt = 0
                        self._handle(json.loads(raw))
                    self.close_codes.append(ws.close_code)
                    if ws.close_code in self.stop_on_close_codes:
                        return
            except (TimeoutError, OSError, websockets.WebSocketException) as exc:
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                self.close_codes.append(code)
                if code in self.stop_on_close_codes:
                    return
            finally:
                self._ws = None
                self.connected.clear()
            # The page's reconnect: exponential backoff with full jitter.
            attempt += 1
            await asyncio.sleep(random.uniform(0, min(5.0, 0.25 * 2**attempt)))

    def _handle(self, message: dict) -> None:
        now = time.monotonic()
        kind = message.get("type")
        if kind == events.SNAPSHOT:
            self.connects += 1
            self.snapshots += 1
            self.connected.set()
            # The snapshot is the database's state: it replaces what the page
            # held, even a version that was ahead (it never should be).
            for job in message.get("jobs", []):
                held = self.jobs.get(job["id"])
                if held is not None and job["version"] < held["version"]:
                    self.regressions.append(
                        (job["id"], held["version"], job["version"])
                    )
                self._apply(job, "snapshot", now)
            if message.get("upstream") is not None:
                self._set_upstream(message["upstream"])
        elif kind == events.JOB_UPDATED:
            job = message["job"]
            held = self.jobs.get(job["id"])
            if held is not None and job["version"] <= held["version"]:
                self.stale_ignored += 1
                return
            self._apply(job, "update", now)
        elif kind == events.UPSTREAM_STATE:
            self._set_upstream(message["state"])
        self.changed.set()

    def _set_upstream(self, state: dict) -> None:
        self.upstream = state
        self.upstream_history.append(dict(state, seen_at=time.monotonic()))

    def _apply(self, job: dict, kind: str, now: float) -> None:
        self.jobs[job["id"]] = job
        request = job.get("credential_request") or {}
        self.seen.append(
            Seen(
                now,
                kind,
                job["id"],
                job["version"],
                job.get("status", ""),
                job.get("termination_type"),
                request.get("envelope_id"),
            )
        )
        if self.on_job is not None:
            self.on_job(self, job)

    async def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))
        return True


def csrf_token() -> str:
    # Django accepts any 32-character alphanumeric secret as an unmasked token
    # when the cookie carries the same value.
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(32))


def api_session(host: str, port: int, session_key: str, **kwargs) -> httpx.AsyncClient:
    """An HTTP client signed in with `session_key`, carrying a CSRF token."""
    token = csrf_token()
    base = f"http://{host}:{port}"
    return httpx.AsyncClient(
        base_url=base,
        cookies={"sessionid": session_key, "csrftoken": token},
        headers={"X-CSRFToken": token, "Origin": base, "Referer": base + "/"},
        timeout=kwargs.pop("timeout", 30.0),
        **kwargs,
    )
