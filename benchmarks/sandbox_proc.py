"""The sandbox in its own process, with a driver that changes jobs on cue.

Started as `python -m benchmarks.sandbox_proc WORKDIR`; prints one JSON line
with the sandbox's URL and CA file, then answers one JSON line per command read
on stdin. Jobs are created through the sandbox engine and then held still (no
scripted step runs), so the only changes CardSavr shows are the ones the driver
makes; each change is stamped with time.time_ns(), the clock every process on
the host shares.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import time

from benchmarks import common
from sandbox.config import SandboxConfig
from sandbox.testing import run_sandbox

# The statuses a changing job moves through (a job keeps no open request, so
# any of them reads as in progress).
STATUSES = ("AUTH", "LOGIN_SUBMITTED", "UPDATING")
SEED_PAN = "4111111111111111"


class Driver:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.job_ids: list[int] = []
        self.cursor = 0
        self.seq = 0
        self.changes: list[tuple[int, int, str]] = []
        self.put_times: list[int] = []
        self.background: threading.Thread | None = None
        self.stop_background = threading.Event()
        count_request = engine.count_request

        def counted(route: str) -> None:
            if route.startswith("PUT /place_card_on_single_site_jobs/"):
                self.put_times.append(time.time_ns())
            count_request(route)

        engine.count_request = counted

    # Commands (each returns the JSON answer).

    def cmd_create_jobs(self, count: int) -> dict:
        engine = self.engine
        holder, _ = engine.upsert_cardholder({"cuid": f"bench-{time.time_ns()}"})
        card = engine.create_card(
            {
                "pan": SEED_PAN,
                "cvv": "123",
                "expiration_month": "12",
                "expiration_year": "39",
                "name_on_card": "Bench Holder",
            },
            holder["id"],
        )
        site_ids = [site["id"] for site in engine.sites[:20]]
        created: list[int] = []
        for start in range(0, count, 500):
            bodies = [
                {
                    "cardholder_id": holder["id"],
                    "card_id": card["id"],
                    "account": {
                        "merchant_site_id": site_ids[i % len(site_ids)],
                        "account_link": {
                            "username": "good_email",
                            "password": "no_tfa",
                        },
                    },
                }
                for i in range(start, min(count, start + 500))
            ]
            jobs = engine.create_jobs(bodies, set(), "https://127.0.0.1")
            created.extend(job["id"] for job in jobs)
        with engine.lock:
            for job_id in created:
                job = engine.jobs[job_id]
                # Held still: the driver alone changes it from here on.
                job.next_step = job.next_at = None
                job.deadline = engine.now() + 24 * 3600
                engine._set(job, "QUEUED", "Waiting in line.", engine.now())
        self.job_ids.extend(created)
        return {"job_ids": created}

    def _change(self, job_id: int) -> tuple[int, int, str]:
        self.seq += 1
        marker = f"bench step {self.seq}"
        job = self.engine.jobs[job_id]
        status = STATUSES[self.seq % len(STATUSES)]
        percent = float(self.seq % 97)
        self.engine._set(job, status, marker, self.engine.now(), percent=percent)
        return job_id, time.time_ns(), marker

    def cmd_change(self, count: int, job_ids: list[int] | None = None) -> dict:
        """Change `count` jobs now (round robin over `job_ids` or all jobs)."""
        pool = job_ids or self.job_ids
        with self.engine.lock:
            changed = []
            for _ in range(count):
                changed.append(self._change(pool[self.cursor % len(pool)]))
                self.cursor += 1
        return {"changed": len(changed)}

    def cmd_drive(
        self, job_ids: list[int], per_second: int, seconds: float, seed: int = 1
    ) -> dict:
        """In the background: `per_second` changes a second at uniformly random
        moments, each to a random one of `job_ids`."""
        rng = random.Random(seed)
        self.changes = []
        self.stop_background.clear()

        def run() -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end and not self.stop_background.is_set():
                second = time.monotonic()
                moments = sorted(rng.random() for _ in range(per_second))
                for moment in moments:
                    delay = second + moment - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    with self.engine.lock:
                        self.changes.append(self._change(rng.choice(job_ids)))

        self.background = threading.Thread(target=run, daemon=True)
        self.background.start()
        return {"driving": True}

    def cmd_drive_wait(self, stop: bool = False) -> dict:
        if stop:
            self.stop_background.set()
        if self.background is not None:
            self.background.join()
        changes, self.changes = self.changes, []
        return {"changes": changes}

    def cmd_open_tfa(self, job_ids: list[int]) -> dict:
        """Ask each job's cardholder for a one-time code, as a site would."""
        engine = self.engine
        envelopes = {}
        with engine.lock:
            for job_id in job_ids:
                job = engine.jobs[job_id]
                engine._open_request(
                    job, "tfa", "PENDING_TFA", "Enter the code we sent.", engine.now()
                )
                # The request may wait as long as the benchmark needs.
                job.next_step = job.next_at = None
                envelopes[job_id] = job.open_request.envelope_id
        return {"envelopes": envelopes}

    def cmd_requests(self) -> dict:
        with self.engine.lock:
            counts = dict(self.engine.requests_per_route)
        return {"total": sum(counts.values()), "per_route": counts}

    def cmd_put_times(self) -> dict:
        times, self.put_times = self.put_times, []
        return {"times": times}

    def cmd_cpu(self) -> dict:
        return {"cpu_seconds": common.cpu_seconds()}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    workdir = sys.argv[1]
    config = SandboxConfig(
        app_name="bench_app",
        app_key=common.BENCH_APP_KEY,
        username="bench_agent",
        password="bench-agent-password",
        speed=1.0,
        seed=7,
    )
    with run_sandbox(config, cert_dir=workdir) as running:
        driver = Driver(running.engine)
        common.answer({"url": running.url, "ca_file": running.ca_file})
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                command = json.loads(line)
                handler = getattr(driver, "cmd_" + command.pop("cmd"))
                result = handler(**command)
            except Exception as exc:  # reported to the harness
                result = {"error": f"{type(exc).__name__}: {exc}"}
            common.answer(result)


if __name__ == "__main__":
    main()
