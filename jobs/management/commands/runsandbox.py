"""Run the local CardSavr sandbox that the portal talks to in development."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from argparse import ArgumentParser

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sandbox.config import SandboxConfig
from sandbox.server import serve


class Command(BaseCommand):
    help = (
        "Serve a local CardSavr stand-in over HTTPS, using the CARDSAVR_* "
        "settings for its integrator, agent and certificate."
    )
    # The sandbox uses no portal models or URLs; a half-configured portal must
    # not stop it from starting.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        api_url = urllib.parse.urlsplit(settings.CARDSAVR_API_URL)
        parser.add_argument("--host", default=api_url.hostname or "127.0.0.1")
        parser.add_argument("--port", type=int, default=api_url.port or 8100)
        parser.add_argument(
            "--speed",
            type=float,
            default=1.0,
            help="Divide every scripted duration by this (20 ends a job in ~2 s).",
        )
        parser.add_argument(
            "--seed", type=int, default=None, help="Repeatable ids and envelopes."
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["speed"] <= 0:
            raise CommandError("--speed must be positive.")
        config = SandboxConfig(
            app_name=settings.CARDSAVR_APP_NAME,
            app_key=settings.CARDSAVR_APP_KEY,
            username=settings.CARDSAVR_USERNAME,
            password=settings.CARDSAVR_PASSWORD,
            speed=options["speed"],
            seed=options["seed"],
        )
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                serve(
                    config,
                    options["host"],
                    options["port"],
                    settings.CARDSAVR_CA_FILE,
                    handle_signals=True,
                )
            )
