"""Helpers shared by the benchmarks: statistics, process meters, child processes.

Nothing here imports Django, so the child processes can set their own settings
before Django starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# The integrator key the benchmark's sandbox and portal share (base64 of 32
# bytes, made up for the benchmark).
BENCH_APP_KEY = "YmVuY2htYXJrLW9ubHktYXBwLWtleS0zMi1ieXRlcyE="

VERSIONED = (
    "Django",
    "channels",
    "daphne",
    "Twisted",
    "httpx",
    "httpcore",
    "uvicorn",
    "websockets",
    "asgiref",
)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def loglog_slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of log(y) against log(x)."""
    import math

    xs = [math.log(x) for x, y in points if x > 0 and y > 0]
    ys = [math.log(y) for x, y in points if x > 0 and y > 0]
    if len(xs) < 2:
        return float("nan")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU of a process (all its threads), from /proc."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kib(pid: int | None = None) -> int:
    with open(f"/proc/{pid or 'self'}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE // 1024


def workdir() -> str:
    """The run's temporary directory (set by benchmarks.run)."""
    return os.environ["BENCH_WORKDIR"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine() -> dict:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    import sqlite3

    with open("/proc/meminfo") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    cpu_model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "fd_limit": fd_limit(),
        # Other work on the machine inflates wall times (not CPU per work).
        "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
        "versions": versions,
    }


class Child:
    """A child Python process spoken to in JSON lines over stdin/stdout."""

    def __init__(self, module: str, *args: str, env: dict | None = None):
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(
            [PYTHON, "-m", module, *args],
            cwd=REPO_DIR,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )
        self.pid = self.proc.pid

    def read(self, timeout: float = 300) -> dict:
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise TimeoutError(f"no answer from {self.describe()}")
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.describe()} exited:\n{self.tail()}")
                if line.startswith("{"):
                    return json.loads(line)

    def call(self, timeout: float = 300, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer = self.read(timeout)
        if "error" in answer:
            raise RuntimeError(f"{self.describe()}: {answer['error']}\n{self.tail()}")
        return answer

    def describe(self) -> str:
        return f"{' '.join(self.proc.args[2:4])} (pid {self.pid})"

    def tail(self, chars: int = 4000) -> str:
        self.log.seek(0)
        return self.log.read()[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self.log.close()


@contextmanager
def children(*items: Child):
    try:
        yield items
    finally:
        for child in items:
            child.stop()


_STARTED = time.monotonic()


def log(message: str, *args) -> None:
    """Progress on stderr, with seconds since the run started."""
    text = message % args if args else message
    print(f"[{time.monotonic() - _STARTED:7.1f} s] {text}", file=sys.stderr, flush=True)


def answer(payload: dict) -> None:
    """Write one JSON line for the parent (used by child processes)."""
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()
