"""Every scripted outcome of the virtual browser, stepped with a manual clock."""

from __future__ import annotations

import asyncio

import pytest

from sandbox import scenarios

GOOD = {"username": "good_email", "password": "no_tfa"}


async def _after(client, clock, job_id: int, seconds: float) -> dict:
    clock.advance(seconds)
    return await client.job(job_id)


def _statuses(sandbox, job_id: int) -> list[str]:
    return [h["status"] for h in sandbox.engine.job_history(job_id)]


async def _pending(client, clock, account_link: dict, **kwargs) -> tuple[dict, dict]:
    """Start a job and run it until it asks the user something."""
    job = await client.start_job(account_link, **kwargs)
    job = await _after(client, clock, job["id"], 20)
    assert job["credential_requests"], job["status"]
    return job, job["credential_requests"][0]


async def test_good_email_and_no_tfa_walk_the_lifecycle_to_billable(
    client, clock, manual_sandbox
):
    job = await client.start_job(GOOD)
    done = await _after(client, clock, job["id"], 60)

    assert (done["status"], done["termination_type"]) == ("SUCCESSFUL", "BILLABLE")
    assert done["percent_complete"] == 100
    assert done["auth_percent_complete"] == 100
    assert done["started_on"] and done["completed_on"] and done["last_updated_on"]
    assert _statuses(manual_sandbox, job["id"]) == [
        "REQUESTED",
        "QUEUED",
        "IN_PROGRESS",
        "AUTH",
        "LOGIN_SUBMITTED",
        "UPDATING",
        "UPDATING",
        "SUCCESSFUL",
    ]


async def test_good_password_also_succeeds(client, clock):
    job = await client.start_job(
        {"username": "good_email", "password": "good_password"}
    )
    done = await _after(client, clock, job["id"], 60)

    assert done["status"] == "SUCCESSFUL"


async def test_job_timeout_counts_down_milliseconds_from_five_minutes(client, clock):
    job = await client.start_job(GOOD)
    later = await _after(client, clock, job["id"], 3)

    assert job["job_timeout"] == 300_000
    assert later["job_timeout"] == 297_000


async def test_progress_fields_rise_and_auth_reaches_100_once_signed_in(client, clock):
    job = await client.start_job(GOOD)
    signing_in = await _after(client, clock, job["id"], 9)
    updating = await _after(client, clock, job["id"], 9)

    assert signing_in["status"] == "AUTH"
    assert 0 < signing_in["auth_percent_complete"] < 100
    assert updating["status"] == "UPDATING"
    assert updating["auth_percent_complete"] == 100
    assert updating["percent_complete"] > signing_in["percent_complete"]


async def test_tfa_code_1234_passes(client, clock, manual_sandbox):
    job, request = await _pending(
        client, clock, {"username": "good_email", "password": "tfa"}
    )
    reply = await client.answer(job["id"], request["envelope_id"], {"tfa": "1234"})
    done = await _after(client, clock, job["id"], 60)

    assert job["status"] == "PENDING_TFA"
    assert request["type"] == "tfa"
    assert [f["key_name"] for f in request["account_link"]] == ["tfa"]
    assert reply.status == 200
    assert reply.body["status"] == "TFA_RECEIVED"
    assert done["status"] == "SUCCESSFUL"
    assert {"TFA_RECEIVED", "TFA_SUBMITTED"} <= set(
        _statuses(manual_sandbox, job["id"])
    )


async def test_asking_the_user_extends_job_timeout(client, clock):
    job, request = await _pending(
        client, clock, {"username": "good_email", "password": "tfa"}
    )

    assert request["message"]["job_timeout"] >= 240_000
    assert job["job_timeout"] >= 240_000


async def test_wrong_tfa_code_reprompts_with_a_new_envelope(client, clock):
    job, request = await _pending(
        client, clock, {"username": "good_email", "password": "tfa"}
    )
    await client.answer(job["id"], request["envelope_id"], {"tfa": "0000"})
    again = await _after(client, clock, job["id"], 10)

    second = again["credential_requests"][0]
    assert again["status"] == "PENDING_TFA"
    assert second["envelope_id"] != request["envelope_id"]
    assert "not accept" in second["message"]["status_message"]


async def test_second_wrong_tfa_code_ends_too_many_tfa_failures(client, clock):
    job, request = await _pending(
        client, clock, {"username": "good_email", "password": "tfa"}
    )
    await client.answer(job["id"], request["envelope_id"], {"tfa": "0000"})
    again = await _after(client, clock, job["id"], 10)
    await client.answer(
        job["id"], again["credential_requests"][0]["envelope_id"], {"tfa": "9999"}
    )
    done = await _after(client, clock, job["id"], 10)

    assert (done["status"], done["termination_type"]) == (
        "TOO_MANY_TFA_FAILURES",
        "USER_DATA_FAILURE",
    )


@pytest.mark.parametrize("key", ["tfa_message", "tfa"])
async def test_push_approval_is_acked_under_its_key_name_or_tfa(client, clock, key):
    job, request = await _pending(
        client, clock, {"username": "good_email", "password": "tfa_message"}
    )
    reply = await client.answer(job["id"], request["envelope_id"], {key: "ack"})
    done = await _after(client, clock, job["id"], 60)

    assert job["status"] == "PENDING_TFA_MESSAGE"
    assert request["type"] == "tfa_message"
    assert request["account_link"][0]["key_name"] == "tfa_message"
    assert request["account_link"][0]["label"].startswith("Tap ")
    assert reply.status == 200
    assert done["status"] == "SUCCESSFUL"


async def test_security_questions_pass_with_max_and_smith(client, clock):
    job, request = await _pending(
        client, clock, {"username": "good_email", "password": "security"}
    )
    await client.answer(
        job["id"], request["envelope_id"], {"security_1": "Max", "security_2": "Smith"}
    )
    done = await _after(client, clock, job["id"], 60)

    assert request["type"] == "security"
    assert [f["key_name"] for f in request["account_link"]] == [
        "security_1",
        "security_2",
    ]
    assert all(f["label"].endswith("?") for f in request["account_link"])
    assert done["status"] == "SUCCESSFUL"


async def test_security_answers_are_case_sensitive(client, clock):
    job, request = await _pending(
        client, clock, {"username": "good_email", "password": "security"}
    )
    await client.answer(
        job["id"], request["envelope_id"], {"security_1": "max", "security_2": "Smith"}
    )
    done = await _after(client, clock, job["id"], 60)

    assert (done["status"], done["termination_type"]) == (
        "INVALID_SECURITY_ANSWERS",
        "USER_DATA_FAILURE",
    )


async def test_unknown_username_asks_for_new_credentials(client, clock):
    job, request = await _pending(
        client, clock, {"username": "someone", "password": "no_tfa"}
    )
    await client.answer(job["id"], request["envelope_id"], GOOD)
    done = await _after(client, clock, job["id"], 60)

    assert job["status"] == "PENDING_NEWCREDS"
    assert request["type"] == "initial_account_link"
    assert [f["key_name"] for f in request["account_link"]] == ["username", "password"]
    assert done["status"] == "SUCCESSFUL"


async def test_second_bad_login_ends_too_many_login_failures(client, clock):
    job, request = await _pending(
        client, clock, {"username": "someone", "password": "x"}
    )
    await client.answer(
        job["id"], request["envelope_id"], {"username": "nobody", "password": "y"}
    )
    done = await _after(client, clock, job["id"], 20)

    assert (done["status"], done["termination_type"]) == (
        "TOO_MANY_LOGIN_FAILURES",
        "USER_DATA_FAILURE",
    )


async def test_job_without_credentials_asks_at_once(client, clock):
    job = await client.start_job(None, site_id=7)

    request = job["credential_requests"][0]
    assert job["status"] == "PENDING_NEWCREDS"
    assert request["type"] == "initial_account_link"
    assert {f["key_name"] for f in request["account_link"]} == {"username", "password"}


async def test_quick_start_job_runs_once_credentials_arrive(client, clock):
    job = await client.start_job(None, site_id=8)
    envelope = job["credential_requests"][0]["envelope_id"]
    await client.answer(job["id"], envelope, GOOD)
    done = await _after(client, clock, job["id"], 60)

    assert done["status"] == "SUCCESSFUL"


async def test_site_asking_email_password_and_pin(client, clock):
    job = await client.start_job(None, site_id=2)
    request = job["credential_requests"][0]
    await client.answer(
        job["id"],
        request["envelope_id"],
        {"email": "good_email", "password": "no_tfa", "pin": "4321"},
    )
    done = await _after(client, clock, job["id"], 60)

    assert [f["key_name"] for f in request["account_link"]] == [
        "email",
        "password",
        "pin",
    ]
    assert done["status"] == "SUCCESSFUL"


async def test_job_without_credentials_is_abandoned_when_none_come(client, clock):
    job = await client.start_job(None, site_id=9)
    done = await _after(client, clock, job["id"], 241)

    assert (done["status"], done["termination_type"]) == ("ABANDONED", "NEVER_STARTED")
    assert done["credential_requests"] == []


async def test_unanswered_tfa_ends_timeout_tfa_after_four_minutes(client, clock):
    job, _ = await _pending(
        client, clock, {"username": "good_email", "password": "tfa"}
    )
    still = await _after(client, clock, job["id"], 230)
    done = await _after(client, clock, job["id"], 15)

    assert still["status"] == "PENDING_TFA"
    assert (done["status"], done["termination_type"]) == (
        "TIMEOUT_TFA",
        "USER_DATA_FAILURE",
    )


async def test_unanswered_new_credentials_end_timeout_credentials(client, clock):
    job, _ = await _pending(
        client, clock, {"username": "someone", "password": "no_tfa"}
    )
    done = await _after(client, clock, job["id"], 245)

    assert (done["status"], done["termination_type"]) == (
        "TIMEOUT_CREDENTIALS",
        "USER_DATA_FAILURE",
    )


async def test_cancel_ends_cancelled_never_started(client, clock):
    job = await client.start_job(GOOD)
    reply = await client.call(
        "PUT",
        f"/place_card_on_single_site_jobs/{job['id']}",
        {"status": "CANCEL_REQUESTED"},
    )
    done = await _after(client, clock, job["id"], 5)

    assert reply.body["status"] == "CANCEL_REQUESTED"
    assert (done["status"], done["termination_type"]) == ("CANCELLED", "NEVER_STARTED")


async def test_cancelling_a_finished_job_is_400(client, clock):
    job = await client.start_job(GOOD)
    await _after(client, clock, job["id"], 60)
    reply = await client.call(
        "PUT",
        f"/place_card_on_single_site_jobs/{job['id']}",
        {"status": "CANCEL_REQUESTED"},
    )

    assert reply.status == 400
    assert reply.body["_errors"][0]["property"] == "status"


@pytest.mark.parametrize("password", sorted(scenarios.FAILURE_PASSWORDS))
async def test_failure_password_reaches_its_documented_status(client, clock, password):
    job = await client.start_job({"username": "good_email", "password": password})
    done = await _after(client, clock, job["id"], 60)

    status = scenarios.FAILURE_PASSWORDS[password]
    assert done["status"] == status
    assert done["termination_type"] == scenarios.FAILURES[status].termination_type
    assert done["status_message"]


def test_every_documented_user_data_failure_has_a_password():
    documented = {
        "INVALID_CARD",
        "EXPIRED_CARD",
        "INVALID_CVV",
        "ACCOUNT_LOCKED",
        "PASSWORD_RESET_REQUIRED",
        "DUPLICATE_CARD",
        "PREPAID_ACCOUNT",
        "INACTIVE_ACCOUNT",
        "INVALID_ADDRESS",
        "BUNDLED_SUBSCRIPTION",
        "FREE_ACCOUNT",
        "INVALID_NETWORK",
        "MAX_LIMIT_OF_STORED_CARDS",
    }

    assert documented <= set(scenarios.FAILURE_PASSWORDS.values())


async def test_broken_checkout_site_ends_site_interaction_failure(
    client, clock, manual_sandbox
):
    job = await client.start_job(GOOD, site_id=3)
    done = await _after(client, clock, job["id"], 60)

    assert done["termination_type"] == "SITE_INTERACTION_FAILURE"
    assert "UPDATING" in _statuses(manual_sandbox, job["id"])


async def test_outage_site_ends_process_failure(client, clock):
    job = await client.start_job(GOOD, site_id=4)
    done = await _after(client, clock, job["id"], 60)

    assert done["termination_type"] == "PROCESS_FAILURE"
    assert done["auth_percent_complete"] < 100


async def test_well_known_merchant_follows_the_synthetic_rules(client, clock):
    netflix = (await client.call("GET", "/merchant_sites?host=netflix.com")).body[0]
    _, request = await _pending(
        client,
        clock,
        {"username": "good_email", "password": "tfa"},
        site_id=netflix["id"],
    )

    assert request["type"] == "tfa"
    assert "Netflix" in request["message"]["status_message"]


async def test_ticker_moves_jobs_on_when_nobody_reads_them(
    client, clock, manual_sandbox
):
    job = await client.start_job(GOOD)
    clock.advance(60)
    stored = manual_sandbox.engine.jobs[job["id"]]
    for _ in range(100):
        if stored.termination_type:
            break
        await asyncio.sleep(0.05)

    assert stored.status == "SUCCESSFUL"
