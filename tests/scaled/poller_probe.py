"""`manage.py pollcardsavr`, recording which jobs each tick claimed.

The scaled suite and the drills run their pollers through this module:

    python -m tests.scaled.poller_probe TICKS.jsonl [pollcardsavr options]

It runs the real command unchanged, with one observer around the poller: every
tick appends one JSON line to TICKS.jsonl when it starts ({"event": "start"}),
one when it has claimed its jobs ({"event": "claimed", "ids": [job pks]}) and
one when it ends ({"event": "end", "ids": [...]}). A test reads the file to
prove that no job was read by two pollers in overlapping ticks, and a drill
uses a "claimed" line without its "end" to kill a poller in the middle of a
tick. Nothing else about the poller changes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    ticks_path = Path(sys.argv[1])
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cardsavr_portal.settings")

    import django

    django.setup()

    from django.core.management import call_command

    from jobs import poller

    pid = os.getpid()
    claimed: list[int] = []
    original_claim = poller.claim_active_jobs
    original_tick = poller.Poller.tick

    def write(record: dict) -> None:
        with ticks_path.open("a") as out:
            out.write(json.dumps(record) + "\n")
            out.flush()

    def claim_active_jobs(owner, limit, lease_seconds=None):
        jobs = original_claim(owner, limit, lease_seconds)
        claimed.extend(job.pk for job in jobs)
        write({"event": "claimed", "pid": pid, "at": time.time(), "ids": list(claimed)})
        return jobs

    async def tick(self):
        claimed.clear()
        started = time.time()
        write({"event": "start", "pid": pid, "owner": self.owner, "at": started})
        try:
            return await original_tick(self)
        finally:
            write(
                {
                    "event": "end",
                    "pid": pid,
                    "owner": self.owner,
                    "start": started,
                    "end": time.time(),
                    "ids": list(claimed),
                }
            )

    poller.claim_active_jobs = claim_active_jobs
    poller.Poller.tick = tick
    call_command("pollcardsavr", *sys.argv[2:])


def read_ticks(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def overlapping_reads(ticks: list[dict]) -> list[tuple[int, dict, dict]]:
    """(job pk, tick, tick) for every job claimed by two pollers whose ticks
    overlapped in time."""
    ends = [t for t in ticks if t["event"] == "end"]
    by_job: dict[int, list[dict]] = {}
    for tick in ends:
        for job_id in tick["ids"]:
            by_job.setdefault(job_id, []).append(tick)
    clashes = []
    for job_id, job_ticks in by_job.items():
        job_ticks.sort(key=lambda t: t["start"])
        for index, first in enumerate(job_ticks):
            for second in job_ticks[index + 1 :]:
                if second["start"] >= first["end"]:
                    break
                if second["pid"] != first["pid"]:
                    clashes.append((job_id, first, second))
    return clashes


if __name__ == "__main__":
    main()
