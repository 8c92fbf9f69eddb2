"""Login, session headers, re-login on 401 and session end."""

import asyncio
import json

import httpx
import pytest

from cardsavr import crypto
from cardsavr.client import CardSavrClient
from cardsavr.errors import AuthenticationError
from tests.client.conftest import APP_NAME, USERNAME, Reply, make_config

SITE = {"id": 1, "name": "Synthetic", "host": "synthetic.example"}


def serve_site(server):
    server.route("GET", "/merchant_sites/1", lambda received: Reply(200, SITE))


async def test_first_call_logs_in_with_password_proof_and_ecdh(server, client):
    serve_site(server)

    site = await client.get_merchant_site(1)

    assert site.name == "Synthetic"
    login = server.calls("POST", "/session/login")[0]
    assert set(login.body) == {"username", "client_public_key", "password_proof"}
    assert login.body["username"] == USERNAME
    # The GET after login was verified by the server with the ECDH session key.
    assert server.calls("GET", "/merchant_sites/1")
    assert server.logins == 1


async def test_login_body_is_encrypted_and_signed_with_the_app_key(server, client):
    serve_site(server)

    await client.get_merchant_site(1)

    login = server.calls("POST", "/session/login")[0]
    assert "x-cardsavr-session-jwt" not in login.headers
    assert b"password_proof" not in login.content
    assert login.scheme == crypto.CBC


async def test_calls_after_login_carry_the_session_jwt(server, client):
    serve_site(server)

    await client.get_merchant_site(1)

    call = server.calls("GET", "/merchant_sites/1")[0]
    assert call.headers["x-cardsavr-session-jwt"] in server.sessions


async def test_requests_carry_trace_and_client_application_headers(server, client):
    serve_site(server)

    await client.get_merchant_site(1)

    call = server.calls("GET", "/merchant_sites/1")[0]
    assert json.loads(call.headers["x-cardsavr-trace"]) == {"key": USERNAME}
    assert call.headers["x-cardsavr-client-application"].startswith(APP_NAME)
    assert call.headers["x-cardsavr-authorization"] == (
        f"SWCH-HMAC-SHA256 Credentials={APP_NAME}"
    )


async def test_trace_key_comes_from_config_when_set(server, sleeps):
    serve_site(server)
    client = CardSavrClient(
        make_config(trace_key="portal-trace"), transport=server.transport()
    )

    await client.get_merchant_site(1)
    await client.close()

    call = server.calls("GET", "/merchant_sites/1")[0]
    assert json.loads(call.headers["x-cardsavr-trace"]) == {"key": "portal-trace"}


async def test_concurrent_first_calls_log_in_once(server, client):
    serve_site(server)

    async def in_flight_together(request):
        await asyncio.sleep(0.01)  # the login answer comes after all calls start

    server.fault = in_flight_together

    sites = await asyncio.gather(*(client.get_merchant_site(1) for _ in range(8)))

    assert len(sites) == 8
    assert server.logins == 1


async def test_expired_session_is_renewed_once_transparently(server, client):
    serve_site(server)
    await client.get_merchant_site(1)
    server.drop_sessions()

    site = await client.get_merchant_site(1)

    assert site.id == 1
    assert server.logins == 2


async def test_second_401_in_a_row_is_raised(server, client):
    server.route(
        "GET",
        "/merchant_sites/1",
        lambda received: Reply(401, {"_errors": [{"name": "Unauthorized"}]}),
    )

    with pytest.raises(AuthenticationError) as caught:
        await client.get_merchant_site(1)

    assert caught.value.status == 401
    assert server.logins == 2
    assert len(server.calls("GET", "/merchant_sites/1")) == 2


async def test_wrong_password_raises_authentication_error_after_one_attempt(
    server, sleeps
):
    client = CardSavrClient(
        make_config(password="not-the-password"), transport=server.transport()
    )

    with pytest.raises(AuthenticationError):
        await client.get_merchant_site(1)
    await client.close()

    assert server.logins == 0
    assert sleeps == []


async def test_close_ends_the_session(server, client):
    serve_site(server)
    await client.get_merchant_site(1)
    token = server.calls("GET", "/merchant_sites/1")[0].headers[
        "x-cardsavr-session-jwt"
    ]

    await client.close()

    assert server.ended == [token]
    assert server.sessions == {}


async def test_close_swallows_a_failing_session_end(server, sleeps):
    serve_site(server)
    client = CardSavrClient(make_config(), transport=server.transport())
    await client.get_merchant_site(1)

    def refuse(request):
        raise httpx.ConnectError("connection refused")

    server.fault = refuse

    await client.close()


async def test_close_without_a_session_sends_nothing(server, sleeps):
    client = CardSavrClient(make_config(), transport=server.transport())

    await client.close()

    assert server.received == []


async def test_gcm_config_sends_and_reads_gcm_envelopes(server, sleeps):
    serve_site(server)
    client = CardSavrClient(make_config(encryption="gcm"), transport=server.transport())

    site = await client.get_merchant_site(1)
    await client.close()

    assert site.id == 1
    assert server.calls("POST", "/session/login")[0].scheme == crypto.GCM
    assert server.answered_schemes == [crypto.GCM, crypto.GCM]


async def test_explicit_login_opens_one_session_for_later_calls(server, client):
    serve_site(server)

    await client.login()
    await client.login()
    await client.get_merchant_site(1)

    assert server.logins == 1


async def test_concurrent_401s_share_one_new_login(server, client):
    serve_site(server)
    await client.get_merchant_site(1)
    server.drop_sessions()

    async def in_flight_together(request):
        await asyncio.sleep(0.01)  # every call holds the stale session at once

    server.fault = in_flight_together

    sites = await asyncio.gather(*(client.get_merchant_site(1) for _ in range(6)))

    assert len(sites) == 6
    assert server.logins == 2
