"""Run the benchmarks: `python -m benchmarks.run [--smoke] [--only NAMES]`.

Each run works in its own temporary directory (database, sandbox certificate,
logs) and removes it afterwards; var/portal.sqlite3 is never opened. The full
run writes benchmarks/results.json and benchmarks/results.md and prints the
table; --smoke runs every benchmark at a small size, checks that each reported
all its figures, and writes its results under --out (default: the temporary
directory, thrown away).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import common

BENCHMARKS = ("websocket", "poller", "latency", "reply")

# The keys each benchmark must report (results.json names).
REQUIRED = {
    "websocket": (
        "websocket.idle_sockets",
        "websocket.rss_kib_per_socket",
        "websocket.fanout_1000_ms",
        "websocket.naive_fanout_1000_ms",
    ),
    "poller": (
        "poller.max_jobs_current_at_1s",
        "poller.cpu_ms_per_tick_per_1000_jobs",
        "poller.naive_cpu_ms_per_tick_per_1000_jobs",
        "poller.upstream_requests_per_tick",
        "poller.naive_upstream_requests_per_tick",
        "memory.bytes_per_tracked_job",
        "scaling.slope_all_changing",
        "scaling.slope_fixed_changes",
    ),
    "latency": (
        "latency.p50_ms",
        "latency.p95_ms",
        "latency.p99_ms",
        "latency.pipeline_p99_ms",
        "latency.naive_p95_ms",
    ),
    "reply": ("reply.p50_ms", "reply.p99_ms", "reply.http_p50_ms", "reply.http_p99_ms"),
}


def _prepare_environment(workdir: str) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir}/bench.sqlite3"
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    os.environ["BENCH_WORKDIR"] = workdir
    # Many cardholders answer prompts within seconds; the per-cardholder reply
    # limit guards against guessing, not against this harness.
    os.environ.setdefault("RATELIMIT_REPLIES_PER_CARDHOLDER", "100000")
    import django

    django.setup()
    from django.core.management import call_command

    from benchmarks import data

    data.check_database_is_ours(workdir)
    call_command("migrate", verbosity=0, interactive=False)


def _missing(name: str, results: dict) -> list[str]:
    bad = []
    for key in REQUIRED[name]:
        value = results.get(key)
        if not isinstance(value, int | float) or (
            isinstance(value, float) and math.isnan(value)
        ):
            bad.append(key)
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, checks")
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    parser.add_argument("--out", help="directory for results.json and results.md")
    parser.add_argument(
        "--detail", action="store_true", help="also write every tick (detail.json)"
    )
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]

    # A stopped run still removes its directory and its child processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = tempfile.mkdtemp(prefix="cardsavr-bench-")
    started = time.monotonic()
    results: dict = {
        "machine": common.machine(),
        "mode": "smoke" if args.smoke else "full",
    }
    failures: dict[str, str] = {}
    try:
        _prepare_environment(workdir)
        from benchmarks import data

        for name in names:
            module = importlib.import_module(f"benchmarks.bench_{name}")
            begun = time.monotonic()
            print(f"-- {name} ...", file=sys.stderr, flush=True)
            try:
                # Every benchmark mirrors its own sandbox's jobs (whose ids
                # start over), so none sees another's rows.
                data.wipe_jobs()
                figures = module.run(smoke=args.smoke)
            except Exception:
                failures[name] = traceback.format_exc()
                print(failures[name], file=sys.stderr)
                continue
            results.update(figures)
            results.setdefault("seconds", {})[name] = round(time.monotonic() - begun, 1)
            missing = _missing(name, figures)
            if missing:
                failures[name] = f"did not report {', '.join(missing)}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["seconds_total"] = round(time.monotonic() - started, 1)
    results["machine"]["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    if failures:
        results["failures"] = failures

    from benchmarks import report

    out = Path(args.out) if args.out else None
    if out is None and not args.smoke:
        out = Path(__file__).resolve().parent
    table = report.table(results)
    print(table)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(
            json.dumps(report.public(results), indent=2, sort_keys=True) + "\n"
        )
        (out / "results.md").write_text(report.markdown(results, table))
        if args.detail:
            (out / "detail.json").write_text(json.dumps(results, indent=1, default=str))
    for name, failure in failures.items():
        print(f"FAILED {name}: {failure.splitlines()[-1]}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
