"""Create many cardholders quickly, for the scaled suite and the drills.

Run as a process with the stack's environment (DATABASE_URL, REDIS_URL,
CARDSAVR_API_URL, ...):

    python -m tests.scaled.seed OUT.json --cardholders 200

It mirrors the merchant sites, creates each cardholder and one card at the
CardSavr sandbox (concurrently), then writes users, cardholders, cards and a
signed-in session per user with bulk inserts. Hashing a password per user
would take minutes, so every user gets the same precomputed hash. OUT.json
lists what the tests need: session keys, cardholder and card ids, sites.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import django

SEED_PASSWORD = "scaled-suite-password-1"
TEST_PAN = "4111111111111111"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--cardholders", type=int, default=200)
    parser.add_argument("--prefix", default="scaled")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cardsavr_portal.settings")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    django.setup()
    result = asyncio.run(seed(args.cardholders, args.prefix, args.concurrency))
    Path(args.out).write_text(json.dumps(result))


async def seed(count: int, prefix: str, concurrency: int) -> dict:
    from asgiref.sync import sync_to_async

    from jobs import services
    from jobs.cardsavr_client import close_clients, get_client

    await services.sync_merchant_sites()
    client = get_client()
    limit = asyncio.Semaphore(concurrency)

    async def remote_cardholder(index: int) -> dict:
        cuid = f"{prefix}-{index:05d}-{os.urandom(4).hex()}"
        async with limit:
            holder = await client.create_cardholder(cuid=cuid)
            card = await client.create_card(
                cardholder_id=int(holder["id"]),
                pan=TEST_PAN,
                cvv="123",
                expiration_month="12",
                expiration_year="30",
                name_on_card=f"Scaled Tester {index}",
                address={
                    "address1": "1 Main St",
                    "city": "Seattle",
                    "subnational": "WA",
                    "postal_code": "98101",
                    "country": "USA",
                },
            )
        return {"index": index, "cuid": cuid, "holder": holder, "card": card}

    remote = await asyncio.gather(*(remote_cardholder(i) for i in range(count)))
    await close_clients()
    return await sync_to_async(_store)(remote, prefix)


def _store(remote: list[dict], prefix: str) -> dict:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.db import transaction
    from django.utils import timezone

    from jobs.models import Card, Cardholder, MerchantSite

    user_model = get_user_model()
    password_hash = make_password(SEED_PASSWORD)
    with transaction.atomic():
        users = user_model.objects.bulk_create(
            [
                user_model(
                    username=f"{prefix}{item['index']:05d}", password=password_hash
                )
                for item in remote
            ]
        )
        holders = Cardholder.objects.bulk_create(
            [
                Cardholder(
                    user=user, cuid=item["cuid"], cardsavr_id=int(item["holder"]["id"])
                )
                for user, item in zip(users, remote, strict=True)
            ]
        )
        cards = Card.objects.bulk_create(
            [
                Card(
                    cardholder=holder,
                    cardsavr_id=int(item["card"]["id"]),
                    last4=TEST_PAN[-4:],
                    brand="VISA",
                    expiration_month=12,
                    expiration_year=2030,
                )
                for holder, item in zip(holders, remote, strict=True)
            ]
        )
        store = SessionStore()
        sessions = []
        expire = timezone.now() + timedelta(hours=4)
        keys = []
        for user in users:
            key = store._get_new_session_key()
            keys.append(key)
            data = {
                "_auth_user_id": str(user.pk),
                "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
                "_auth_user_hash": user.get_session_auth_hash(),
            }
            sessions.append(
                Session(
                    session_key=key,
                    session_data=store.encode(data),
                    expire_date=expire,
                )
            )
        Session.objects.bulk_create(sessions)
    sites = list(
        MerchantSite.objects.order_by("pk").values("pk", "cardsavr_id", "name")
    )
    return {
        "cardholders": [
            {
                "user_id": user.pk,
                "username": user.get_username(),
                "cardholder_id": holder.pk,
                "cardsavr_id": holder.cardsavr_id,
                "card_id": card.pk,
                "session_key": key,
            }
            for user, holder, card, key in zip(users, holders, cards, keys, strict=True)
        ],
        "sites": sites,
        "password": SEED_PASSWORD,
    }


if __name__ == "__main__":
    main()
