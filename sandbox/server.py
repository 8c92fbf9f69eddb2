"""Serving the sandbox over HTTPS with uvicorn, standalone or inside a loop."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import uvicorn

from .app import SandboxApp, create_app
from .certs import ensure_certificate
from .config import SandboxConfig
from .engine import Engine

logger = logging.getLogger(__name__)


class _QuietDrops(logging.Filter):
    """Hide uvicorn's error line for connections the 'drop' fault cuts on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the host program."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def uvicorn_config(
    app: SandboxApp, cert_file: str, key_file: str, host: str, port: int
) -> uvicorn.Config:
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=cert_file,
        ssl_keyfile=key_file,
        lifespan="on",
        ws="none",
        access_log=False,  # the app logs one line per request itself
        log_config=None,
        timeout_keep_alive=30,
    )


def build_server(
    config: SandboxConfig,
    host: str,
    port: int,
    ca_file: str | os.PathLike,
    engine: Engine | None = None,
    *,
    handle_signals: bool = False,
) -> tuple[uvicorn.Server, SandboxApp]:
    cert_path, key_path = ensure_certificate(ca_file)
    app = create_app(config, engine)
    server_class = uvicorn.Server if handle_signals else _EmbeddedServer
    server = server_class(
        uvicorn_config(app, str(cert_path), str(key_path), host, port)
    )
    return server, app


async def serve(
    config: SandboxConfig,
    host: str,
    port: int,
    ca_file: str | os.PathLike,
    *,
    engine: Engine | None = None,
    handle_signals: bool = False,
) -> None:
    """Run the sandbox until cancelled; embeddable in any asyncio loop.

    With ``handle_signals`` (standalone use) Ctrl-C shuts it down gracefully;
    embedded, the host program owns the signals and cancels this coroutine.
    """
    server, app = build_server(
        config, host, port, ca_file, engine, handle_signals=handle_signals
    )
    logger.info(
        "CardSavr sandbox on https://%s:%s/ (app %s, agent %s, speed %sx); "
        "clients trust %s",
        f"[{host}]" if ":" in host else host,
        port,
        config.app_name,
        config.username,
        f"{config.speed:g}",
        ca_file,
    )
    logger.info(
        "Use merchant username good_email; the password picks the outcome "
        "(no_tfa, tfa, tfa_message, security, fail_...): see sandbox/README.md"
    )
    try:
        await server.serve()
    finally:
        await app.stop()
