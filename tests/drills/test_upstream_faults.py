"""CardSavr misbehaves for a while: 500s, 429 with Retry-After, answers slower
than the deadline, garbage, a body dripped byte by byte. Pages keep serving
from the database and say CardSavr is unreachable; once CardSavr answers
again every job is current within two poll intervals of the next attempt the
page was told about ("retrying in N s")."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.scaled.poller_probe import read_ticks

from .support import (
    CARDSAVR_TIMEOUT,
    POLL_INTERVAL,
    SUCCESS,
    Drill,
    drill_stack,
    wait_until,
)

pytestmark = pytest.mark.drill

# Slack for scheduling on a loaded two-core machine, on top of the promise.
SLACK = 1.5
# An answer that never comes costs the poller a whole deadline before it hears
# of the failure (its reads are not retried inside the client), so those
# outages last two deadlines and more, to be noticed with time to spare.
SLOW_OUTAGE = 2 * CARDSAVR_TIMEOUT + 8

# (fault, how long it lasts, what a call already in flight when it ends may
# still cost: a slow answer runs into the deadline before the retry succeeds)
FAULTS = {
    "500": ({"kind": "500"}, 8.0, 0.0),
    "429": ({"kind": "429", "retry_after": 2}, 8.0, 0.0),
    "timeout": (
        {"kind": "delay", "seconds": CARDSAVR_TIMEOUT + 2},
        SLOW_OUTAGE,
        CARDSAVR_TIMEOUT,
    ),
    "garbage": ({"kind": "garbage"}, 8.0, 0.0),
    "drip": (
        {"kind": "drip", "seconds": CARDSAVR_TIMEOUT + 2},
        SLOW_OUTAGE,
        CARDSAVR_TIMEOUT,
    ),
}


@pytest.fixture(scope="module")
def drill():
    with drill_stack(cardholders=len(FAULTS) + 1) as drill:
        yield drill
        print(f"upstream fault drill seconds: {drill.recovery}")


async def outage_and_recovery(
    drill: Drill, index: int, fault: dict, outage: float, in_flight: float
) -> dict:
    page = drill.page(index)
    assert await page.wait_for(lambda p: p.snapshots > 0, 30)
    jobs = await drill.start_jobs(index, [SUCCESS, SUCCESS, SUCCESS])
    ids = [job["id"] for job in jobs]
    drill.add_fault(duration=outage, **fault)
    fault_starts = time.monotonic()
    fault_ends = fault_starts + outage

    # While CardSavr is down: the page is told, and pages still load.
    told = await page.wait_for(
        lambda p: p.upstream is not None and p.upstream["reachable"] is False,
        outage,
    )
    told_after = time.monotonic() - fault_starts if told else None
    async with drill.api(index) as api:
        listing = await api.get("/api/jobs/")
        dashboard = await api.get("/")
    await asyncio.sleep(max(0.0, fault_ends - time.monotonic()))

    # CardSavr answers again: how long until the database and the page agree
    # with it.
    finals = {
        job_id: drill.sandbox_status(drill.db_jobs()[job_id]["cardsavr_id"])
        for job_id in ids
    }
    current = await wait_until(
        lambda: all(drill.db_jobs()[j]["status"] == finals[j] for j in ids), 60
    )
    # The page was told when the next attempt would be ("retrying in N s");
    # a poller backing off exponentially may be asleep when CardSavr returns.
    # A read still in flight when the fault ends fails a little later and
    # announces its own retry.
    announced = [
        state
        for state in page.upstream_history
        if state["reachable"] is False and state["seen_at"] <= fault_ends + in_flight
    ]
    backoff_left = 0.0
    if announced and announced[-1].get("retry_in"):
        backoff_left = max(
            0.0, announced[-1]["seen_at"] + announced[-1]["retry_in"] - fault_ends
        )
    shown = await page.wait_for(
        lambda p: all((p.jobs.get(j) or {}).get("status") == finals[j] for j in ids)
        and p.upstream["reachable"] is True,
        60,
    )
    await page.stop()
    return {
        "told": told,
        "told_after": told_after,
        "listing": (listing.status_code, listing.json().get("upstream")),
        "dashboard": dashboard.status_code,
        "finals": finals,
        "current_after": current,
        "backoff_left": backoff_left,
        "shown": shown,
    }


@pytest.mark.parametrize("name", list(FAULTS))
def test_pages_keep_serving_and_jobs_catch_up_after_an_upstream_outage(drill, name):
    index = list(FAULTS).index(name)
    fault, outage, in_flight = FAULTS[name]
    result = asyncio.run(outage_and_recovery(drill, index, fault, outage, in_flight))
    drill.recovery[name] = {
        "told_unreachable_after": result["told_after"],
        "current_after_recovery": result["current_after"],
        "announced_backoff_left": result["backoff_left"],
    }
    assert result["told"], "the page never said CardSavr was unreachable"
    status, upstream = result["listing"]
    assert status == 200
    assert upstream["reachable"] is False
    assert upstream["message"]
    assert result["dashboard"] == 200
    assert set(result["finals"].values()) == {"SUCCESSFUL"}
    assert result["current_after"] is not None, "jobs never caught up"
    allowed = result["backoff_left"] + 2 * POLL_INTERVAL + in_flight + SLACK
    assert result["current_after"] <= allowed
    assert result["shown"], "the page did not show the recovered state"


async def vanish(drill: Drill, index: int) -> dict:
    page = drill.page(index)
    assert await page.wait_for(lambda p: p.snapshots > 0, 30)
    holder = drill.holders[index]
    # A job CardSavr has never heard of: its id answers 404, as for a job
    # CardSavr dropped.
    (pk,) = drill.stack.query(
        "INSERT INTO jobs_job (cardsavr_id, cardholder_id, merchant_site_id, status,"
        " status_message, percent_complete, auth_percent_complete, termination_type,"
        " outcome, version, lease_owner, created_at, updated_at)"
        " VALUES (%s, %s, %s, 'UPDATING', '', 50, 100, '', 'in_progress', 1, '',"
        " now(), now()) RETURNING id",
        (987654321, holder["cardholder_id"], drill.sites[0]),
    )[0]
    marked = await wait_until(lambda: drill.db_jobs()[pk]["vanished_at"], 30)
    shown = await page.wait_for(lambda p: pk in p.jobs, 10)
    # Several more ticks: none of them may read it again.
    await asyncio.sleep(4 * POLL_INTERVAL)
    vanished_at = drill.db_jobs()[pk]["vanished_at"].timestamp()
    later_claims = [
        tick
        for tick in read_ticks(drill.stack.ticks_path("poller1"))
        if tick["event"] == "claimed" and tick["at"] > vanished_at + 0.5
    ]
    await page.stop()
    return {
        "marked": marked,
        "shown": shown,
        "shown_job": page.jobs.get(pk),
        "later_ticks": len(later_claims),
        "claimed_again": [t for t in later_claims if pk in t["ids"]],
    }


def test_job_that_vanished_at_cardsavr_is_marked_and_no_longer_polled(drill):
    result = asyncio.run(vanish(drill, len(FAULTS)))
    drill.recovery["vanished_marked_after"] = result["marked"]
    assert result["marked"] is not None, "the vanished job was never marked"
    assert result["shown"], "the page was not told"
    assert result["shown_job"]["next_steps"]
    assert result["later_ticks"] > 0, "the poller stopped ticking"
    assert result["claimed_again"] == []
