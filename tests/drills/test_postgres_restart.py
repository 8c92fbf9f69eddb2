"""PostgreSQL restarts under running web processes and pollers (a private
cluster of the drill's own, restarted with pg_ctl -m fast). Both recover by
themselves and nothing is lost."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from .support import SUCCESS, TFA, Drill, drill_stack, page_problems, wait_until

pytestmark = pytest.mark.drill

CARDHOLDERS = 4


async def restart_postgres(drill: Drill) -> dict:
    stack = drill.stack
    pages = [drill.page(i) for i in range(CARDHOLDERS)]
    assert all(
        await asyncio.gather(
            *(p.wait_for(lambda p: p.snapshots > 0, 30) for p in pages)
        )
    )
    jobs = {}
    for index in range(CARDHOLDERS):
        for job in await drill.start_jobs(index, [TFA, SUCCESS]):
            jobs[job["id"]] = index
    await asyncio.sleep(0.5)

    await asyncio.to_thread(stack.private_postgres.restart)
    restarted = time.monotonic()
    restarted_wall = time.time()

    async def web_answers() -> bool:
        async with drill.api(0) as api:
            try:
                return (await api.get("/api/jobs/")).status_code == 200
            except httpx.HTTPError:
                return False

    web_seconds = None
    while time.monotonic() - restarted < 60:
        if await web_answers():
            web_seconds = time.monotonic() - restarted
            break
        await asyncio.sleep(0.1)

    def poller_wrote() -> bool:
        rows = drill.db_jobs().values()
        return any(row["updated_at"].timestamp() > restarted_wall for row in rows)

    poller_seconds = None
    if await wait_until(poller_wrote, 60, every=0.1) is not None:
        poller_seconds = time.monotonic() - restarted

    replies = []

    def prompted() -> dict[int, str]:
        found = {}
        for page in pages:
            for pk, job in page.jobs.items():
                request = job.get("credential_request")
                if request and request["answerable"]:
                    found[pk] = request["envelope_id"]
        return found

    answered: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for pk, envelope_id in prompted().items():
            if pk in answered:
                continue
            answered.add(pk)
            async with drill.api(jobs[pk]) as api:
                response = await api.post(
                    f"/api/jobs/{pk}/reply/",
                    json={"envelope_id": envelope_id, "account_link": {"tfa": "1234"}},
                )
            replies.append(response.status_code)
        if all(row["termination_type"] for row in drill.db_jobs().values()):
            break
        await asyncio.sleep(0.2)
    final = drill.db_jobs()
    shown = await asyncio.gather(
        *(
            p.wait_for(
                lambda p: all(
                    (p.jobs.get(pk) or {}).get("version") == final[pk]["version"]
                    for pk in p.jobs
                ),
                20,
            )
            for p in pages
        )
    )
    for page in pages:
        await page.stop()
    return {
        "web_seconds": web_seconds,
        "poller_seconds": poller_seconds,
        "final": final,
        "replies": replies,
        "shown": shown,
        "pages": pages,
        "alive": {name: proc.alive() for name, proc in stack.procs.items()},
    }


def test_web_and_pollers_recover_by_themselves_after_postgres_restarts():
    with drill_stack(cardholders=CARDHOLDERS, private_postgres=True) as drill:
        result = asyncio.run(asyncio.wait_for(restart_postgres(drill), 200))
        print(
            f"postgres restart drill: API answered {result['web_seconds']} s and "
            f"the poller wrote {result['poller_seconds']} s after the restart"
        )
    assert result["web_seconds"] is not None, "the web process never answered again"
    assert result["poller_seconds"] is not None, "the poller never wrote again"
    assert all(row["termination_type"] for row in result["final"].values())
    statuses = {row["status"] for row in result["final"].values()}
    assert statuses == {"SUCCESSFUL"}
    assert all(code == 202 for code in result["replies"]), result["replies"]
    assert all(result["shown"])
    assert [
        p for page in result["pages"] for p in page_problems(page, result["final"])
    ] == []
    assert all(result["alive"].values()), result["alive"]
