"""A poller process for the benchmarks: product and naive ticks on demand.

Started as `python -m benchmarks.poller_proc` with the CARDSAVR_* environment
pointing at the benchmark's sandbox; answers one JSON line per command read on
stdin. Open websockets are stood in for by channel-layer listeners, one per
cardholder in the same three groups the consumer joins, each draining its
channel the way a consumer does; a tick counts until every push was received.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django

django.setup()

import asyncio  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

from asgiref.sync import sync_to_async  # noqa: E402
from channels.layers import InMemoryChannelLayer, get_channel_layer  # noqa: E402
from django.conf import settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from benchmarks import common, product  # noqa: E402
from benchmarks.naive import NaivePoller  # noqa: E402
from jobs import events  # noqa: E402
from jobs.cardsavr_client import get_client  # noqa: E402
from jobs.models import Job  # noqa: E402


def _activate(count: int) -> int:
    """Keep the first `count` jobs active; park the rest where no poller looks."""
    ids = list(Job.objects.order_by("pk").values_list("pk", flat=True))
    now = timezone.now()
    # updated_at moves as it would for any change made through the ORM.
    Job.objects.filter(pk__in=ids[:count]).update(vanished_at=None, updated_at=now)
    Job.objects.filter(pk__in=ids[count:]).update(vanished_at=now, updated_at=now)
    return min(count, len(ids))


class Listeners:
    """Stand-ins for the consumers of open sockets, on one layer."""

    def __init__(self, layer) -> None:
        self.layer = layer
        self.received = 0
        self.tasks: list[asyncio.Task] = []

    async def add(self, cardholder_ids: list[int]) -> None:
        for cardholder_id in cardholder_ids:
            channel = await self.layer.new_channel()
            for group in (
                events.cardholder_group(cardholder_id),
                events.user_group(cardholder_id),
                events.BROADCAST_GROUP,
            ):
                await self.layer.group_add(group, channel)
            self.tasks.append(asyncio.ensure_future(self._drain(channel)))

    async def _drain(self, channel: str) -> None:
        while True:
            await self.layer.receive(channel)
            self.received += 1

    async def settle(self, expected: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.received < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.001)


class Bench:
    def __init__(self) -> None:
        self.product_listeners = Listeners(get_channel_layer())
        self.naive_layer = InMemoryChannelLayer(
            **settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
        )
        self.naive_listeners = Listeners(self.naive_layer)
        self.poller = product.make_poller(1.0)
        self.naive: NaivePoller | None = None

    async def cmd_listen(self, product: list[int], naive: list[int]) -> dict:
        await self.product_listeners.add(product)
        await self.naive_listeners.add(naive)
        return {"listening": len(product) + len(naive)}

    async def cmd_activate(self, count: int) -> dict:
        return {"active": await sync_to_async(_activate)(count)}

    async def cmd_tick(self, mode: str) -> dict:
        if mode == "naive" and self.naive is None:
            self.naive = NaivePoller(get_client(), self.naive_layer)
        listeners = (
            self.product_listeners if mode == "product" else self.naive_listeners
        )
        before = listeners.received
        gc.collect()
        cpu = time.process_time()
        started = time.perf_counter()
        if mode == "product":
            stats = await product.tick(self.poller)
        else:
            stats = await self.naive.tick()
        tick_ms = (time.perf_counter() - started) * 1000
        await listeners.settle(before + stats["changed"])
        return {
            **stats,
            "cpu_ms": (time.process_time() - cpu) * 1000,
            "wall_ms": (time.perf_counter() - started) * 1000,
            "tick_ms": tick_ms,
            "pushed": listeners.received - before,
        }

    async def cmd_memory(self, mode: str) -> dict:
        """Bytes a tick holds per tracked job: what stays between ticks plus
        the peak within one, above what the process held before it polled."""
        gc.collect()
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
        rss_before = common.rss_kib()
        if mode == "product":
            poller = product.make_poller(1.0)
            for _ in range(2):
                await product.tick(poller)
        else:
            poller = NaivePoller(get_client(), self.naive_layer)
            for _ in range(2):
                await poller.tick()
        # Garbage of earlier ticks is not what a tracked job holds.
        gc.collect()
        tracemalloc.reset_peak()
        if mode == "product":
            stats = await product.tick(poller)
        else:
            stats = await poller.tick()
        await asyncio.sleep(0.2)
        peak = tracemalloc.get_traced_memory()[1]
        gc.collect()
        current = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        jobs = max(1, stats["jobs"])
        return {
            "jobs": stats["jobs"],
            "retained_bytes_per_job": (current - baseline) / jobs,
            "peak_bytes_per_job": (peak - baseline) / jobs,
            "rss_kib_delta": common.rss_kib() - rss_before,
            "keep": id(poller),
        }

    async def dispatch(self, line: str) -> None:
        try:
            command = json.loads(line)
            handler = getattr(self, "cmd_" + command.pop("cmd"))
            result = await handler(**command)
        except Exception as exc:  # reported to the harness
            result = {"error": f"{type(exc).__name__}: {exc}"}
        common.answer(result)


async def main() -> None:
    bench = Bench()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    common.answer({"ready": True, "pid": os.getpid()})
    while line := await reader.readline():
        await bench.dispatch(line)


if __name__ == "__main__":
    asyncio.run(main())
