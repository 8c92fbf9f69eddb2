"""(d) A cardholder's reply reaching the server -> the PUT reaching CardSavr.

The product's poller runs inside daphne over N busy jobs (the driver changes
half of them a second) while cardholders answer one-time-code prompts through
`POST /api/jobs/<id>/reply/`, one after another. The server stamps each reply
as its request arrives; the sandbox stamps each PUT as it arrives.
"""

from __future__ import annotations

import random
import time

import httpx
from django.utils import timezone

from benchmarks import bench_poller, common, data
from jobs.models import CredentialRequest

FULL = {"busy": 1000, "replies": 60, "per_second": 500, "warmup": 3.0}
SMOKE = {"busy": 20, "replies": 3, "per_second": 10, "warmup": 0.5}
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
            statuses = []
            rng = random.Random(3)
            for row, session in zip(rows, sessions, strict=True):
                with httpx.Client(
                    base_url=f"http://127.0.0.1:{port}",
                    cookies={"sessionid": session, "csrftoken": CSRF},
                    timeout=60,
                ) as client:
                    answer = client.post(
                        f"/api/jobs/{row.pk}/reply/",
                        json={
                            "envelope_id": envelopes[str(row.cardsavr_id)],
                            "account_link": {"tfa": "1234"},
                        },
                        headers={"X-CSRFToken": CSRF},
                    )
                statuses.append(answer.status_code)
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
    delays = [
        (put - arrived) / 1e6 for (_, arrived), put in zip(arrivals, puts, strict=True)
    ]
    return {
        "reply.p50_ms": round(common.percentile(delays, 50), 2),
        "reply.p99_ms": round(common.percentile(delays, 99), 2),
        "reply.max_ms": round(max(delays), 2),
        "reply.replies": len(delays),
        "reply.busy_jobs": size["busy"],
    }
