"""Injected faults hit the requests they were configured for, and only those."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest

from .wire import WireClient


async def test_429_carries_retry_after_and_errors_then_clears(sandbox, live_client):
    sandbox.engine.faults.add("429", count=1, retry_after=3)

    limited = await live_client.call("GET", "/merchant_sites/1")
    normal = await live_client.call("GET", "/merchant_sites/1")

    assert limited.status == 429
    assert limited.headers["retry-after"] == "3"
    assert limited.body["_errors"]
    assert normal.status == 200


@pytest.mark.parametrize("kind", ["500", "503"])
async def test_server_error_faults_answer_with_their_status(sandbox, live_client, kind):
    sandbox.engine.faults.add(kind, count=1)

    reply = await live_client.call("GET", "/merchant_sites/1")

    assert reply.status == int(kind)
    assert reply.body["_errors"]


async def test_fault_count_limits_how_many_requests_fail(sandbox, live_client):
    sandbox.engine.faults.add("503", count=2)

    statuses = [
        (await live_client.call("GET", "/merchant_sites/1")).status for _ in range(3)
    ]

    assert statuses == [503, 503, 200]


async def test_garbage_fault_sends_a_body_that_is_not_json(sandbox, live_client):
    sandbox.engine.faults.add("garbage", count=1)

    response = await live_client.http.send(
        live_client.build("GET", "/merchant_sites/1")
    )

    assert response.status_code == 200
    with pytest.raises(ValueError):
        json.loads(response.content)


async def test_drop_fault_cuts_the_connection(sandbox, live_client):
    sandbox.engine.faults.add("drop", count=1)

    with pytest.raises(httpx.TransportError):
        await live_client.call("GET", "/merchant_sites/1")
    after = await live_client.call("GET", "/merchant_sites/1")

    assert after.status == 200


async def test_drip_fault_trickles_a_valid_body_in_pieces(sandbox, live_client):
    sandbox.engine.faults.add("drip", count=1, seconds=0.2)
    request = live_client.build("GET", "/merchant_sites/1")

    chunks = []
    response = await live_client.http.send(request, stream=True)
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
    await response.aclose()
    decoded = live_client.decode(
        request,
        httpx.Response(200, headers=response.headers, content=b"".join(chunks)),
        live_client.key,
    )

    assert len(chunks) > 1
    assert decoded.signature_ok is True
    assert decoded.body["id"] == 1


async def test_delay_fault_outlasts_a_short_client_timeout(sandbox):
    async with WireClient(sandbox) as client:
        await client.login()
        client.http.timeout = httpx.Timeout(0.2)
        sandbox.engine.faults.add("delay", count=1, seconds=1.0)
        with pytest.raises(httpx.ReadTimeout):
            await client.call("GET", "/merchant_sites/1")


async def test_job_fault_only_hits_that_job(sandbox, live_client):
    hit = await live_client.start_job(None, site_id=10)
    spared = await live_client.start_job(None, site_id=11)
    sandbox.engine.faults.add("500", job_id=hit["id"])

    failed = await live_client.call(
        "GET", f"/place_card_on_single_site_jobs/{hit['id']}"
    )
    fine = await live_client.call(
        "GET", f"/place_card_on_single_site_jobs/{spared['id']}"
    )
    sites = await live_client.call("GET", "/merchant_sites/1")

    assert failed.status == 500
    assert fine.status == 200
    assert sites.status == 200


async def test_fault_with_duration_expires_with_the_clock(
    client, clock, manual_sandbox
):
    manual_sandbox.engine.faults.add("503", duration=30)

    during = await client.call("GET", "/merchant_sites/1")
    clock.advance(31)
    after = await client.call("GET", "/merchant_sites/1")

    assert during.status == 503
    assert after.status == 200


async def _control(sandbox, method: str, path: str, key: str | None, body=None):
    headers = {"x-sandbox-key": key} if key else {}
    async with httpx.AsyncClient(
        base_url=sandbox.url.rstrip("/"),
        verify=ssl.create_default_context(cafile=sandbox.ca_file),
    ) as http:
        return await http.request(method, path, json=body, headers=headers)


async def test_faults_endpoint_needs_the_app_key(sandbox):
    response = await _control(
        sandbox, "POST", "/_sandbox/faults", None, {"kind": "500"}
    )

    assert response.status_code == 403
    assert sandbox.engine.faults.active() == []


async def test_faults_endpoint_adds_and_clears_faults(sandbox, live_client):
    key = sandbox.config.app_key
    added = await _control(
        sandbox, "POST", "/_sandbox/faults", key, {"kind": "503", "count": 1}
    )
    failed = await live_client.call("GET", "/merchant_sites/1")
    await _control(
        sandbox, "POST", "/_sandbox/faults", key, {"kind": "500", "count": None}
    )
    cleared = await _control(sandbox, "DELETE", "/_sandbox/faults", key)
    fine = await live_client.call("GET", "/merchant_sites/1")

    assert added.status_code == 201
    assert added.json()["kind"] == "503"
    assert failed.status == 503
    assert cleared.status_code == 200
    assert fine.status == 200


async def test_faults_endpoint_refuses_an_unknown_kind(sandbox):
    response = await _control(
        sandbox, "POST", "/_sandbox/faults", sandbox.config.app_key, {"kind": "fire"}
    )

    assert response.status_code == 400
    assert "kind" in response.json()["error"]


async def test_stats_count_requests_per_route_and_jobs_by_status(sandbox, live_client):
    await live_client.call("GET", "/merchant_sites/1")
    response = await _control(sandbox, "GET", "/_sandbox/stats", sandbox.config.app_key)

    stats = response.json()
    assert stats["requests_per_route"]["GET /merchant_sites/{id}"] >= 1
    assert isinstance(stats["jobs_by_status"], dict)
    assert "credential_replies_per_envelope" in stats


async def test_job_history_lists_status_changes_with_timestamps(sandbox, live_client):
    job = await live_client.start_job(None, site_id=12)
    response = await _control(
        sandbox, "GET", f"/_sandbox/jobs/{job['id']}/history", sandbox.config.app_key
    )

    history = response.json()
    assert [h["status"] for h in history] == ["REQUESTED", "PENDING_NEWCREDS"]
    assert all(h["at"].endswith("Z") for h in history)
