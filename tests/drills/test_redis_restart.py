"""Redis (the channel layer and the cache) is killed and comes back empty.
Open pages reconnect, get a snapshot, and receive every later push."""

from __future__ import annotations

import asyncio
import time

import pytest

from .support import TFA, Drill, drill_stack, page_problems, wait_until

pytestmark = pytest.mark.drill

CARDHOLDERS = 4
DOWN_FOR = 2.0


async def restart_redis(drill: Drill) -> dict:
    stack = drill.stack
    pages = [
        drill.page(i, port_index=copy) for i in range(CARDHOLDERS) for copy in (0, 1)
    ]
    assert all(
        await asyncio.gather(
            *(p.wait_for(lambda p: p.snapshots > 0, 30) for p in pages)
        )
    )
    jobs = {}
    for index in range(CARDHOLDERS):
        for job in await drill.start_jobs(index, [TFA]):
            jobs[job["id"]] = index

    def prompted(page) -> bool:
        mine = [
            pk
            for pk, i in jobs.items()
            if drill.holders[i]["cardholder_id"] == page.holder
        ]
        return all((page.jobs.get(pk) or {}).get("credential_request") for pk in mine)

    assert all(await asyncio.gather(*(p.wait_for(prompted, 30) for p in pages)))
    snapshots_before = [p.snapshots for p in pages]

    stack.kill("redis")
    await asyncio.sleep(DOWN_FOR)
    stack.restart("redis")
    back_at = time.monotonic()

    resynced = await asyncio.gather(
        *(
            p.wait_for(lambda p, n=n: p.snapshots > n, 60)
            for p, n in zip(pages, snapshots_before, strict=True)
        )
    )
    resync_seconds = time.monotonic() - back_at

    # Everything after the restart must still reach every page.
    replies = []
    for pk, index in jobs.items():
        job = next(p for p in pages if pk in p.jobs).jobs[pk]
        async with drill.api(index) as api:
            response = await api.post(
                f"/api/jobs/{pk}/reply/",
                json={
                    "envelope_id": job["credential_request"]["envelope_id"],
                    "account_link": {"tfa": "1234"},
                },
            )
        replies.append(response.status_code)
    done = await wait_until(
        lambda: all(row["termination_type"] for row in drill.db_jobs().values()), 60
    )
    final = drill.db_jobs()
    shown = await asyncio.gather(
        *(
            p.wait_for(
                lambda p: all(
                    (p.jobs.get(pk) or {}).get("version") == final[pk]["version"]
                    for pk in jobs
                    if drill.holders[jobs[pk]]["cardholder_id"] == p.holder
                ),
                30,
            )
            for p in pages
        )
    )
    for page in pages:
        await page.stop()
    return {
        "resynced": resynced,
        "resync_seconds": resync_seconds,
        "replies": replies,
        "done": done,
        "final": final,
        "shown": shown,
        "pages": pages,
        "alive": {name: proc.alive() for name, proc in stack.procs.items()},
    }


def test_pages_reconnect_and_resync_after_redis_restarts_empty():
    with drill_stack(cardholders=CARDHOLDERS, daphnes=2, private_redis=True) as drill:
        result = asyncio.run(asyncio.wait_for(restart_redis(drill), 200))
        print(
            f"redis restart drill: pages resynced {result['resync_seconds']:.1f} s "
            f"after redis was back; jobs finished {result['done']} s after replies"
        )
    assert all(result["resynced"]), "some pages never reconnected"
    assert all(code == 202 for code in result["replies"]), result["replies"]
    assert result["done"] is not None
    assert all(result["shown"]), "a page missed pushes after the restart"
    assert [
        p for page in result["pages"] for p in page_problems(page, result["final"])
    ] == []
    assert all(result["alive"].values()), result["alive"]
