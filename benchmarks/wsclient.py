"""The browser stand-in: holds many websockets and timestamps every frame.

Started as `python -m benchmarks.wsclient`; answers one JSON line per command
read on stdin. A frame is stamped when its bytes come off the socket and kept
as it came; it is parsed only when the records are asked for. A thousand
browsers each read their own socket at once, but this one process reads them
in turn: waking a reader task and parsing JSON per frame (about 0.1 ms here)
made the last frames of a busy tick wait tens of milliseconds behind the
others, a delay no browser would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.frames import Opcode

from benchmarks import common

# Updates are the frames that name this type; snapshots and results do not.
UPDATE_MARK = b'"job.updated"'


class StampingConnection(ClientConnection):
    """Once `holder` is set, text frames go to it with the time their bytes
    were read, instead of to the receive queue."""

    holder: Holder | None = None
    arrived_ns = 0

    def data_received(self, data: bytes) -> None:
        self.arrived_ns = time.time_ns()
        super().data_received(data)

    def process_event(self, event) -> None:
        holder = self.holder
        if holder is not None and getattr(event, "opcode", None) is Opcode.TEXT:
            holder.frame(self.arrived_ns, event.data)
            return
        super().process_event(event)


class Holder:
    def __init__(self) -> None:
        self.sockets: list = []
        self.readers: list[asyncio.Task] = []
        self.expected = 0
        self.received = 0
        self.first_ns = 0
        self.last_ns = 0
        self.done: asyncio.Event | None = None
        self.recording = False
        self.raw: list[tuple[int, bytes]] = []
        self.closed = 0

    async def _open_one(self, url: str, origin: str, session: str) -> None:
        ws = await websockets.connect(
            url,
            origin=origin,
            additional_headers={"Cookie": f"sessionid={session}"},
            compression=None,
            ping_interval=None,
            open_timeout=60,
            max_queue=None,
            create_connection=StampingConnection,
        )
        # The first frame is the snapshot; the socket counts once it arrived.
        first = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if first.get("type") != "jobs.snapshot":
            raise RuntimeError(f"first frame was {first.get('type')!r}")
        self.sockets.append(ws)
        ws.holder = self
        self.readers.append(asyncio.ensure_future(self._watch(ws)))

    def frame(self, arrived_ns: int, data: bytes) -> None:
        if UPDATE_MARK not in data:
            return
        if self.recording:
            self.raw.append((arrived_ns, bytes(data)))
        self.received += 1
        if self.received == 1:
            self.first_ns = arrived_ns
        self.last_ns = arrived_ns
        if self.done is not None and self.received >= self.expected:
            self.done.set()

    async def _watch(self, ws) -> None:
        await ws.wait_closed()
        self.closed += 1

    async def cmd_open(
        self, url: str, origin: str, sessions: list[str], batch: int = 50
    ) -> dict:
        """Open one socket per session, `batch` at a time; a handshake that
        fails is tried again twice (a busy server drops some under load)."""
        started = time.perf_counter()
        errors: set[str] = set()
        pending = list(sessions)
        retried = 0
        for attempt in range(3):
            failed: list[str] = []
            for start in range(0, len(pending), batch):
                chunk = pending[start : start + batch]
                results = await asyncio.gather(
                    *(self._open_one(url, origin, s) for s in chunk),
                    return_exceptions=True,
                )
                for session, result in zip(chunk, results, strict=True):
                    if isinstance(result, BaseException):
                        failed.append(session)
                        errors.add(f"{type(result).__name__}: {result}"[:200])
            if not failed:
                break
            retried += len(failed)
            pending = failed
            await asyncio.sleep(1 + attempt)
        return {
            "open": len(self.sockets) - self.closed,
            "failed": len(failed),
            "retried": retried,
            "errors": sorted(errors)[:5],
            "seconds": time.perf_counter() - started,
        }

    async def cmd_expect(self, count: int) -> dict:
        self.expected, self.received = count, 0
        self.first_ns = self.last_ns = 0
        self.done = asyncio.Event()
        return {"armed": count}

    async def cmd_wait(self, timeout: float = 30) -> dict:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), timeout)
        return {
            "received": self.received,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
        }

    async def cmd_record(self, on: bool) -> dict:
        self.recording = on
        if on:
            self.raw = []
        return {"recording": on}

    async def cmd_records(self) -> dict:
        """[time_ns, job id, status message, version] per update recorded."""
        raw, self.raw = self.raw, []
        records = []
        for arrived_ns, data in raw:
            job = json.loads(data)["job"]
            records.append(
                (arrived_ns, job["id"], job.get("status_message", ""), job["version"])
            )
        return {"records": records}

    async def cmd_alive(self) -> dict:
        """Ping every socket: how many still answer."""
        pongs = await asyncio.gather(
            *(ws.ping() for ws in self.sockets), return_exceptions=True
        )
        waiters = [p for p in pongs if not isinstance(p, BaseException)]
        done = await asyncio.gather(
            *(asyncio.wait_for(w, 30) for w in waiters), return_exceptions=True
        )
        return {"alive": sum(1 for d in done if not isinstance(d, BaseException))}

    async def cmd_close(self) -> dict:
        count = len(self.sockets)
        for start in range(0, count, 200):
            await asyncio.gather(
                *(ws.close() for ws in self.sockets[start : start + 200]),
                return_exceptions=True,
            )
        self.sockets = []
        for reader in self.readers:
            reader.cancel()
        self.readers = []
        self.closed = 0
        return {"closed": count, "rss_kib": common.rss_kib()}


async def main() -> None:
    holder = Holder()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    common.answer({"ready": True, "fd_limit": common.fd_limit()})
    while line := await reader.readline():
        try:
            command = json.loads(line)
            handler = getattr(holder, "cmd_" + command.pop("cmd"))
            result = await handler(**command)
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        common.answer(result)
    await holder.cmd_close()


if __name__ == "__main__":
    asyncio.run(main())
