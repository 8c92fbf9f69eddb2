"""(b) jobs per poller at 1 s, (e) memory per tracked job, (f) scaling.

The sandbox runs in its own process and holds N jobs still; before each tick
the driver changes a chosen number of them. One poller process runs product
ticks and naive ticks over the same jobs, alternating, with stand-in listeners
for one open socket per cardholder. A tick's CPU is the poller process's CPU
from the start of the tick until every push was received by a listener;
CardSavr requests are counted by the sandbox.
"""

from __future__ import annotations

import os
import sqlite3
import time

from benchmarks import common, data

FULL = {
    "current": [1000, 2000, 5000, 10_000],
    "all": [100, 1000, 10_000],
    "fixed": [1000, 5000, 10_000],
    "fixed_changes": 100,
    "naive": [100, 1000],
    "reps": 4,
    "memory_jobs": 10_000,
    "naive_memory_jobs": 1000,
}
SMOKE = {
    "current": [10, 20],
    "all": [10, 20],
    "fixed": [10, 20],
    "fixed_changes": 5,
    "naive": [10],
    "reps": 1,
    "memory_jobs": 20,
    "naive_memory_jobs": 10,
    # Back-to-back ticks: the smoke run checks the code path, not timing.
    "spacing": 0.0,
    # The smoke run measures memory in the same process (its number means
    # nothing at this size; the code path is what is checked).
    "memory_in_place": True,
}
INTERVAL_MS = 1000.0


def portal_environment(sandbox: dict) -> dict:
    return {
        "CARDSAVR_API_URL": sandbox["url"],
        "CARDSAVR_CA_FILE": sandbox["ca_file"],
        "CARDSAVR_APP_NAME": "bench_app",
        "CARDSAVR_APP_KEY": common.BENCH_APP_KEY,
        "CARDSAVR_USERNAME": "bench_agent",
        "CARDSAVR_PASSWORD": "bench-agent-password",
    }


def naive_database(workdir: str) -> dict:
    """A copy of the benchmark database for the naive poller (made once)."""
    from django.conf import settings

    copy = f"{workdir}/naive-poller.sqlite3"
    if not os.path.exists(copy):
        source = str(settings.DATABASES["default"]["NAME"])
        with sqlite3.connect(source) as db, sqlite3.connect(copy) as target:
            db.backup(target)
    return {"DATABASE_URL": f"sqlite:///{copy}"}


def mirror_jobs(prefix: str, cardsavr_ids: list[int]):
    """Portal rows for sandbox jobs: one cardholder per job."""
    holders = data.cardholders(prefix, len(cardsavr_ids), 3_000_000)
    data.jobs(holders, cardsavr_ids, data.merchant_site())
    return holders


class Rig:
    """Product and naive pollers, each in its own process with its own copy of
    the database, over the same sandbox jobs. Before each pair of ticks the
    driver changes jobs once, so both see exactly the same changes; ticks of
    one poller start at least one interval apart."""

    def __init__(
        self, sandbox: common.Child, pollers: dict, job_ids: list, spacing: float
    ):
        self.sandbox, self.pollers, self.job_ids = sandbox, pollers, job_ids
        self.spacing = spacing
        self.last_start: dict[str, float] = {}

    def tick(self, mode: str) -> dict:
        wait = self.last_start.get(mode, 0) + self.spacing - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.last_start[mode] = time.monotonic()
        before = self.sandbox.call(cmd="requests")["total"]
        result = self.pollers[mode].call(cmd="tick", mode=mode, timeout=900)
        result["requests"] = self.sandbox.call(cmd="requests")["total"] - before
        return result

    def series(self, size: int, changes: int, reps: int, naive: bool) -> dict:
        common.log("poller: %s jobs, %s changing per tick", size, changes)
        modes = ["product", "naive"] if naive else ["product"]
        for mode in modes:
            self.pollers[mode].call(cmd="activate", count=size)
        # Two ticks each to catch up after (re)activation; not measured.
        for _ in range(2):
            for mode in modes:
                self.tick(mode)
        ticks: dict[str, list[dict]] = {mode: [] for mode in modes}
        for _ in range(reps):
            self.sandbox.call(cmd="change", count=changes, job_ids=self.job_ids[:size])
            for mode in modes:
                ticks[mode].append(self.tick(mode))
        return ticks


def _median(ticks: list[dict], key: str) -> float:
    return common.median(t[key] for t in ticks)


def run(smoke: bool) -> dict:
    size = SMOKE if smoke else FULL
    reps = size["reps"]
    largest = max(size["current"] + size["all"] + size["fixed"])
    naive_largest = max(size["naive"])
    workdir = common.workdir()

    sandbox = common.Child("benchmarks.sandbox_proc", workdir)
    with common.children(sandbox):
        info = sandbox.read(60)
        common.log("poller: sandbox up, creating %s jobs", largest)
        job_ids = sandbox.call(cmd="create_jobs", count=largest, timeout=600)["job_ids"]
        holders = mirror_jobs("pol", job_ids)
        naive_env = {**portal_environment(info), **naive_database(workdir)}
        poller = common.Child("benchmarks.poller_proc", env=portal_environment(info))
        naive = common.Child("benchmarks.poller_proc", env=naive_env)
        with common.children(poller, naive):
            poller.read(60)
            naive.read(60)
            poller.call(
                cmd="listen", product=[h.pk for h in holders], naive=[], timeout=600
            )
            naive.call(
                cmd="listen",
                product=[],
                naive=[h.pk for h in holders[:naive_largest]],
                timeout=600,
            )
            rig = Rig(
                sandbox,
                {"product": poller, "naive": naive},
                job_ids,
                size.get("spacing", INTERVAL_MS / 1000),
            )
            current = {
                n: rig.series(n, n // 2, reps, naive=n in size["naive"])
                for n in size["current"]
            }
            # The naive poller's cost follows the number of jobs whatever
            # changes; it is measured at 50 % and at 100 changing only.
            all_changing = {n: rig.series(n, n, reps, naive=False) for n in size["all"]}
            fixed = {
                n: rig.series(n, size["fixed_changes"], reps, naive=False)
                for n in size["fixed"]
            }
            naive_fixed = {
                n: rig.series(n, min(n, size["fixed_changes"]), 2, naive=True)
                for n in size["naive"]
            }
            memory = {}
            common.log("poller: memory per tracked job")
            for mode, jobs in (
                ("product", size["memory_jobs"]),
                ("naive", size["naive_memory_jobs"]),
            ):
                if size.get("memory_in_place"):
                    rig.pollers[mode].call(cmd="activate", count=jobs)
                    memory[mode] = rig.pollers[mode].call(cmd="memory", mode=mode)
                    continue
                env = portal_environment(info)
                if mode == "naive":
                    env.update(naive_database(workdir))
                probe = common.Child("benchmarks.poller_proc", env=env)
                with common.children(probe):
                    probe.read(60)
                    probe.call(cmd="activate", count=jobs)
                    memory[mode] = probe.call(cmd="memory", mode=mode, timeout=900)

    return summarize(size, current, all_changing, fixed, naive_fixed, memory)


def summarize(size, current, all_changing, fixed, naive_fixed, memory) -> dict:
    def fits(ticks: list[dict]) -> bool:
        worst = max(t["wall_ms"] for t in ticks)
        return worst <= INTERVAL_MS and _median(ticks, "cpu_ms") <= INTERVAL_MS / 2

    product_max = max((n for n, t in current.items() if fits(t["product"])), default=0)
    naive_max = max(
        (n for n, t in current.items() if "naive" in t and fits(t["naive"])), default=0
    )
    reference = 1000 if 1000 in current else min(current)
    per_1000 = 1000 / reference
    at_ref = current[reference]
    naive_ref = at_ref.get("naive") or current[max(size["naive"])]["naive"]

    def slope(series: dict, mode: str) -> float:
        return common.loglog_slope(
            [(n, _median(t[mode], "cpu_ms")) for n, t in series.items() if mode in t]
        )

    fixed_sizes = sorted(fixed)
    low, high = fixed_sizes[0], fixed_sizes[-1]
    naive_sizes = sorted(naive_fixed)
    return {
        "poller.max_jobs_current_at_1s": product_max,
        "poller.naive_max_jobs_current_at_1s": naive_max,
        "poller.cpu_percent_at_max": round(
            _median(current[product_max]["product"], "cpu_ms") / INTERVAL_MS * 100, 1
        )
        if product_max
        else float("nan"),
        "poller.cpu_ms_per_tick_per_1000_jobs": round(
            _median(at_ref["product"], "cpu_ms") * per_1000, 1
        ),
        "poller.naive_cpu_ms_per_tick_per_1000_jobs": round(
            _median(naive_ref, "cpu_ms") * per_1000, 1
        ),
        "poller.upstream_requests_per_tick": _median(at_ref["product"], "requests"),
        "poller.naive_upstream_requests_per_tick": _median(naive_ref, "requests"),
        "poller.reference_jobs": reference,
        "memory.bytes_per_tracked_job": round(memory["product"]["peak_bytes_per_job"]),
        "memory.naive_bytes_per_tracked_job": round(
            memory["naive"]["peak_bytes_per_job"]
        ),
        "memory.retained_bytes_per_job": round(
            memory["product"]["retained_bytes_per_job"]
        ),
        "memory.naive_retained_bytes_per_job": round(
            memory["naive"]["retained_bytes_per_job"]
        ),
        "memory.jobs": memory["product"]["jobs"],
        "memory.naive_jobs": memory["naive"]["jobs"],
        "scaling.slope_all_changing": round(slope(all_changing, "product"), 2),
        "scaling.slope_fixed_changes": round(slope(fixed, "product"), 2),
        "scaling.naive_slope_fixed_changes": round(slope(naive_fixed, "naive"), 2),
        "scaling.cpu_ratio_10k_1k_fixed_changes": round(
            _median(fixed[high]["product"], "cpu_ms")
            / _median(fixed[low]["product"], "cpu_ms"),
            2,
        ),
        "scaling.fixed_sizes": [low, high],
        "scaling.naive_fixed_sizes": naive_sizes,
        "scaling.cpu_ms_by_size": {
            "current_50pct": {
                n: {m: _median(t[m], "cpu_ms") for m in t} for n, t in current.items()
            },
            "all_changing": {
                n: {m: _median(t[m], "cpu_ms") for m in t}
                for n, t in all_changing.items()
            },
            "fixed_changes": {
                n: {m: _median(t[m], "cpu_ms") for m in t} for n, t in fixed.items()
            },
            "naive_fixed_changes": {
                n: {m: _median(t[m], "cpu_ms") for m in t}
                for n, t in naive_fixed.items()
            },
        },
        "poller._ticks": {
            "current_50pct": current,
            "all_changing": all_changing,
            "fixed_changes": fixed,
            "naive_fixed_changes": naive_fixed,
            "memory": memory,
        },
    }
