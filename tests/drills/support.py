"""What every fault drill needs: a running stack, cardholders with open pages,
jobs started over the API, and ways to compare the database, the pages and
the sandbox while measuring how long recovery took."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tests.scaled.clients import PageSocket, api_session
from tests.scaled.harness import USABLE_SITES, Stack, running_stack

POLL_INTERVAL = 1.0
# Short upstream deadline so timeout faults cost seconds, not minutes.
CARDSAVR_TIMEOUT = 3.0
SANDBOX_SPEED = 10.0
SUCCESS = {"username": "good_email", "password": "no_tfa"}
TFA = {"username": "good_email", "password": "tfa"}


@dataclass
class Drill:
    stack: Stack
    seed: dict
    ports: list[int]
    sites: list[int]
    recovery: dict[str, float] = field(default_factory=dict)

    @property
    def holders(self) -> list[dict]:
        return self.seed["cardholders"]

    def api(self, index: int, port_index: int = 0):
        holder = self.holders[index]
        port = self.ports[port_index % len(self.ports)]
        return api_session("127.0.0.1", port, holder["session_key"])

    def page(self, index: int, port_index: int = 0) -> PageSocket:
        holder = self.holders[index]
        page = PageSocket(
            "127.0.0.1",
            self.ports[port_index % len(self.ports)],
            holder["session_key"],
            name=f"{holder['username']}@{port_index}",
            holder=holder["cardholder_id"],
        )
        page.start()
        return page

    async def start_jobs(self, index: int, links: list[dict]) -> list[dict]:
        async with self.api(index) as api:
            response = await api.post(
                "/api/jobs/",
                json={
                    "jobs": [
                        {
                            "merchant_site_id": self.sites[n % len(self.sites)],
                            "account_link": link,
                        }
                        for n, link in enumerate(links)
                    ]
                },
            )
        assert response.status_code == 201, response.text
        return response.json()["jobs"]

    def db_jobs(self) -> dict[int, dict]:
        rows = self.stack.query(
            "SELECT id, cardsavr_id, version, status, termination_type, vanished_at,"
            " updated_at FROM jobs_job"
        )
        return {
            row[0]: {
                "cardsavr_id": row[1],
                "version": row[2],
                "status": row[3],
                "termination_type": row[4] or None,
                "vanished_at": row[5],
                "updated_at": row[6],
            }
            for row in rows
        }

    def sandbox_status(self, cardsavr_id: int) -> str:
        history = self.stack.sandbox_call(
            "GET", f"/_sandbox/jobs/{cardsavr_id}/history"
        )
        return history[-1]["status"]

    def add_fault(self, **spec) -> dict:
        return self.stack.sandbox_call("POST", "/_sandbox/faults", spec)

    def clear_faults(self) -> None:
        self.stack.sandbox_call("DELETE", "/_sandbox/faults")


@contextlib.contextmanager
def drill_stack(
    *,
    cardholders: int = 6,
    daphnes: int = 1,
    pollers: int = 1,
    private_postgres: bool = False,
    private_redis: bool = False,
) -> Iterator[Drill]:
    with running_stack(
        private_postgres=private_postgres,
        private_redis=private_redis,
        POLL_INTERVAL=str(POLL_INTERVAL),
        CARDSAVR_TIMEOUT=str(CARDSAVR_TIMEOUT),
    ) as stack:
        stack.start_sandbox(speed=SANDBOX_SPEED)
        seed = stack.seed(cardholders, prefix="drill")
        ports = [stack.start_daphne(f"web{n + 1}") for n in range(daphnes)]
        for n in range(pollers):
            stack.start_poller(f"poller{n + 1}")
        sites = [s["pk"] for s in seed["sites"] if s["name"] in USABLE_SITES]
        yield Drill(stack, seed, ports, sites)


async def wait_until(
    predicate: Callable[[], bool], timeout: float, every: float = 0.2
) -> float | None:
    """Seconds until `predicate` held, or None if it did not within `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await asyncio.to_thread(predicate):
            return time.monotonic() - started
        await asyncio.sleep(every)
    return None


def page_problems(page: PageSocket, final: dict[int, dict]) -> list:
    """Everything a page showed that the product promises it never shows:
    versions going backwards, a job moving on after its end, or a last state
    that is not the database's."""
    problems: list = [("regression", r) for r in page.regressions]
    last: dict[int, int] = {}
    ended: set[int] = set()
    for seen in page.seen:
        if seen.kind == "update" and seen.version <= last.get(seen.job_id, 0):
            problems.append(("not newer", seen))
        if seen.job_id in ended and not seen.termination_type:
            problems.append(("after end", seen))
        last[seen.job_id] = seen.version
        if seen.termination_type:
            ended.add(seen.job_id)
    for pk, job in page.jobs.items():
        row = final.get(pk)
        if row is None or (job["version"], job["status"]) != (
            row["version"],
            row["status"],
        ):
            problems.append(("stale", pk, job["version"], job["status"], row))
    return problems
