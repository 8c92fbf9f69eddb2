"""(a) Status change at CardSavr -> websocket frame, at a 1 s poll interval.

The sandbox holds N jobs, one per cardholder; each cardholder has one open
socket. The driver changes jobs at uniformly random moments (status, status
message and percent; the message carries a sequence number). Two daphne
processes serve the portal, each with its own copy of the database and its
own poller running inside it, as the embedded mode runs it: the product's
poller and the naive loop. They take turns (A/B/A/B), one window each, while
the other stands still. A change's latency is the time from the driver's
change to the first frame on the cardholder's socket that shows it or a later
change of the same job. The pipeline overhead is measured from the moment the
poll response holding the change arrived in the server to that frame.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict

from django.conf import settings

from benchmarks import bench_poller, common, data

FULL = {
    "jobs": 1000,
    "per_second": 500,
    "window": 12.0,
    "warmup": 3.0,
    "settle": 6.0,
    "reps": 2,
}
SMOKE = {
    "jobs": 20,
    "per_second": 10,
    "window": 1.0,
    "warmup": 0.5,
    "settle": 2.0,
    "reps": 1,
}
INTERVAL = 1.0


def _latencies(changes, records, arrivals, pk_of: dict[int, int]):
    """Per change: (change -> frame ms, poll response -> frame ms or None)."""
    frames: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for recv_ns, job_pk, message, _version in records:
        if message.startswith("bench step "):
            frames[job_pk].append((int(message.rsplit(" ", 1)[1]), recv_ns))
    for job_frames in frames.values():
        job_frames.sort(key=lambda f: f[1])
    # When each job's reads arrived, with the step each one showed.
    reads: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for arrived_ns, jobs in arrivals:
        for cardsavr_id, step in jobs:
            reads[cardsavr_id].append((arrived_ns, step))
    for job_reads in reads.values():
        job_reads.sort()
    latencies, pipeline, missing = [], [], 0
    for cardsavr_id, changed_ns, marker in changes:
        seq = int(marker.rsplit(" ", 1)[1])
        shown = next(
            (recv for s, recv in frames.get(pk_of[cardsavr_id], ()) if s >= seq), None
        )
        if shown is None:
            missing += 1
            continue
        latencies.append((shown - changed_ns) / 1e6)
        # The first read that showed this change (or a later one).
        held = next(
            (arrived for arrived, step in reads.get(cardsavr_id, ()) if step >= seq),
            None,
        )
        if held is not None and held <= shown:
            pipeline.append((shown - held) / 1e6)
    return latencies, pipeline, missing


def run(smoke: bool) -> dict:
    size = SMOKE if smoke else FULL
    workdir = common.workdir()
    sandbox = common.Child("benchmarks.sandbox_proc", workdir)
    with common.children(sandbox):
        info = sandbox.read(60)
        job_ids = sandbox.call(cmd="create_jobs", count=size["jobs"])["job_ids"]
        holders = data.cardholders("lat", size["jobs"], 4_000_000)
        rows = data.jobs(holders, job_ids, data.merchant_site())
        pk_of = {row.cardsavr_id: row.pk for row in rows}
        sessions = data.sessions(holders)
        # Each pipeline mirrors into its own copy of the database.
        database = str(settings.DATABASES["default"]["NAME"])
        naive_database = f"{workdir}/naive.sqlite3"
        with sqlite3.connect(database) as db, sqlite3.connect(naive_database) as copy:
            db.backup(copy)
        env = bench_poller.portal_environment(info)
        servers = {
            "product": common.Child("benchmarks.portal_proc", env=env),
            "naive": common.Child(
                "benchmarks.portal_proc",
                env={
                    **env,
                    "BENCH_NAIVE_LAYER": "1",
                    "DATABASE_URL": f"sqlite:///{naive_database}",
                },
            ),
        }
        clients = {mode: common.Child("benchmarks.wsclient") for mode in servers}
        with common.children(*servers.values(), *clients.values()):
            for mode, server in servers.items():
                port = server.read(60)["port"]
                clients[mode].read(30)
                opened = clients[mode].call(
                    cmd="open",
                    url=f"ws://127.0.0.1:{port}/ws/jobs/",
                    origin=f"http://127.0.0.1:{port}",
                    sessions=sessions,
                    timeout=900,
                )
                if opened["open"] < len(sessions):
                    raise RuntimeError(f"{mode}: sockets did not open: {opened}")
                common.log("latency: %s sockets open on %s", opened["open"], mode)
            results: dict[str, dict] = {
                m: {"latency": [], "pipeline": [], "missing": 0, "cpu": []}
                for m in servers
            }
            for rep in range(size["reps"]):
                for mode, server in servers.items():
                    common.log("latency: window %s, %s", rep + 1, mode)
                    window(
                        size,
                        sandbox,
                        server,
                        clients[mode],
                        mode,
                        job_ids,
                        pk_of,
                        results[mode],
                        seed=rep,
                    )
    return summarize(size, results)


def window(size, sandbox, server, client, mode, job_ids, pk_of, into, seed) -> None:
    start = "start_poller" if mode == "product" else "start_naive"
    server.call(cmd=start, interval=INTERVAL)
    time.sleep(size["warmup"])
    server.call(cmd="poll_arrivals")
    client.call(cmd="record", on=True)
    cpu_before = common.cpu_seconds(server.pid)
    sandbox.call(
        cmd="drive",
        job_ids=job_ids,
        per_second=size["per_second"],
        seconds=size["window"],
        seed=seed,
    )
    changes = sandbox.call(cmd="drive_wait", timeout=size["window"] + 60)["changes"]
    # Let the last changes through (a naive pass may be long).
    time.sleep(size["settle"])
    into["cpu"].append(
        (common.cpu_seconds(server.pid) - cpu_before)
        / (size["window"] + size["settle"])
    )
    records = client.call(cmd="records")["records"]
    client.call(cmd="record", on=False)
    arrivals = server.call(cmd="poll_arrivals")["arrivals"]
    server.call(cmd="stop_poller", timeout=600)
    latencies, pipeline, missing = _latencies(changes, records, arrivals, pk_of)
    into["latency"].extend(latencies)
    into["pipeline"].extend(pipeline)
    into["missing"] += missing


def summarize(size, results) -> dict:
    out: dict = {
        "latency.jobs": size["jobs"],
        "latency.changes_per_second": size["per_second"],
        "latency.interval_ms": INTERVAL * 1000,
    }
    for mode, prefix in (("product", "latency."), ("naive", "latency.naive_")):
        found = results[mode]
        lat, pipe = found["latency"], found["pipeline"]
        out[prefix + "p50_ms"] = round(common.percentile(lat, 50), 1)
        out[prefix + "p95_ms"] = round(common.percentile(lat, 95), 1)
        out[prefix + "p99_ms"] = round(common.percentile(lat, 99), 1)
        out[prefix + "max_ms"] = round(max(lat), 1) if lat else float("nan")
        out[prefix + "pipeline_p50_ms"] = round(common.percentile(pipe, 50), 1)
        out[prefix + "pipeline_p99_ms"] = round(common.percentile(pipe, 99), 1)
        out[prefix + "changes_seen"] = len(lat)
        out[prefix + "changes_never_shown"] = found["missing"]
        out[prefix + "server_cpu_share"] = round(common.median(found["cpu"]), 2)
    return out
