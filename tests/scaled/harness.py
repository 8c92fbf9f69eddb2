"""Real processes on loopback for the scaled suite and the fault drills.

A `Stack` owns a throwaway PostgreSQL database, a private key prefix in a
dedicated Redis database, a temporary directory for logs, and every process it
starts (sandbox, daphne, pollers). Closing it kills those processes by pid,
drops the database and deletes its Redis keys, whatever state the test left.

The machine's PostgreSQL (127.0.0.1:5432, trust auth) and Redis
(127.0.0.1:6379) are started when they are installed but not running. Without
them the tests skip, except in CI (CI=true), where a missing service fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DAPHNE = str(Path(sys.executable).with_name("daphne"))
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# A Redis database no other part of the project uses; keys carry a per-run
# prefix on top, so two runs at once never touch each other's keys.
REDIS_DB = 11
# The sandbox's development credentials (settings' _DEV_DEFAULTS).
SANDBOX_APP_KEY = "VeY9uD0w3zRdrlmIPxnU/l+Vr8w2bbV26E6DxajFu+A="

# Sites whose sign-in is a username and a password and that behave normally.
USABLE_SITES = {
    "Amazon",
    "Apple",
    "Netflix",
    "Spotify",
    "Hulu",
    "Walmart",
    "Target",
    "Uber",
    "Lyft",
    "DoorDash",
    "Grubhub",
    "eBay",
    "Etsy",
    "Best Buy",
    "Costco",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the scaled suite must run in CI)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout):
        return True
    return False


def _run_quietly(argv: list[str]) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(argv, capture_output=True, timeout=60, check=False)


def _wait_for_port(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.2)
    return False


def ensure_postgres() -> None:
    if port_open(PG_HOST, PG_PORT):
        return
    versions = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") and versions.is_dir():
        for version in sorted(os.listdir(versions)):
            _run_quietly(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
            )
    if not _wait_for_port(PG_HOST, PG_PORT, 20):
        unavailable(f"PostgreSQL is not running on {PG_HOST}:{PG_PORT}")


def redis_server_argv(port: int, directory: str, logfile: str) -> list[str]:
    return [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        directory,
        "--logfile",
        logfile,
    ]


def ensure_redis() -> None:
    if port_open(REDIS_HOST, REDIS_PORT):
        return
    if shutil.which("redis-server"):
        Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
        Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
        _run_quietly(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "-::1",
                "--port",
                str(REDIS_PORT),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                "/var/lib/redis",
                "--logfile",
                "/var/log/redis/ci.log",
            ]
        )
    if not _wait_for_port(REDIS_HOST, REDIS_PORT, 10):
        unavailable(f"Redis is not running on {REDIS_HOST}:{REDIS_PORT}")


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else (shutil.which(name) or name)


class PrivatePostgres:
    """A PostgreSQL cluster of one drill's own, in a temporary directory.

    Drills restart it; the machine's shared server is never touched. As root
    the server runs as the postgres user (PostgreSQL refuses to run as root).
    """

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "pg"
        self.data = self.dir / "data"
        self.port = free_port()

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(argv)]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{argv[0]} failed: {result.stdout}{result.stderr}\n{self.server_log()}"
            )

    def server_log(self) -> str:
        try:
            return (self.dir / "server.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _options(self) -> str:
        return (
            f"'-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c max_connections=200'"
        )

    def init(self) -> None:
        if not Path(_pg_bin("initdb")).exists() and not shutil.which("initdb"):
            unavailable("initdb is not installed")
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # The server's user must reach its directory inside ours.
            self.dir.parent.chmod(0o755)
            shutil.chown(self.dir, "postgres")
        self._run(
            _pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", PG_USER,
            "--no-sync",
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-o", self._options(),
            "-l", str(self.dir / "server.log"), "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.SubprocessError):
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                      "stop")  # fmt: skip

    def restart(self) -> None:
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-o", self._options(),
            "-l", str(self.dir / "server.log"), "-m", "fast", "-w", "restart",
        )  # fmt: skip


def pg_connect(dbname: str = "postgres", port: int = PG_PORT):
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=port, user=PG_USER, dbname=dbname, autocommit=True
    )


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Stack:
    """Everything one scaled test run starts, and the means to take it down."""

    token: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    workdir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="portal-scaled-"))
    )
    database: str = ""
    redis_url: str = ""
    pg_port: int = PG_PORT
    procs: dict[str, Proc] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    sandbox_url: str = ""
    private_postgres: PrivatePostgres | None = None

    # -- infrastructure ---------------------------------------------------

    def create_database(self) -> None:
        self.database = f"portal_scaled_{self.token}"
        with pg_connect(port=self.pg_port) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def drop_database(self) -> None:
        if not self.database:
            return
        with contextlib.suppress(Exception), pg_connect(port=self.pg_port) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def use_redis(self, url: str | None = None) -> None:
        self.redis_url = url or f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"

    def redis(self):
        import redis

        return redis.Redis.from_url(self.redis_url)

    def delete_redis_keys(self) -> None:
        if not self.redis_url:
            return
        with contextlib.suppress(Exception):
            client = self.redis()
            keys = list(client.scan_iter(match=f"*{self.token}*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
            client.close()

    @property
    def database_url(self) -> str:
        return f"postgres://{PG_USER}@{PG_HOST}:{self.pg_port}/{self.database}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "CARDSAVR_", "PYTEST_"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE="cardsavr_portal.settings",
            DJANGO_DEBUG="true",
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            CHANNEL_LAYER_PREFIX=f"asgi-{self.token}",
            CACHE_KEY_PREFIX=f"cache-{self.token}",
            CARDSAVR_CA_FILE=str(self.workdir / "sandbox-ca.pem"),
            PYTHONUNBUFFERED="1",
        )
        if self.sandbox_url:
            env["CARDSAVR_API_URL"] = self.sandbox_url
        env.update(self.extra_env)
        env.update(extra)
        return env

    def manage(self, *args: str, timeout: float = 120, **env: str) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    # -- processes --------------------------------------------------------

    def start(self, name: str, argv: list[str], **env: str) -> Proc:
        proc = Proc(name, argv, self.env(**env), self.workdir / f"{name}.log")
        self._spawn(proc)
        self.procs[name] = proc
        return proc

    def _spawn(self, proc: Proc) -> None:
        log = proc.log_path.open("ab")
        proc.popen = subprocess.Popen(
            proc.argv,
            cwd=ROOT,
            env=proc.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group, so closing the stack can signal the
            # process and any child it forked, by this pid only.
            start_new_session=True,
        )
        log.close()

    def restart(self, name: str) -> Proc:
        proc = self.procs[name]
        self.stop(name)
        self._spawn(proc)
        return proc

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash: no clean-up code runs."""
        self.signal(name, signal.SIGKILL)
        self.procs[name].popen.wait(timeout=10)

    def stop(self, name: str, grace: float = 5.0) -> None:
        proc = self.procs[name]
        if not proc.alive():
            return
        self.signal(name, signal.SIGTERM)
        try:
            proc.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.signal(name, signal.SIGKILL)
            proc.popen.wait(timeout=10)

    def start_sandbox(self, speed: float = 20.0) -> str:
        port = free_port()
        self.start(
            "sandbox",
            [
                PYTHON,
                "manage.py",
                "runsandbox",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--speed",
                str(speed),
            ],
            CARDSAVR_API_URL=f"https://127.0.0.1:{port}/",
        )
        self.sandbox_url = f"https://127.0.0.1:{port}/"
        self.wait_for_port("sandbox", port, 30)
        return self.sandbox_url

    def start_daphne(self, name: str, *extra_args: str) -> int:
        port = free_port()
        self.start(
            name,
            [
                DAPHNE,
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "--websocket-max-message-size",
                "65536",
                "--websocket-max-frame-size",
                "65536",
                # Tests share two cores with other suites; a slow handshake
                # is not what they check.
                "--websocket_connect_timeout",
                "30",
                *extra_args,
                "cardsavr_portal.asgi:application",
            ],
        )
        self.wait_for_port(name, port, 30)
        return port

    def ticks_path(self, name: str) -> Path:
        return self.workdir / f"{name}.ticks.jsonl"

    def start_poller(self, name: str, *extra_args: str, **env: str) -> Proc:
        """`manage.py pollcardsavr` under the probe that records its ticks."""
        return self.start(
            name,
            [
                PYTHON,
                "-m",
                "tests.scaled.poller_probe",
                str(self.ticks_path(name)),
                *extra_args,
            ],
            **env,
        )

    def sandbox_stats(self) -> dict:
        return self.sandbox_call("GET", "/_sandbox/stats")

    def sandbox_call(self, method: str, path: str, body: dict | None = None):
        import ssl

        import httpx

        response = httpx.request(
            method,
            self.sandbox_url.rstrip("/") + path,
            json=body,
            headers={"x-sandbox-key": SANDBOX_APP_KEY},
            verify=ssl.create_default_context(
                cafile=str(self.workdir / "sandbox-ca.pem")
            ),
            timeout=30,
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def seed(self, cardholders: int, prefix: str = "scaled") -> dict:
        out = self.workdir / f"seed-{prefix}.json"
        result = subprocess.run(
            [
                PYTHON,
                "-m",
                "tests.scaled.seed",
                str(out),
                "--cardholders",
                str(cardholders),
                "--prefix",
                prefix,
            ],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"seeding failed:\n{result.stdout}\n{result.stderr}")
        return json.loads(out.read_text())

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with pg_connect(self.database, port=self.pg_port) as conn:
            return conn.execute(sql, params).fetchall()

    def wait_for_port(self, name: str, port: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if port_open("127.0.0.1", port):
                return
            if not self.procs[name].alive():
                break
            time.sleep(0.1)
        raise AssertionError(
            f"{name} did not listen on port {port}:\n{self.procs[name].log()[-4000:]}"
        )

    def start_private_redis(self, name: str = "redis") -> str:
        """A redis-server of this stack's own, which a drill may kill and restart."""
        port = free_port()
        directory = self.workdir / name
        directory.mkdir(exist_ok=True)
        proc = Proc(
            name,
            redis_server_argv(port, str(directory), str(directory / "redis.log")),
            dict(os.environ),
            self.workdir / f"{name}.log",
        )
        self._spawn(proc)
        self.procs[name] = proc
        if not _wait_for_port("127.0.0.1", port, 10):
            raise AssertionError(f"private redis did not start:\n{proc.log()}")
        return f"redis://127.0.0.1:{port}/0"

    def close(self) -> None:
        for name in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(name, grace=3.0)
        if self.private_postgres is not None:
            self.private_postgres.stop()
        else:
            self.drop_database()
        self.delete_redis_keys()
        if os.environ.get("PORTAL_KEEP_SCALED_LOGS"):
            return
        shutil.rmtree(self.workdir, ignore_errors=True)

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for proc in self.procs.values():
            parts.append(f"===== {proc.name} (pid {proc.popen and proc.pid}) =====")
            parts.append(proc.log()[-tail:])
        return "\n".join(parts)


@contextlib.contextmanager
def running_stack(
    *, private_postgres: bool = False, private_redis: bool = False, **extra_env: str
) -> Iterator[Stack]:
    """A Stack with a fresh, migrated database, ready for processes.

    By default it uses the machine's PostgreSQL and Redis; a drill that
    restarts one of them asks for a private one instead.
    """
    if private_postgres:
        if not shutil.which("pg_ctlcluster") and not Path(_pg_bin("pg_ctl")).exists():
            unavailable("PostgreSQL server binaries are not installed")
    else:
        ensure_postgres()
    if private_redis:
        if not shutil.which("redis-server"):
            unavailable("redis-server is not installed")
    else:
        ensure_redis()
    stack = Stack(extra_env=dict(extra_env))
    try:
        if private_postgres:
            stack.private_postgres = PrivatePostgres(stack.workdir)
            stack.private_postgres.init()
            stack.pg_port = stack.private_postgres.port
        stack.create_database()
        stack.use_redis(stack.start_private_redis() if private_redis else None)
        stack.manage("migrate", "--noinput", "--skip-checks", timeout=180)
        yield stack
    except BaseException:
        sys.stderr.write(stack.logs())
        raise
    finally:
        stack.close()


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data))
