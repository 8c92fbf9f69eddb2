import asyncio
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.cardsavr_client import close_clients
from jobs.poller import Poller


class Command(BaseCommand):
    help = (
        "Poll CardSavr for every active job and mirror what changed. SIGTERM or "
        "SIGINT finish the current tick and exit."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="Seconds between ticks (default: the POLL_INTERVAL setting).",
        )
        parser.add_argument(
            "--once", action="store_true", help="Run one tick and exit."
        )

    def handle(self, *args: Any, interval: float | None, once: bool, **options: Any):
        if interval is not None and interval <= 0:
            raise CommandError("--interval must be a positive number of seconds.")
        asyncio.run(self._main(interval, once))

    async def _main(self, interval: float | None, once: bool) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await Poller(interval=interval).run(stop, once=once)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await close_clients()
