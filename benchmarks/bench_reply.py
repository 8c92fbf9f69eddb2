"""(d) A cardholder's reply reaching the server -> the PUT reaching CardSavr.

The product's poller runs inside daphne over N busy jobs (the driver changes
half of them a second) while cardholders answer one-time-code prompts, one
after another, taking turns between the two ways the page sends an answer:
over its open websocket (the live page's way, `reply.*` figures) and through
`POST /api/jobs/<id>/reply/` (the way without a socket, `reply.http_*`). The
server stamps each reply as its frame or request arrives; the sandbox stamps
each PUT as it arrives.
"""

from __future__ import annotations

import json
import random
import time

import httpx
from django.utils import timezone
from websockets.sync.client import connect as websocket_connect

from benchmarks import bench_poller, common, data
from jobs.models import CredentialRequest

FULL = {"busy": 1000, "replies": 80, "per_second": 500, "warmup": 3.0}
SMOKE = {"busy": 20, "replies": 4, "per_second": 10, "warmup": 0.5}
CSRF = "benchcsrfsecretbenchcsrfsecret00"  # 32 characters, as Django's secret


def run(smoke: bool) -> dict:
    size = SMOKE if smoke else FULL
    workdir = common.workdir()
    sandbox = common.Child("benchmarks.sandbox_proc", workdir)
    with common.children(sandbox):
        info = sandbox.read(60)
        busy_ids = sandbox.call(cmd="create_jobs", count=size["busy"])["job_ids"]
        reply_ids = sandbox.call(cmd="create_jobs", count=size["replies"])["job_ids"]
        envelopes = sandbox.call(cmd="open_tfa", job_ids=reply_ids)["envelopes"]
        site = data.merchant_site()
        busy_holders = data.cardholders("rpb", size["busy"], 5_000_000)
        data.jobs(busy_holders, busy_ids, site)
        holders = data.cardholders("rpl", size["replies"], 6_000_000)
        rows = data.jobs(holders, reply_ids, site)
        CredentialRequest.objects.bulk_create(
            CredentialRequest(
                job=row,
                envelope_id=envelopes[str(row.cardsavr_id)],
                type="tfa",
                account_link=[{"key_name": "tfa", "label": "Code", "secret": True}],
                opened_at=timezone.now(),
            )
            for row in rows
        )
        sessions = data.sessions(holders)
        server = common.Child(
            "benchmarks.portal_proc", env=bench_poller.portal_environment(info)
        )
        with common.children(server):
            port = server.read(60)["port"]
            server.call(cmd="start_poller", interval=1.0)
            sandbox.call(
                cmd="drive",
                job_ids=busy_ids,
                per_second=size["per_second"],
                seconds=600,
            )
            time.sleep(size["warmup"])
            sandbox.call(cmd="put_times")
            server.call(cmd="reply_arrivals")
            statuses, ways = [], []
            rng = random.Random(3)
            for number, (row, session) in enumerate(zip(rows, sessions, strict=True)):
                envelope = envelopes[str(row.cardsavr_id)]
                way = "socket" if number % 2 == 0 else "http"
                reply = _reply_over_socket if way == "socket" else _reply_over_http
                statuses.append(reply(port, session, row.pk, envelope))
                ways.append(way)
                # Replies land at random points of the poll tick.
                time.sleep(rng.uniform(0.05, 0.4))
            arrivals = server.call(cmd="reply_arrivals")["arrivals"]
            puts = sandbox.call(cmd="put_times")["times"]
            server.call(cmd="stop_poller", timeout=600)
            sandbox.call(cmd="drive_wait", stop=True, timeout=600)
    accepted = statuses.count(202)
    if accepted != len(rows) or len(puts) != len(arrivals):
        raise RuntimeError(
            f"replies answered {sorted(set(statuses))}; {len(arrivals)} arrived, "
            f"{len(puts)} PUTs reached the sandbox"
        )
    delays: dict[str, list[float]] = {"socket": [], "http": []}
    for way, (_, arrived), put in zip(ways, arrivals, puts, strict=True):
        delays[way].append((put - arrived) / 1e6)
    out = {"reply.busy_jobs": size["busy"]}
    for way, prefix in (("socket", "reply."), ("http", "reply.http_")):
        out[prefix + "p50_ms"] = round(common.percentile(delays[way], 50), 2)
        out[prefix + "p99_ms"] = round(common.percentile(delays[way], 99), 2)
        out[prefix + "max_ms"] = round(max(delays[way]), 2)
        out[prefix + "replies"] = len(delays[way])
    return out


def _reply_over_socket(port: int, session: str, job_pk: int, envelope: str) -> int:
    with websocket_connect(
        f"ws://127.0.0.1:{port}/ws/jobs/",
        origin=f"http://127.0.0.1:{port}",
        additional_headers={"Cookie": f"sessionid={session}"},
        compression=None,
        open_timeout=60,
    ) as socket:
        socket.recv(timeout=60)  # the snapshot
        socket.send(
            json.dumps(
                {
                    "type": "reply",
                    "ref": "bench",
                    "job_id": job_pk,
                    "envelope_id": envelope,
                    "account_link": {"tfa": "1234"},
                }
            )
        )
        while True:
            frame = json.loads(socket.recv(timeout=60))
            if frame["type"] == "reply.result":
                return frame["status"]


def _reply_over_http(port: int, session: str, job_pk: int, envelope: str) -> int:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        cookies={"sessionid": session, "csrftoken": CSRF},
        timeout=60,
    ) as client:
        answer = client.post(
            f"/api/jobs/{job_pk}/reply/",
            json={"envelope_id": envelope, "account_link": {"tfa": "1234"}},
            headers={"X-CSRFToken": CSRF},
        )
    return answer.status_code
