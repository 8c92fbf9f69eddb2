"""Credential replies: envelopes, required fields, counting, and message queues."""

from __future__ import annotations

import base64

TFA = {"username": "good_email", "password": "tfa"}


async def _tfa_request(client, clock) -> tuple[dict, dict]:
    job = await client.start_job(TFA)
    clock.advance(20)
    job = await client.job(job["id"])
    return job, job["credential_requests"][0]


async def test_envelope_id_is_base64_of_16_bytes(client, clock):
    _, request = await _tfa_request(client, clock)

    assert len(base64.b64decode(request["envelope_id"])) == 16


async def test_reply_with_a_wrong_envelope_is_400_and_changes_nothing(client, clock):
    job, _ = await _tfa_request(client, clock)
    reply = await client.answer(
        job["id"], base64.b64encode(b"x" * 16).decode(), {"tfa": "1234"}
    )
    after = await client.job(job["id"])

    assert reply.status == 400
    assert reply.body["_errors"][0]["property"] == "envelope_id"
    assert after["status"] == "PENDING_TFA"
    assert after["credential_requests"]


async def test_reply_without_an_envelope_is_400(client, clock):
    job, _ = await _tfa_request(client, clock)
    reply = await client.call(
        "PUT",
        f"/place_card_on_single_site_jobs/{job['id']}",
        {"account": {"account_link": {"tfa": "1234"}}},
    )

    assert reply.status == 400
    assert reply.body["_errors"][0]["property"] == "envelope_id"


async def test_second_reply_to_a_used_envelope_is_400(client, clock):
    job, request = await _tfa_request(client, clock)
    first = await client.answer(job["id"], request["envelope_id"], {"tfa": "1234"})
    second = await client.answer(job["id"], request["envelope_id"], {"tfa": "1234"})

    assert first.status == 200
    assert second.status == 400
    assert "already answered" in second.body["_errors"][0]["message"]


async def test_reply_missing_a_field_is_400_naming_it(client, clock):
    job = await client.start_job({"username": "good_email", "password": "security"})
    clock.advance(20)
    request = (await client.job(job["id"]))["credential_requests"][0]

    reply = await client.answer(
        job["id"], request["envelope_id"], {"security_1": "Max"}
    )

    assert reply.status == 400
    assert reply.body["_errors"][0]["property"] == "security_2"


async def test_accepted_replies_are_counted_per_envelope(client, clock, manual_sandbox):
    job, request = await _tfa_request(client, clock)
    await client.answer(job["id"], "not-an-envelope", {"tfa": "1234"})
    await client.answer(job["id"], request["envelope_id"], {"tfa": "1234"})

    stats = manual_sandbox.engine.stats()
    assert stats["credential_replies_per_envelope"][request["envelope_id"]] == 1
    assert "not-an-envelope" not in stats["credential_replies_per_envelope"]


async def test_reply_through_the_account_endpoint_with_envelope(client, clock):
    job, request = await _tfa_request(client, clock)
    reply = await client.call(
        "PUT",
        f"/cardsavr_accounts/{job['account_id']}",
        {"account_link": {"tfa": "1234"}},
        {"x-cardsavr-envelope-id": request["envelope_id"]},
    )
    after = await client.job(job["id"])

    assert reply.status == 200
    assert after["status"] == "TFA_RECEIVED"


async def test_status_messages_are_consumed_on_read(client, clock):
    job = await client.start_job({"username": "good_email", "password": "no_tfa"})
    clock.advance(4)
    path = f"/messages/place_card_on_single_site_jobs/{job['id']}"

    first = await client.call("GET", path)
    second = await client.call("GET", path)

    assert [m["message"]["status"] for m in first.body] == ["REQUESTED", "QUEUED"]
    assert all(m["type"] == "job_status" for m in first.body)
    assert second.body == []


async def test_open_credential_request_repeats_until_answered(client, clock):
    job, request = await _tfa_request(client, clock)
    path = f"/messages/cardholders/{job['cardholder_id']}"

    first = await client.call("GET", path)
    second = await client.call("GET", path)
    await client.answer(job["id"], request["envelope_id"], {"tfa": "1234"})
    third = await client.call("GET", path)

    def envelopes(reply):
        return [m.get("envelope_id") for m in reply.body if m["type"] == "tfa"]

    assert envelopes(first) == [request["envelope_id"]]
    assert envelopes(second) == [request["envelope_id"]]
    assert [m["type"] for m in second.body] == ["tfa"]
    assert envelopes(third) == []
    assert third.body[-1]["message"]["status"] == "TFA_RECEIVED"


async def test_final_status_message_carries_termination_type(client, clock):
    job = await client.start_job({"username": "good_email", "password": "no_tfa"})
    clock.advance(60)

    reply = await client.call(
        "GET", f"/messages/place_card_on_single_site_jobs/{job['id']}"
    )

    assert reply.body[-1]["message"]["status"] == "SUCCESSFUL"
    assert reply.body[-1]["message"]["termination_type"] == "BILLABLE"


async def test_each_session_has_its_own_message_queue(client, clock, manual_sandbox):
    from .wire import WireClient

    job = await client.start_job({"username": "good_email", "password": "no_tfa"})
    path = f"/messages/place_card_on_single_site_jobs/{job['id']}"
    await client.call("GET", path)
    async with WireClient(manual_sandbox) as other:
        await other.login()
        theirs = await other.call("GET", path)

    assert [m["message"]["status"] for m in theirs.body] == ["REQUESTED"]


async def test_legacy_credential_response_endpoint_answers_the_request(client, clock):
    job, request = await _tfa_request(client, clock)
    reply = await client.call(
        "POST",
        f"/messages/place_card_on_single_site_jobs/{job['id']}/credential_responses",
        {
            "envelope_id": request["envelope_id"],
            "type": "tfa_response",
            "message": "1234",
        },
    )
    clock.advance(60)
    done = await client.job(job["id"])

    assert reply.body["message"] == "submitted"
    assert done["status"] == "SUCCESSFUL"


async def test_envelope_header_spelled_with_underscore_is_accepted(client, clock):
    job, request = await _tfa_request(client, clock)
    reply = await client.call(
        "PUT",
        f"/place_card_on_single_site_jobs/{job['id']}",
        {"account": {"account_link": {"tfa": "1234"}}},
        {"x-cardsavr-envelope_id": request["envelope_id"]},
    )

    assert reply.status == 200
    assert reply.body["status"] == "TFA_RECEIVED"
