"""Running a sandbox in a background thread for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .config import SandboxConfig
from .engine import Engine
from .server import build_server


@dataclass
class RunningSandbox:
    url: str  # "https://127.0.0.1:<port>/"
    ca_file: str
    config: SandboxConfig
    engine: Engine


@contextlib.contextmanager
def run_sandbox(
    config: SandboxConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    cert_dir: str | os.PathLike | None = None,
) -> Iterator[RunningSandbox]:
    """Serve the sandbox over HTTPS on its own thread and event loop.

    ``port=0`` picks a free port; the certificate is created in ``cert_dir``
    (a temporary directory by default) unless one is already there.
    """
    with contextlib.ExitStack() as stack:
        if cert_dir is None:
            cert_dir = stack.enter_context(tempfile.TemporaryDirectory())
        ca_file = os.path.join(cert_dir, "sandbox-ca.pem")
        engine = Engine(config)
        server, _app = build_server(config, host, port, ca_file, engine)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio only turns Nagle off (TCP_NODELAY) on
        # sockets that say they are TCP, and with Nagle on every response
        # waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        stack.callback(sock.close)
        bound_port = sock.getsockname()[1]
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)

        thread = threading.Thread(target=run, name="cardsavr-sandbox", daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if failure or not thread.is_alive():
                raise RuntimeError("the sandbox did not start") from (
                    failure[0] if failure else None
                )
            if time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not start within 15 seconds")
            time.sleep(0.01)
        url_host = f"[{host}]" if ":" in host else host
        try:
            yield RunningSandbox(
                f"https://{url_host}:{bound_port}/", ca_file, config, engine
            )
        finally:
            server.should_exit = True
            thread.join(timeout=10)
