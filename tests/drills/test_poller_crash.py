"""A poller is killed with SIGKILL in the middle of a tick. The other poller
takes its jobs over once their leases expire, and nothing is lost or shown
out of order."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.scaled.poller_probe import read_ticks

from .support import SUCCESS, TFA, Drill, drill_stack, page_problems, wait_until

pytestmark = pytest.mark.drill

CARDHOLDERS = 6
TFA_ANSWER = {"tfa": "1234"}


def open_claim(ticks: list[dict]) -> list[int] | None:
    """Job pks of a tick that has claimed jobs and not finished yet."""
    last_claim = None
    for tick in ticks:
        if tick["event"] == "claimed":
            last_claim = tick
        elif tick["event"] == "end":
            last_claim = None
    return last_claim["ids"] if last_claim and last_claim["ids"] else None


async def crash_and_takeover(drill: Drill) -> dict:
    stack = drill.stack
    pages = [drill.page(i) for i in range(CARDHOLDERS)]
    assert all(
        await asyncio.gather(
            *(p.wait_for(lambda p: p.snapshots > 0, 30) for p in pages)
        )
    )
    answered: set[str] = set()
    replies: list[int] = []

    async def answer(index: int, job: dict, envelope_id: str) -> None:
        async with drill.api(index) as api:
            response = await api.post(
                f"/api/jobs/{job['id']}/reply/",
                json={"envelope_id": envelope_id, "account_link": TFA_ANSWER},
            )
        replies.append(response.status_code)

    tasks = []
    for index, page in enumerate(pages):

        def on_job(page, job, index=index):
            request = job.get("credential_request")
            if (
                request
                and request["answerable"]
                and request["envelope_id"] not in answered
            ):
                answered.add(request["envelope_id"])
                tasks.append(
                    asyncio.create_task(answer(index, job, request["envelope_id"]))
                )

        page.on_job = on_job

    # Slow CardSavr down so a tick spends seconds in its reads, then start jobs.
    drill.add_fault(kind="delay", seconds=2.0, duration=8)
    for index in range(CARDHOLDERS):
        await drill.start_jobs(index, [TFA, SUCCESS, SUCCESS])

    # Whichever poller is inside a tick holding jobs is the one to kill.
    victim = victims = None
    deadline = time.monotonic() + 30
    while victims is None and time.monotonic() < deadline:
        for name in ("poller1", "poller2"):
            victims = open_claim(read_ticks(stack.ticks_path(name)))
            if victims:
                victim = name
                break
        else:
            await asyncio.sleep(0.05)
    assert victims, "no poller claimed jobs"
    stack.kill(victim)
    killed_at = time.time()
    survivor = "poller2" if victim == "poller1" else "poller1"
    drill.clear_faults()

    def taken_over() -> bool:
        claims = [
            t
            for t in read_ticks(stack.ticks_path(survivor))
            if t["event"] == "claimed" and t["at"] > killed_at
        ]
        claimed = {pk for t in claims for pk in t["ids"]}
        finished = {
            pk for pk, row in drill.db_jobs().items() if row["termination_type"]
        }
        return set(victims) <= claimed | finished

    takeover = await wait_until(taken_over, 60)

    def all_final() -> bool:
        rows = drill.db_jobs()
        return all(row["termination_type"] for row in rows.values())

    settled = await wait_until(all_final, 90)
    await asyncio.gather(*tasks)
    final = drill.db_jobs()
    shown = await asyncio.gather(
        *(
            p.wait_for(
                lambda p: all(
                    (p.jobs.get(pk) or {}).get("version") == final[pk]["version"]
                    for pk in p.jobs
                ),
                10,
            )
            for p in pages
        )
    )
    for page in pages:
        await page.stop()
    sandbox = {
        pk: drill.sandbox_status(row["cardsavr_id"]) for pk, row in final.items()
    }
    return {
        "victims": victims,
        "takeover": takeover,
        "settled": settled,
        "final": final,
        "sandbox": sandbox,
        "pages": pages,
        "shown": shown,
        "replies": replies,
        "stats": stack.sandbox_stats(),
    }


def test_killed_poller_jobs_are_taken_over_and_nothing_is_lost():
    with drill_stack(cardholders=CARDHOLDERS, pollers=2) as drill:
        result = asyncio.run(asyncio.wait_for(crash_and_takeover(drill), 200))
        print(
            f"poller crash drill: takeover after {result['takeover']} s, "
            f"all jobs final after {result['settled']} s "
            f"({len(result['victims'])} jobs held by the killed poller)"
        )
    assert result["takeover"] is not None, "no poller took the jobs over"
    assert result["settled"] is not None, "jobs never finished"
    statuses = {pk: row["status"] for pk, row in result["final"].items()}
    assert statuses == result["sandbox"]
    assert set(statuses.values()) == {"SUCCESSFUL"}
    assert all(result["shown"])
    assert [
        p for page in result["pages"] for p in page_problems(page, result["final"])
    ] == []
    assert all(code == 202 for code in result["replies"])
    per_envelope = result["stats"]["credential_replies_per_envelope"]
    assert per_envelope and set(per_envelope.values()) == {1}
