"""Delta reads: the client's last_updated_on_min against the sandbox."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from cardsavr.client import CardSavrClient
from cardsavr.config import ClientConfig


def _held_jobs(engine, count: int) -> list[int]:
    holder, _ = engine.upsert_cardholder({"cuid": f"delta-{time.time_ns()}"})
    card = engine.create_card(
        {
            "pan": "4111111111111111",
            "cvv": "123",
            "expiration_month": "12",
            "expiration_year": "39",
            "name_on_card": "Delta Reads",
        },
        holder["id"],
    )
    site_id = engine.sites[0]["id"]
    jobs = engine.create_jobs(
        [
            {
                "cardholder_id": holder["id"],
                "card_id": card["id"],
                "account": {
                    "merchant_site_id": site_id,
                    "account_link": {"username": "good_email", "password": "no_tfa"},
                },
            }
            for _ in range(count)
        ],
        set(),
        "https://127.0.0.1",
    )
    ids = [job["id"] for job in jobs]
    with engine.lock:
        for job_id in ids:
            # Held still, so only this test changes them.
            engine.jobs[job_id].next_step = engine.jobs[job_id].next_at = None
    return ids


def _client(sandbox) -> CardSavrClient:
    config = sandbox.config
    return CardSavrClient(
        ClientConfig(
            api_url=sandbox.url,
            app_name=config.app_name,
            app_key=config.app_key,
            username=config.username,
            password=config.password,
            ca_file=sandbox.ca_file,
        )
    )


async def test_list_since_returns_only_jobs_updated_at_or_after_it(sandbox):
    engine = sandbox.engine
    old, new = _held_jobs(engine, 2)
    with engine.lock:
        engine.jobs[old].last_updated_on = time.time() - 60
        engine.jobs[new].last_updated_on = time.time()
    client = _client(sandbox)
    try:
        page = await client.list_jobs(
            last_updated_on_min=datetime.now(UTC) - timedelta(seconds=30),
            page_length=10_000,
        )
    finally:
        await client.close()

    ids = {job.id for job in page.items}
    assert new in ids
    assert old not in ids
