"""A live portal for Debian's Chromium: daphne in-process, the sandbox, a poller.

daphne serves the full ASGI application (pages, static files, the websocket)
on a free port from a background thread; the poller runs as a task in the
same event loop while a test runs. Pages and the test share one SQLite file,
since an in-memory database cannot be shared between threads safely.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

# daphne.server installs Twisted's asyncio reactor on import: first.
from daphne.server import Server  # isort: skip

import pytest
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.test import Client
from twisted.internet import reactor

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
POLL_INTERVAL = 0.2

_database = settings.DATABASES["default"]
if _database["ENGINE"].endswith("sqlite3") and not (_database.get("TEST") or {}).get(
    "NAME"
):
    # Threads of the live server need the test database in a file.
    _database.setdefault("TEST", {})["NAME"] = os.path.join(
        tempfile.mkdtemp(prefix="portal-browser-db-"), "test.sqlite3"
    )


def _browser_available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return os.path.exists(CHROMIUM)


def pytest_collection_modifyitems(config, items):
    if _browser_available():
        return
    if os.environ.get("CI", "").lower() == "true":
        # In CI the browser suite must run: a missing browser is a failure.
        raise pytest.UsageError(
            f"Browser tests need {CHROMIUM} and the playwright package."
        )
    skip = pytest.mark.skip(reason=f"{CHROMIUM} or playwright is not installed")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


class LivePortal:
    """daphne on a free port in a thread; `run` executes coroutines in its loop."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.url = ""
        self._ready = threading.Event()
        from cardsavr_portal.asgi import application

        self.server = Server(
            application=ASGIStaticFilesHandler(application),
            endpoints=["tcp:port=0:interface=127.0.0.1"],
            signal_handlers=False,
            ready_callable=self._on_ready,
            verbosity=0,
        )
        self.thread = threading.Thread(
            target=self.server.run, name="live-portal", daemon=True
        )

    def _on_ready(self) -> None:
        self.loop = asyncio.get_event_loop()
        self._ready.set()

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.listening_addresses:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("daphne did not start listening")
            time.sleep(0.02)
        self._ready.wait(5)
        host, port = self.server.listening_addresses[0]
        self.url = f"http://{host}:{port}"

    def idle(self, timeout: float = 5) -> bool:
        """Wait until no application instance (page, socket) is still running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [
                details["application_instance"]
                for details in list(self.server.connections.values())
                if details.get("application_instance") is not None
            ]
            if all(instance.done() for instance in running):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        from jobs.cardsavr_client import close_clients

        self.run(close_clients())
        reactor.callFromThread(reactor.stop)
        self.thread.join(timeout=15)

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


@pytest.fixture(scope="session")
def live_portal(sandbox_server) -> Iterator[LivePortal]:
    from jobs.cardsavr_client import reset_clients

    saved = {
        name: getattr(settings, name)
        for name in (
            "CARDSAVR_API_URL",
            "CARDSAVR_APP_NAME",
            "CARDSAVR_APP_KEY",
            "CARDSAVR_USERNAME",
            "CARDSAVR_PASSWORD",
            "CARDSAVR_CA_FILE",
        )
    }
    # Session-wide: the live server outlives any one test's settings fixture.
    settings.CARDSAVR_API_URL = sandbox_server.url
    settings.CARDSAVR_APP_NAME = sandbox_server.config.app_name
    settings.CARDSAVR_APP_KEY = sandbox_server.config.app_key
    settings.CARDSAVR_USERNAME = sandbox_server.config.username
    settings.CARDSAVR_PASSWORD = sandbox_server.config.password
    settings.CARDSAVR_CA_FILE = sandbox_server.ca_file
    reset_clients()
    portal = LivePortal()
    portal.start()
    yield portal
    portal.stop()
    for name, value in saved.items():
        setattr(settings, name, value)
    reset_clients()


@pytest.fixture
def live(live_portal, sandbox, transactional_db) -> Iterator[LivePortal]:
    """The live portal with merchant sites synced and a poller running."""
    from jobs import services
    from jobs.poller import Poller

    live_portal.run(services.sync_merchant_sites())
    stop: dict[str, asyncio.Event] = {}
    task: dict[str, asyncio.Future] = {}

    async def start_poller() -> None:
        stop["event"] = asyncio.Event()
        task["poller"] = asyncio.ensure_future(
            Poller(interval=POLL_INTERVAL).run(stop["event"])
        )

    live_portal.run(start_poller())
    yield live_portal

    async def stop_poller() -> None:
        stop["event"].set()
        await asyncio.wait_for(task["poller"], timeout=10)

    live_portal.run(stop_poller())


@pytest.fixture
def cardholder(live):
    """A cardholder registered at the sandbox, with a card on file."""
    from jobs import services

    username = f"shopper{time.monotonic_ns() % 10**9}"
    password = "browser-test-pass-9"
    holder = live.run(services.create_cardholder(username, password))
    live.run(
        services.add_card(
            holder,
            pan="4111111111111111",
            cvv="123",
            expiration_month="12",
            expiration_year=str(time.gmtime().tm_year + 2),
            name_on_card="Browser Test",
            address={
                "address1": "1 Main Street",
                "city": "Seattle",
                "subnational": "WA",
                "postal_code": "98101",
            },
        )
    )
    holder.test_password = password
    return holder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running on this thread, which
    # Django takes for async code; the test's own ORM calls (logins, the flush
    # between tests) are plain sync code, so Django is told so meanwhile.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS
            )
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _artifact_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150]


@pytest.fixture
def page(request, browser, live) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1024, "height": 900})
    context.set_default_timeout(15000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.script_errors = errors
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(
            path=str(ARTIFACTS / f"{_artifact_name(request.node.nodeid)}.png"),
            full_page=True,
        )
    context.close()
    # The closed page's socket is handled before the database is locked again.
    live.idle()


@pytest.fixture
def logged_in(page, live, cardholder) -> Callable[[str], Any]:
    """Open a portal path as the cardholder, signed in with a session cookie."""
    client = Client()
    client.force_login(cardholder.user)
    page.context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": live.url,
            }
        ]
    )

    def open_path(path: str = "/") -> Any:
        page.goto(live.url + path)
        return page

    return open_path
