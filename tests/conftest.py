"""Shared fixtures: a CardSavr sandbox over HTTPS, and the portal pointed at it."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
from collections.abc import Iterator

import pytest

from cardsavr import crypto
from sandbox.config import SandboxConfig
from sandbox.testing import RunningSandbox, run_sandbox

# Fast enough that a successful job takes about a second, slow enough that
# a test sees the intermediate statuses; a credential request waits 8 s.
SANDBOX_SPEED = 30.0


def sandbox_config(**overrides: object) -> SandboxConfig:
    values: dict = {
        "app_name": "portal_test_app",
        "app_key": crypto.b64e(os.urandom(32)),
        "username": "portal_test_agent",
        "password": "portal-test-agent-password",
        "speed": SANDBOX_SPEED,
    }
    values.update(overrides)
    return SandboxConfig(**values)


@pytest.fixture(scope="session")
def sandbox_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningSandbox]:
    """One sandbox for the whole run, on a free port, with its own certificate."""
    cert_dir = tmp_path_factory.mktemp("sandbox-cert")
    with run_sandbox(sandbox_config(), cert_dir=cert_dir) as running:
        yield running


@pytest.fixture
def sandbox(sandbox_server: RunningSandbox) -> Iterator[RunningSandbox]:
    """The shared sandbox with no faults left over from another test."""
    sandbox_server.engine.faults.clear()
    yield sandbox_server
    sandbox_server.engine.faults.clear()


def _reset_portal_clients() -> None:
    try:
        module = importlib.import_module("jobs.cardsavr_client")
    except ImportError:
        return
    reset = getattr(module, "reset_clients", None)
    if reset is None:
        return
    result = reset()
    if inspect.isawaitable(result):
        asyncio.run(result)


@pytest.fixture
def portal_on_sandbox(sandbox: RunningSandbox, settings) -> Iterator[RunningSandbox]:
    """Django settings CARDSAVR_* aimed at the running sandbox."""
    config = sandbox.config
    settings.CARDSAVR_API_URL = sandbox.url
    settings.CARDSAVR_APP_NAME = config.app_name
    settings.CARDSAVR_APP_KEY = config.app_key
    settings.CARDSAVR_USERNAME = config.username
    settings.CARDSAVR_PASSWORD = config.password
    settings.CARDSAVR_CA_FILE = sandbox.ca_file
    _reset_portal_clients()
    yield sandbox
    _reset_portal_clients()


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Rate-limit counters and CardSavr reachability live in the cache; each
    test starts without what an earlier one left there."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def one_ratelimit_window(monkeypatch):
    """Put every attempt a test makes in one rate-limit window.

    Windows end on the clock (quarter hours for sign-ins), so a test whose
    attempts straddle an end sees its count start again.
    """
    from types import SimpleNamespace

    from jobs import ratelimit

    # Well inside the windows of every limit the tests use.
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: 1.8e9 + 7.0))
