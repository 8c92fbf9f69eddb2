"""One daphne process serving the portal, steered by the harness over stdin.

Started by the benchmarks as `python -m benchmarks.portal_proc`; prints one JSON
line with its port, then answers one JSON line per command read on stdin. The
commands run on daphne's own event loop, so pushes go out exactly as the
product's would from inside the web process.
"""

from __future__ import annotations

import os
import sys
import threading
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import daphne.server
import django

django.setup()

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

from channels.layers import get_channel_layer  # noqa: E402
from twisted.internet import reactor  # noqa: E402

from benchmarks import common  # noqa: E402
from cardsavr_portal.asgi import application as portal_application  # noqa: E402
from jobs import events  # noqa: E402

REPLY_PATH = re.compile(r"^/api/jobs/(\d+)/reply/$")


class Bench:
    def __init__(self) -> None:
        self.server: daphne.server.Server | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.payloads: list[tuple[str, dict]] = []
        self.reply_arrivals: list[tuple[int, int]] = []
        self.poll_arrivals: list[tuple[int, list[int]]] = []
        self.poller_task: asyncio.Task | None = None

    async def application(self, scope, receive, send):
        if scope["type"] == "http":
            match = REPLY_PATH.match(scope.get("path", ""))
            if match and scope.get("method") == "POST":
                self.reply_arrivals.append((int(match[1]), time.time_ns()))
        elif scope["type"] == "websocket":
            receive = self.stamp_replies(receive)
        return await portal_application(scope, receive, send)

    def stamp_replies(self, receive):
        """Stamp reply frames as the application takes them from daphne."""

        async def stamped():
            message = await receive()
            if message["type"] == "websocket.receive":
                text = message.get("text") or ""
                if text.startswith('{"type": "reply"'):
                    self.reply_arrivals.append(
                        (json.loads(text)["job_id"], time.time_ns())
                    )
            return message

        return stamped

    # Commands (each returns the JSON answer).

    async def cmd_rss(self) -> dict:
        return {
            "rss_kib": common.rss_kib(),
            "connections": len(self.server.connections),
        }

    async def cmd_prepare_fanout(self, updates: list) -> dict:
        """Keep [cardholder_id, payload] pairs ready so a tick only pushes."""
        self.payloads = [
            (events.cardholder_group(cardholder_id), payload)
            for cardholder_id, payload in updates
        ]
        return {"prepared": len(self.payloads)}

    async def cmd_fanout(self, seq: int) -> dict:
        """One tick: one update for each prepared cardholder, by the push path."""
        layer = get_channel_layer()
        started_ns = time.time_ns()
        cpu = time.process_time()
        for group, payload in self.payloads:
            payload["version"] = seq
            await layer.group_send(
                group, {"type": events.JOB_CHANGED_EVENT, "job": payload}
            )
        return {
            "started_ns": started_ns,
            "send_cpu_ms": (time.process_time() - cpu) * 1000,
            "send_wall_ms": (time.time_ns() - started_ns) / 1e6,
        }

    async def cmd_reply_arrivals(self) -> dict:
        arrivals, self.reply_arrivals = self.reply_arrivals, []
        return {"arrivals": arrivals}

    async def cmd_start_poller(self, interval: float) -> dict:
        from benchmarks import product

        self.poller_task = asyncio.ensure_future(
            product.run_poller_forever(interval, self.poll_arrivals)
        )
        return {"started": True}

    async def cmd_start_naive(self, interval: float) -> dict:
        from benchmarks import naive, product

        product.watch_list_reads(self.poll_arrivals)
        product.watch_job_reads(self.poll_arrivals)
        self.poller_task = asyncio.ensure_future(
            naive.run_forever(interval, get_channel_layer())
        )
        return {"started": True}

    async def cmd_stop_poller(self) -> dict:
        if self.poller_task is not None:
            self.poller_task.cancel()
            with contextlib.suppress(BaseException):
                await self.poller_task
            self.poller_task = None
        return {"stopped": True}

    async def cmd_poll_arrivals(self) -> dict:
        arrivals, self.poll_arrivals[:] = list(self.poll_arrivals), []
        return {"arrivals": arrivals}

    async def dispatch(self, line: str) -> None:
        try:
            command = json.loads(line)
            handler = getattr(self, "cmd_" + command.pop("cmd"))
            result = await handler(**command)
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        common.answer(result)

    def read_commands(self) -> None:
        for line in sys.stdin:
            if line.strip():
                future = asyncio.run_coroutine_threadsafe(
                    self.dispatch(line), self.loop
                )
                future.result()
        reactor.callFromThread(reactor.stop)


def main() -> None:
    bench = Bench()
    server = daphne.server.Server(
        application=bench.application,
        endpoints=["tcp:port=0:interface=127.0.0.1"],
        signal_handlers=False,
        verbosity=0,
    )
    bench.server = server

    def announce() -> None:
        if not server.listening_addresses:
            reactor.callLater(0.05, announce)
            return
        bench.loop = asyncio.get_event_loop()
        threading.Thread(target=bench.read_commands, daemon=True).start()
        common.answer({"port": server.listening_addresses[0][1], "pid": os.getpid()})

    reactor.callWhenRunning(announce)
    server.run()


if __name__ == "__main__":
    main()
