"""A sandbox on a hand-moved clock, for tests that step through time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.clock import ManualClock
from sandbox.testing import RunningSandbox, run_sandbox
from tests.conftest import sandbox_config

from .wire import WireClient


@pytest.fixture(scope="module")
def manual_sandbox(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningSandbox]:
    """Speed 1 and a clock that moves only when a test advances it."""
    config = sandbox_config(speed=1.0, clock=ManualClock(), seed=11)
    with run_sandbox(config, cert_dir=tmp_path_factory.mktemp("cert")) as running:
        yield running


@pytest.fixture
def clock(manual_sandbox: RunningSandbox) -> ManualClock:
    return manual_sandbox.config.clock


@pytest.fixture
async def client(manual_sandbox: RunningSandbox):
    manual_sandbox.engine.faults.clear()
    async with WireClient(manual_sandbox) as wire:
        await wire.login()
        yield wire


@pytest.fixture
async def live_client(sandbox: RunningSandbox):
    """A logged-in wire client on the shared real-time sandbox."""
    async with WireClient(sandbox) as wire:
        await wire.login()
        yield wire
