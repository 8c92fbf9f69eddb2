"""Secrets pass through to CardSavr and nowhere else.

A full flow on real processes (daphne, poller, PostgreSQL, Redis, the
sandbox) carries per-run canaries: a card number, a merchant password with
non-ASCII, an emoji and spaces, a wrong TFA code typed into the page's form,
and a security-style answer refused by validation. The flow includes the
error paths that tend to leak: a CSRF failure carrying the password, a
validation failure, and a reply to a job that is not the cardholder's.

Afterwards every place the portal writes is searched for each canary in raw,
URL-encoded, JSON-escaped and base64 forms: every table (pg_dump), the
PostgreSQL server log with log_statement=all, decoded session rows, the logs
of every portal process at DEBUG, every Redis key and value, and everything
Redis was told (MONITOR) during the flow. Only the sandbox, which plays
CardSavr, may hold them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import subprocess
import time
import urllib.parse

import httpx
import pytest

from tests.scaled.clients import PageSocket, api_session
from tests.scaled.harness import (
    PG_USER,
    PYTHON,
    ROOT,
    USABLE_SITES,
    Stack,
    _pg_bin,
    pg_connect,
    running_stack,
)

pytestmark = pytest.mark.scaled

TOKEN = secrets.token_hex(4)
CANARY_PASSWORD = f"Kanärie {TOKEN} 🐤 pässword"
CANARY_TFA = f"{secrets.randbelow(10**9):09d}7"
CANARY_ANSWER = f"Maiden Näme {TOKEN}x"


def canary_pan() -> str:
    body = "4" + "".join(str(secrets.randbelow(10)) for _ in range(14))
    total = 0
    for index, char in enumerate(reversed(body)):
        digit = int(char)
        if index % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return body + str((10 - total % 10) % 10)


CANARY_PAN = canary_pan()
CANARIES = {
    "merchant password": CANARY_PASSWORD,
    "tfa code": CANARY_TFA,
    "security answer": CANARY_ANSWER,
    "card number": CANARY_PAN,
}


def encodings(value: str) -> list[bytes]:
    raw = value.encode()
    forms = {
        raw,
        urllib.parse.quote_plus(value).encode(),
        urllib.parse.quote(value).encode(),
        json.dumps(value)[1:-1].encode(),
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
    }
    return [form for form in forms if form]


def find_canaries(blob: bytes) -> list[str]:
    return [
        name
        for name, value in CANARIES.items()
        if any(form in blob for form in encodings(value))
    ]


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


async def flow(stack: Stack, seed: dict, port: int) -> dict:
    holder, other = seed["cardholders"][:2]
    site = next(s["pk"] for s in seed["sites"] if s["name"] in USABLE_SITES)
    base = f"http://127.0.0.1:{port}"
    page = PageSocket("127.0.0.1", port, holder["session_key"], holder=1)
    page.start()
    assert await page.wait_for(lambda p: p.snapshots > 0, 30)
    results: dict = {}
    async with httpx.AsyncClient(
        base_url=base, cookies={"sessionid": holder["session_key"]}, timeout=30
    ) as browser:
        # The card form, as the browser posts it.
        form = await browser.get("/card/")
        token = csrf_from(form.text)
        year = time.gmtime().tm_year + 3
        added = await browser.post(
            "/card/",
            data={
                "csrfmiddlewaretoken": token,
                "number": CANARY_PAN,
                "expiration_month": "11",
                "expiration_year": str(year),
                "cvv": "737",
                "name_on_card": "Canary Holder",
                "street": "1 Main St",
                "city": "Seattle",
                "state": "WA",
                "postal_code": "98101",
            },
            headers={"Referer": base + "/card/"},
        )
        results["card"] = added.status_code

    async with api_session("127.0.0.1", port, holder["session_key"]) as api:
        created = await api.post(
            "/api/jobs/",
            json={
                "jobs": [
                    {
                        "merchant_site_id": site,
                        "account_link": {
                            "username": "good_email",
                            "password": CANARY_PASSWORD,
                        },
                    }
                ]
            },
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["jobs"][0]["id"]

        def prompt(kind: str):
            def ready(p: PageSocket) -> bool:
                request = (p.jobs.get(job_id) or {}).get("credential_request")
                return bool(
                    request and request["answerable"] and kind in request["type"]
                )

            return ready

        # The canary password was wrong at the merchant: asked again.
        assert await page.wait_for(prompt("account_link"), 60), page.jobs
        envelope = page.jobs[job_id]["credential_request"]["envelope_id"]

        # Error paths carrying secrets: no CSRF token, a field not asked for,
        # and another cardholder's job.
        async with httpx.AsyncClient(
            base_url=base, cookies={"sessionid": holder["session_key"]}
        ) as no_csrf:
            results["csrf"] = (
                await no_csrf.post(
                    f"/api/jobs/{job_id}/reply/",
                    json={
                        "envelope_id": envelope,
                        "account_link": {
                            "username": "good_email",
                            "password": CANARY_PASSWORD,
                        },
                    },
                )
            ).status_code
        results["invalid"] = (
            await api.post(
                f"/api/jobs/{job_id}/reply/",
                json={
                    "envelope_id": envelope,
                    "account_link": {
                        "username": "good_email",
                        "password": CANARY_PASSWORD,
                        "security_1": CANARY_ANSWER,
                    },
                },
            )
        ).status_code
        async with api_session("127.0.0.1", port, other["session_key"]) as intruder:
            results["foreign"] = (
                await intruder.post(
                    f"/api/jobs/{job_id}/reply/",
                    json={
                        "envelope_id": envelope,
                        "account_link": {"password": CANARY_PASSWORD},
                    },
                )
            ).status_code

        answered = await api.post(
            f"/api/jobs/{job_id}/reply/",
            json={
                "envelope_id": envelope,
                "account_link": {"username": "good_email", "password": "tfa"},
            },
        )
        results["credentials"] = answered.status_code

    # A wrong code typed into the page's own form, then the right one.
    async with httpx.AsyncClient(
        base_url=base, cookies={"sessionid": holder["session_key"]}, timeout=30
    ) as browser:
        for code in (CANARY_TFA, "1234"):
            assert await page.wait_for(prompt("tfa"), 60), page.jobs
            request = page.jobs[job_id]["credential_request"]
            detail = await browser.get(f"/jobs/{job_id}/")
            posted = await browser.post(
                f"/jobs/{job_id}/reply/",
                data={
                    "csrfmiddlewaretoken": csrf_from(detail.text),
                    "envelope_id": request["envelope_id"],
                    "tfa": code,
                },
                headers={"Referer": f"{base}/jobs/{job_id}/"},
            )
            results.setdefault("tfa", []).append(posted.status_code)
            # The page after the redirect, with any message the session held.
            await browser.get(f"/jobs/{job_id}/")
            await page.wait_for(
                lambda p, e=request["envelope_id"]: (
                    (p.jobs[job_id].get("credential_request") or {}).get("envelope_id")
                    != e
                ),
                60,
            )

    results["ended"] = await page.wait_for(
        lambda p: p.jobs[job_id].get("termination_type"), 60
    )
    results["final"] = page.jobs[job_id]
    await page.stop()
    return results


def collect(stack: Stack) -> dict[str, bytes]:
    artifacts: dict[str, bytes] = {}
    for name, proc in stack.procs.items():
        if name != "sandbox":  # the sandbox plays CardSavr
            artifacts[f"log:{name}"] = proc.log_path.read_bytes()
    dump = subprocess.run(
        [
            _pg_bin("pg_dump"),
            "-h",
            "127.0.0.1",
            "-p",
            str(stack.pg_port),
            "-U",
            PG_USER,
            "--data-only",
            stack.database,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    artifacts["pg_dump"] = dump.stdout
    artifacts["pg_server_log"] = (
        stack.private_postgres.dir / "server.log"
    ).read_bytes()
    sessions = subprocess.run(
        [
            PYTHON,
            "manage.py",
            "shell",
            "-c",
            "from django.contrib.sessions.models import Session\n"
            "for s in Session.objects.all(): print(repr(s.get_decoded()))",
        ],
        cwd=ROOT,
        env=stack.env(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    artifacts["sessions_decoded"] = sessions.stdout
    client = stack.redis()
    values = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            values.append(client.get(key) or b"")
        elif kind == "list":
            values.extend(client.lrange(key, 0, -1))
        elif kind == "zset":
            values.extend(client.zrange(key, 0, -1))
        elif kind == "set":
            values.extend(client.smembers(key))
        elif kind == "hash":
            for field, value in client.hgetall(key).items():
                values.extend([field, value])
        values.append(key)
    artifacts["redis_keys"] = b"\n".join(values)
    return artifacts


@pytest.fixture(scope="module")
def canary_run():
    with running_stack(
        private_postgres=True,
        private_redis=True,
        POLL_INTERVAL="0.5",
        DJANGO_LOG_LEVEL="DEBUG",
    ) as stack:
        with pg_connect(port=stack.pg_port) as conn:
            conn.execute("ALTER SYSTEM SET log_statement = 'all'")
            conn.execute("SELECT pg_reload_conf()")
        port_url = stack.redis_url.rsplit(":", 1)[1].split("/")[0]
        stack.start("redis-monitor", ["redis-cli", "-p", port_url, "monitor"])
        stack.start_sandbox(speed=10)
        seed = stack.seed(2, prefix="canary")
        port = stack.start_daphne("web1")
        stack.start_poller("poller1")
        results = asyncio.run(asyncio.wait_for(flow(stack, seed, port), 240))
        time.sleep(1)  # let the last log lines and MONITOR output land
        artifacts = collect(stack)
        stats = stack.sandbox_stats()
        yield results, artifacts, stats


def test_flow_completed_with_every_error_path_refused(canary_run):
    results, _, stats = canary_run
    assert results["card"] == 302
    assert results["csrf"] == 403
    assert results["invalid"] == 400
    assert results["foreign"] == 404
    assert results["credentials"] == 202
    assert results["tfa"] == [302, 302]
    assert results["ended"]
    assert results["final"]["status"] == "SUCCESSFUL"
    # The sandbox saw the initial link, then three replies, each once.
    assert sorted(stats["credential_replies_per_envelope"].values()) == [1, 1, 1]


def test_artifacts_were_collected(canary_run):
    _, artifacts, _ = canary_run
    assert b"jobs_job" in artifacts["pg_dump"]
    assert (
        b"INSERT" in artifacts["pg_server_log"]
        or b"UPDATE" in artifacts["pg_server_log"]
    )
    assert b"_auth_user_id" in artifacts["sessions_decoded"]
    # Rate-limit counters were written (their keys may already have expired
    # when the scan ran: a window can end between the flow and the scan).
    assert b"ratelimit" in artifacts["log:redis-monitor"]
    assert b"ZADD" in artifacts["log:redis-monitor"].upper()
    assert b"DEBUG" in artifacts["log:web1"]


@pytest.mark.parametrize(
    "artifact",
    [
        "pg_dump",
        "pg_server_log",
        "sessions_decoded",
        "redis_keys",
        "log:redis-monitor",
        "log:web1",
        "log:poller1",
    ],
)
def test_no_canary_in(canary_run, artifact):
    _, artifacts, _ = canary_run
    assert find_canaries(artifacts[artifact]) == []


def test_canary_search_finds_every_encoding():
    for value in CANARIES.values():
        for form in encodings(value):
            assert find_canaries(b"prefix " + form + b" suffix")
