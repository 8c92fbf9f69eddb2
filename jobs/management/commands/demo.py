"""Sandbox, portal and poller in one process: the quickest way to try the portal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from argparse import ArgumentParser
from datetime import date
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async

# daphne.server installs Twisted's asyncio reactor on import; it must come
# before anything else imports a reactor.
from daphne.server import Server
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max
from twisted.internet import defer, reactor

from jobs import services
from jobs.cardsavr_client import close_clients, get_client
from jobs.models import Card, Cardholder, Job
from jobs.poller import Poller
from sandbox.config import SandboxConfig
from sandbox.engine import Engine
from sandbox.server import serve

logger = logging.getLogger(__name__)

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-cardholder-pass"
# A test card number: the sandbox takes it, no bank issued it.
DEMO_PAN = "4111111111111111"
DEMO_CVV = "123"
DEMO_ADDRESS = {
    "address1": "1 Main Street",
    "city": "Seattle",
    "subnational": "WA",
    "postal_code": "98101",
}
SANDBOX_START_TIMEOUT = 20.0


async def _wait_for_port(host: str, port: int, task: asyncio.Task) -> None:
    """Return once something accepts connections on host:port."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SANDBOX_START_TIMEOUT
    while True:
        if task.done():
            task.result()  # raises what stopped the sandbox
            raise CommandError("The sandbox stopped while starting.")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                raise CommandError(
                    f"The sandbox did not listen on {host}:{port} within "
                    f"{SANDBOX_START_TIMEOUT:.0f} s."
                ) from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


def _demo_user_state() -> tuple[Cardholder | None, bool]:
    holder = Cardholder.objects.filter(user__username=DEMO_USERNAME).first()
    user = get_user_model().objects.filter(username=DEMO_USERNAME).first()
    if user is not None:
        # The printed login must work, whatever an earlier run set.
        user.set_password(DEMO_PASSWORD)
        user.save(update_fields=["password"])
    return holder, user is not None


def _reregistered(holder: Cardholder, cardsavr_id: int) -> Cardholder:
    # The embedded sandbox starts empty: the cardholder and card of an earlier
    # run are unknown to it, so the demo login gets fresh ones.
    Cardholder.objects.filter(pk=holder.pk).update(cardsavr_id=cardsavr_id)
    Card.objects.filter(cardholder=holder).delete()
    holder.refresh_from_db()
    return holder


async def seed_demo_cardholder(webhook_url: str) -> Cardholder:
    """The demo login with a CardSavr cardholder and a card; safe to repeat."""
    holder, user_exists = await sync_to_async(_demo_user_state)()
    if holder is None and user_exists:
        raise CommandError(
            f"A login named {DEMO_USERNAME!r} exists without a cardholder; "
            "remove it or use another database."
        )
    if holder is None:
        holder = await services.create_cardholder(DEMO_USERNAME, DEMO_PASSWORD)
    else:
        answer = await get_client().create_cardholder(
            cuid=holder.cuid, webhook_url=webhook_url or None
        )
        holder = await sync_to_async(_reregistered)(holder, int(answer["id"]))
    await services.add_card(
        holder,
        pan=DEMO_PAN,
        cvv=DEMO_CVV,
        expiration_month="12",
        expiration_year=str(date.today().year + 3),
        name_on_card="Demo Cardholder",
        address=DEMO_ADDRESS,
    )
    return holder


def sandbox_engine(config: SandboxConfig) -> Engine:
    """A fresh sandbox whose new ids cannot collide with rows of earlier runs.

    The embedded sandbox forgets everything when it stops, and numbers its
    cardholders, cards, accounts and jobs from fixed starts; the database
    remembers them, and its CardSavr ids are unique.
    """
    engine = Engine(config)
    engine.start_ids_after(
        cardholder=Cardholder.objects.aggregate(m=Max("cardsavr_id"))["m"],
        card=Card.objects.aggregate(m=Max("cardsavr_id"))["m"],
        account=Job.objects.aggregate(m=Max("account_id"))["m"],
        job=Job.objects.aggregate(m=Max("cardsavr_id"))["m"],
    )
    return engine


class Command(BaseCommand):
    help = (
        "Run the CardSavr sandbox, the portal (daphne) and the poller in one "
        "process, with a demo login. Ctrl-C stops all three."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        api_url = urllib.parse.urlsplit(settings.CARDSAVR_API_URL)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--sandbox-port",
            type=int,
            default=api_url.port or 8100,
            help="Defaults to CARDSAVR_API_URL's port, so other commands reach it.",
        )
        parser.add_argument(
            "--speed",
            type=float,
            default=1.0,
            help="Sandbox speed: 10 runs every scripted step ten times faster.",
        )
        parser.add_argument(
            "--poll-interval", type=float, default=None, help="Seconds between polls."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["speed"] <= 0:
            raise CommandError("--speed must be positive.")
        host, port = options["host"], options["port"]
        sandbox_host = urllib.parse.urlsplit(settings.CARDSAVR_API_URL).hostname
        sandbox_host = sandbox_host or "127.0.0.1"
        sandbox_port = options["sandbox_port"]
        # Everything in this process talks to the sandbox started here.
        settings.CARDSAVR_API_URL = f"https://{sandbox_host}:{sandbox_port}/"
        portal_url = f"http://{host}:{port}/"
        webhook_url = urllib.parse.urljoin(portal_url, "webhooks/cardsavr/")
        if not settings.CARDSAVR_CARDHOLDER_WEBHOOK_URL:
            settings.CARDSAVR_CARDHOLDER_WEBHOOK_URL = webhook_url
        Path(settings.CARDSAVR_CA_FILE).parent.mkdir(parents=True, exist_ok=True)
        if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
            Path(settings.DATABASES["default"]["NAME"]).parent.mkdir(
                parents=True, exist_ok=True
            )

        self.stdout.write("Migrating the database…")
        call_command("migrate", interactive=False, verbosity=0)

        sandbox_config = SandboxConfig(
            app_name=settings.CARDSAVR_APP_NAME,
            app_key=settings.CARDSAVR_APP_KEY,
            username=settings.CARDSAVR_USERNAME,
            password=settings.CARDSAVR_PASSWORD,
            speed=options["speed"],
        )
        engine = sandbox_engine(sandbox_config)
        stop = asyncio.Event()
        tasks: dict[str, asyncio.Task] = {}
        failure: list[BaseException] = []

        async def start_background() -> None:
            tasks["sandbox"] = asyncio.ensure_future(
                serve(
                    sandbox_config,
                    sandbox_host,
                    sandbox_port,
                    settings.CARDSAVR_CA_FILE,
                    engine=engine,
                )
            )
            try:
                await _wait_for_port(sandbox_host, sandbox_port, tasks["sandbox"])
                sites = await services.sync_merchant_sites()
                await seed_demo_cardholder(settings.CARDSAVR_CARDHOLDER_WEBHOOK_URL)
            except Exception as exc:
                failure.append(exc)
                logger.error("Demo start-up failed: %s", exc)
                reactor.stop()
                return
            tasks["poller"] = asyncio.ensure_future(
                Poller(interval=options["poll_interval"]).run(stop)
            )
            self.stdout.write(
                self.style.SUCCESS(
                    f"\nCardholder portal: {portal_url}\n"
                    f"Log in as {DEMO_USERNAME} / {DEMO_PASSWORD}\n"
                )
                + f"CardSavr sandbox: {settings.CARDSAVR_API_URL} "
                f"({sites} merchant sites, speed {options['speed']:g}x)\n"
                "Try it: Start → a merchant → username good_email, password tfa "
                "→ answer the code prompt with 1234.\n"
                "Press Ctrl-C to stop.\n"
            )

        async def stop_background() -> None:
            stop.set()
            poller = tasks.get("poller")
            if poller is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(poller, timeout=10)
            for name in ("starter", "sandbox"):
                task = tasks.get(name)
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            with contextlib.suppress(Exception):
                await close_clients()

        def ready() -> None:
            tasks["starter"] = asyncio.ensure_future(start_background())
            reactor.addSystemEventTrigger(
                "before",
                "shutdown",
                lambda: defer.Deferred.fromFuture(
                    asyncio.ensure_future(stop_background())
                ),
            )

        from cardsavr_portal.asgi import application

        server = Server(
            application=ASGIStaticFilesHandler(application),
            endpoints=[f"tcp:port={port}:interface={host}"],
            signal_handlers=True,
            websocket_timeout=getattr(settings, "WEBSOCKET_TIMEOUT", 3600),
            ready_callable=ready,
            verbosity=0,
        )
        self.stdout.write(
            f"Starting the sandbox on {sandbox_host}:{sandbox_port} and the portal "
            f"on {host}:{port}…"
        )
        server.run()
        if failure:
            raise CommandError(f"The demo did not start: {failure[0]}")
        if not server.listening_addresses:
            raise CommandError(f"The portal could not listen on {host}:{port}.")
        self.stdout.write("Stopped.")
