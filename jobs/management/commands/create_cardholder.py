import asyncio
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs import services
from jobs.cardsavr_client import close_clients

# A sandbox test card; CardSavr's sandbox accepts it and no bank issued it.
DEMO_PAN = "4111111111111111"
DEMO_CVV = "123"
DEMO_ADDRESS = {
    "address1": "1 Main Street",
    "city": "Seattle",
    "subnational": "WA",
    "postal_code": "98101",
    "country": "USA",
}


class Command(BaseCommand):
    help = "Create a portal login and its CardSavr cardholder."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--password", required=True)
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--demo-card",
            action="store_true",
            help="Also add the sandbox test card 4111 1111 1111 1111.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            message = asyncio.run(
                self._main(
                    options["username"],
                    options["password"],
                    options["email"],
                    options["demo_card"],
                )
            )
        except services.ServiceError as exc:
            field = f" ({exc.field})" if exc.field else ""
            raise CommandError(f"{exc.message}{field}") from None
        self.stdout.write(self.style.SUCCESS(message))

    async def _main(
        self, username: str, password: str, email: str, demo_card: bool
    ) -> str:
        try:
            cardholder = await services.create_cardholder(
                username, password, email=email
            )
            message = (
                f"Created {username} (CardSavr cardholder {cardholder.cardsavr_id})."
            )
            if demo_card:
                card = await services.add_card(
                    cardholder,
                    pan=DEMO_PAN,
                    cvv=DEMO_CVV,
                    expiration_month="12",
                    expiration_year=str(date.today().year + 1),
                    name_on_card=username,
                    address=DEMO_ADDRESS,
                )
                message += f" Added {card}."
            return message
        finally:
            await close_clients()
