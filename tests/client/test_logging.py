"""What the client logs, and that no secret reaches a log record or an error."""

import logging

import httpx
import pytest

from cardsavr.errors import CardSavrError, ServerError, ValidationError
from cardsavr.types import JobSpec
from tests.client.conftest import APP_KEY, PASSWORD, Reply, job_json

PAN = "4111111111111111"
CVV = "987"
TFA_CODE = "246813"
MERCHANT_PASSWORD = "hunter2-merchant"
SAFE_KEY = "MBNL8Chib96EYdXNt3+etblMg2RAHUYM1d7ScSd8nf8="


def echo_errors(received):
    """A 400 whose error message quotes the submitted values, as some do."""
    return Reply(
        400,
        {
            "_errors": [
                {
                    "name": "Invalid Value",
                    "message": f"Rejected {received.body}",
                    "property": "account_link",
                }
            ]
        },
    )


def secrets_seen(server) -> list[str]:
    values = [PAN, CVV, TFA_CODE, MERCHANT_PASSWORD, PASSWORD, APP_KEY, SAFE_KEY]
    for token, (key, _scheme) in list(server.sessions.items()):
        values += [token, key]
    for received in server.received:
        if "x-cardsavr-session-jwt" in received.headers:
            values.append(received.headers["x-cardsavr-session-jwt"])
    return values


async def run_flow_with_failures(server, client) -> list[Exception]:
    server.route("GET", "/merchant_sites/1", lambda r: Reply(200, {"id": 1}))
    server.route(
        "POST", "/cardsavr_cards", lambda r: Reply(201, {"id": 6, "last_4": "1111"})
    )
    server.route(
        "POST",
        "/place_card_on_single_site_jobs",
        lambda r: Reply(201, [job_json(11)]),
    )
    server.route("PUT", "/place_card_on_single_site_jobs/11", echo_errors)
    server.route("PUT", "/place_card_on_single_site_jobs/12", echo_errors)
    server.route(
        "POST",
        "/cardsavr_accounts",
        lambda r: Reply(503, {"_errors": [{"name": "Down", "message": str(r.body)}]}),
    )
    errors: list[Exception] = []
    await client.get_merchant_site(1)
    await client.create_card(
        cardholder_id=5,
        pan=PAN,
        cvv=CVV,
        expiration_month="12",
        expiration_year="30",
        name_on_card="Ada Lovelace",
        safe_key=SAFE_KEY,
    )
    await client.create_job(
        JobSpec(5, 6, 1, {"username": "good_email", "password": MERCHANT_PASSWORD})
    )
    for call in (
        client.answer_credential_request(11, "env-1", {"tfa": TFA_CODE}),
        client.answer_credential_request(
            12, "env-2", {"username": "x", "password": MERCHANT_PASSWORD}
        ),
        client.create_account(
            cardholder_id=5,
            merchant_site_id=1,
            account_link={"password": MERCHANT_PASSWORD},
        ),
    ):
        with pytest.raises(CardSavrError) as caught:
            await call
        errors.append(caught.value)
    server.drop_sessions()  # forces a 401 and a logged re-login
    await client.get_merchant_site(1)
    return errors


async def test_no_secret_appears_in_any_log_record(server, client, caplog):
    caplog.set_level(logging.DEBUG)

    await run_flow_with_failures(server, client)

    assert caplog.records
    logged = "\n".join(
        record.getMessage() + str(record.exc_info or "") for record in caplog.records
    )
    for secret in secrets_seen(server):
        assert secret not in logged


async def test_no_secret_appears_in_exception_strings(server, client):
    errors = await run_flow_with_failures(server, client)

    assert [type(e) for e in errors] == [ValidationError, ValidationError, ServerError]
    for error in errors:
        text = f"{error} {error!r} {error.args}"
        for secret in secrets_seen(server):
            assert secret not in text


async def test_each_call_logs_method_path_status_and_duration(server, client, caplog):
    server.route("GET", "/place_card_on_single_site_jobs", lambda r: Reply(200, []))
    caplog.set_level(logging.DEBUG, logger="cardsavr.client")

    await client.list_jobs(cardholder_ids=[5, 6])

    lines = [r.getMessage() for r in caplog.records if r.name == "cardsavr.client"]
    call_lines = [line for line in lines if "/place_card_on_single_site_jobs" in line]
    assert len(call_lines) == 1
    assert call_lines[0].startswith(
        "CardSavr GET /place_card_on_single_site_jobs -> 200"
    )
    assert call_lines[0].endswith(" ms")
    assert "cardholder_ids" not in call_lines[0]


async def test_retries_are_logged_as_warnings(server, client, caplog):
    state = {"left": 1}

    def flaky(received):
        if state["left"]:
            state["left"] -= 1
            return Reply(503, None)
        return Reply(200, {"id": 1})

    server.route("GET", "/merchant_sites/1", flaky)
    caplog.set_level(logging.WARNING, logger="cardsavr.client")

    await client.get_merchant_site(1)

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "GET /merchant_sites/1" in warnings[0].getMessage()


def test_config_repr_hides_password_and_app_key():
    from tests.client.conftest import make_config

    text = repr(make_config())

    assert PASSWORD not in text
    assert APP_KEY not in text


def test_job_spec_repr_hides_merchant_credentials():
    spec = JobSpec(5, 6, 1, {"username": "good_email", "password": MERCHANT_PASSWORD})

    assert MERCHANT_PASSWORD not in repr(spec)


async def test_fetch_bytes_returns_content_and_type(server, client):
    def logo(request):
        if request.url.host == "cdn.test":
            return httpx.Response(
                200, content=b"<svg/>", headers={"content-type": "image/svg+xml"}
            )
        return None

    server.fault = logo

    content, content_type = await client.fetch_bytes("https://cdn.test/logo.svg")

    assert content == b"<svg/>"
    assert content_type == "image/svg+xml"


async def test_fetch_bytes_missing_logo_is_not_found(server, client):
    server.fault = lambda request: httpx.Response(404)

    with pytest.raises(CardSavrError) as caught:
        await client.fetch_bytes("https://cdn.test/missing.svg")

    assert caught.value.status == 404


async def test_fetch_bytes_refuses_non_http_urls(client):
    with pytest.raises(ValidationError):
        await client.fetch_bytes("file:///etc/passwd")
