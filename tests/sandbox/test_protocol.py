"""The sandbox speaks CardSavr's wire protocol from the server side."""

from __future__ import annotations

import base64
import json
import ssl

import httpx
import pytest

from cardsavr import crypto

from .wire import WireClient


def _jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def test_login_returns_server_key_token_and_user_signed_with_app_key(sandbox):
    async with WireClient(sandbox) as client:
        reply = await client.login()

    body = reply.body
    assert reply.signature_ok is True
    assert len(crypto.b64d(body["server_public_key"])) == 65
    assert body["user_id"] == body["user"]["id"]
    assert body["user"]["username"] == sandbox.config.username
    claims = _jwt_claims(body["session_token"])
    assert set(claims) >= {"jti", "iss", "aud", "iat"}
    assert claims["aud"] == sandbox.config.app_name


async def test_login_with_wrong_password_is_refused_with_401(sandbox):
    async with WireClient(sandbox) as client:
        client.config = type(sandbox.config)(
            **{**sandbox.config.__dict__, "password": "not-the-password"}
        )
        proof = crypto.password_proof(
            client.config.username, "not-the-password", sandbox.config.app_key
        )
        reply = await client.call(
            "POST",
            "/session/login",
            {
                "username": sandbox.config.username,
                "client_public_key": crypto.public_key_b64(crypto.generate_key_pair()),
                "password_proof": proof,
            },
        )

    assert reply.status == 401
    assert reply.body["_errors"][0]["message"]


async def test_tampered_signature_gets_401_with_errors(live_client):
    request = live_client.build("GET", "/merchant_sites")
    request.headers["x-cardsavr-signature"] = crypto.b64e(b"\x00" * 32)

    reply = await live_client.send(request)

    assert reply.status == 401
    assert "signature" in reply.body["_errors"][0]["message"]


async def test_tampered_body_fails_the_signature_check(live_client):
    good = live_client.build("POST", "/cardholders", {"first_name": "A"})
    forged = live_client.http.build_request(
        "POST",
        "/cardholders",
        content=good.content.replace(b'"}', b'X"}'),
        headers={k: v for k, v in good.headers.items() if k != "content-length"},
    )

    reply = await live_client.send(forged)

    assert reply.status == 401


async def test_request_replayed_after_session_end_gets_401(sandbox):
    async with WireClient(sandbox) as client:
        await client.login()
        request = client.build("GET", "/merchant_sites/1")
        first = await client.send(request)
        ended = await client.call("GET", "/session/end")
        replay = await client.send(request)

    assert first.status == 200
    assert ended.status == 200
    assert replay.status == 401
    assert replay.body["_errors"][0]["message"] == "This session has ended."


async def test_missing_session_token_gets_401(live_client):
    live_client.token = "null"

    reply = await live_client.call("GET", "/merchant_sites")

    assert reply.status == 401


async def test_gcm_login_makes_the_session_answer_in_gcm(sandbox):
    async with WireClient(sandbox, scheme=crypto.GCM) as client:
        await client.login()
        reply = await client.call("GET", "/merchant_sites/1")

    envelope = json.loads(reply.text)["encrypted_body"]
    assert crypto.envelope_scheme(envelope) == crypto.GCM
    assert reply.signature_ok is True
    assert reply.body["id"] == 1


async def test_cbc_session_accepts_a_gcm_request_but_answers_in_cbc(live_client):
    live_client.scheme = crypto.GCM
    reply = await live_client.call("POST", "/cardholders", {"first_name": "Gee"})

    envelope = json.loads(reply.text)["encrypted_body"]
    assert reply.status == 201
    assert crypto.envelope_scheme(envelope) == crypto.CBC


async def test_refresh_keeps_the_session_alive(live_client):
    reply = await live_client.call("PUT", "/session/refresh", {})

    assert reply.status == 200
    assert reply.signature_ok is True


async def test_unencrypted_body_is_refused_naming_encrypted_body(live_client):
    content = b'{"first_name":"Plain"}'
    authorization = crypto.authorization_value(live_client.config.app_name)
    nonce = crypto.new_nonce()
    request = live_client.http.build_request(
        "POST",
        "/cardholders",
        content=content,
        headers={
            "x-cardsavr-authorization": authorization,
            "x-cardsavr-nonce": nonce,
            "x-cardsavr-signature": crypto.sign(
                live_client.key, "/cardholders", authorization, nonce, content
            ),
            "x-cardsavr-session-jwt": live_client.token,
        },
    )

    reply = await live_client.send(request)

    assert reply.status == 400
    assert reply.body["_errors"][0]["property"] == "encrypted_body"


async def test_unknown_endpoint_is_404(live_client):
    reply = await live_client.call("GET", "/no_such_thing")

    assert reply.status == 404
    assert reply.signature_ok is True


async def test_plain_https_client_trusts_the_sandbox_certificate(sandbox):
    async with httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=sandbox.ca_file)
    ) as http:
        response = await http.get(sandbox.url)

    assert response.status_code == 200
    assert "CardSavr sandbox" in response.text


async def test_untrusting_client_rejects_the_self_signed_certificate(sandbox):
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(sandbox.url)
