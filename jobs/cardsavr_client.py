"""The portal's CardSavr clients: one per running event loop.

An httpx client belongs to the loop that opened it, and the web server, the
poller and management commands each run their own loop, so each gets its own
client (and CardSavr session), built on first use from settings.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from django.conf import settings

from cardsavr.client import CardSavrClient
from cardsavr.config import ClientConfig

logger = logging.getLogger(__name__)

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CardSavrClient] = (
    weakref.WeakKeyDictionary()
)


def client_config_from_settings() -> ClientConfig:
    return ClientConfig(
        api_url=settings.CARDSAVR_API_URL,
        app_name=settings.CARDSAVR_APP_NAME,
        app_key=settings.CARDSAVR_APP_KEY,
        username=settings.CARDSAVR_USERNAME,
        password=settings.CARDSAVR_PASSWORD,
        ca_file=settings.CARDSAVR_CA_FILE or None,
        encryption=settings.CARDSAVR_ENCRYPTION,
        timeout=settings.CARDSAVR_TIMEOUT,
        financial_institution=settings.CARDSAVR_FINANCIAL_INSTITUTION,
    )


def get_client() -> CardSavrClient:
    """The running loop's client; must be called from inside a coroutine."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        _forget_closed_loops()
        client = CardSavrClient(client_config_from_settings())
        _clients[loop] = client
    return client


def _forget_closed_loops() -> None:
    for other in [other for other in _clients if other.is_closed()]:
        _clients.pop(other, None)


async def close_clients() -> None:
    """Close the running loop's client and forget clients of closed loops.

    A client of another, still running loop is left alone: it can only be
    closed from its own loop.
    """
    loop = asyncio.get_running_loop()
    client = _clients.pop(loop, None)
    _forget_closed_loops()
    if client is not None:
        await client.close()


def reset_clients() -> None:
    """Forget every client without closing it (tests that change settings)."""
    _clients.clear()
