import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from cardsavr.errors import CardSavrError
from jobs.cardsavr_client import close_clients
from jobs.services import sync_merchant_sites


class Command(BaseCommand):
    help = "Mirror CardSavr's merchant sites and fetch logos not fetched yet."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            count = asyncio.run(self._main())
        except CardSavrError as exc:
            raise CommandError(
                f"CardSavr did not list the merchant sites ({type(exc).__name__}); "
                "check CARDSAVR_API_URL and the agent credentials, then run again."
            ) from None
        self.stdout.write(self.style.SUCCESS(f"Synced {count} merchant sites."))

    async def _main(self) -> int:
        try:
            return await sync_merchant_sites()
        finally:
            await close_clients()
