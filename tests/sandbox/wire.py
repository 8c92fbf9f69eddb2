"""A deliberately small CardSavr client for driving the sandbox at wire level.

It exposes what the real client hides (raw statuses, headers, signatures) so
tests can tamper with requests; it uses cardsavr.crypto for every algorithm.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass

import httpx

from cardsavr import crypto
from sandbox.testing import RunningSandbox


@dataclass
class WireResponse:
    status: int
    body: object
    headers: httpx.Headers
    text: str
    signature_ok: bool | None


class WireClient:
    def __init__(self, sandbox: RunningSandbox, scheme: str = crypto.CBC) -> None:
        self.sandbox = sandbox
        self.config = sandbox.config
        self.scheme = scheme
        self.key = self.config.app_key
        self.token = "null"
        self.http = httpx.AsyncClient(
            base_url=sandbox.url.rstrip("/"),
            verify=ssl.create_default_context(cafile=sandbox.ca_file),
            timeout=10.0,
        )
        self.last_request: httpx.Request | None = None

    async def __aenter__(self) -> WireClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    def build(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict | None = None,
    ) -> httpx.Request:
        content = b""
        if body is not None:
            envelope = crypto.encrypt(
                json.dumps(body, separators=(",", ":")), self.key, self.scheme
            )
            content = json.dumps(
                {"encrypted_body": envelope}, separators=(",", ":")
            ).encode()
        authorization = crypto.authorization_value(self.config.app_name)
        nonce = crypto.new_nonce()
        all_headers = {
            "x-cardsavr-authorization": authorization,
            "x-cardsavr-nonce": nonce,
            "x-cardsavr-signature": crypto.sign(
                self.key, path, authorization, nonce, content
            ),
            "x-cardsavr-session-jwt": self.token,
            "x-cardsavr-trace": json.dumps({"key": self.config.username}),
        }
        if content:
            all_headers["content-type"] = "application/json"
        all_headers.update(headers or {})
        return self.http.build_request(
            method, path, content=content or None, headers=all_headers
        )

    async def send(
        self, request: httpx.Request, key: str | None = None
    ) -> WireResponse:
        self.last_request = request
        response = await self.http.send(request)
        return self.decode(request, response, key or self.key)

    def decode(
        self, request: httpx.Request, response: httpx.Response, key: str
    ) -> WireResponse:
        text = response.text
        signature_ok = None
        if "x-cardsavr-signature" in response.headers:
            path = request.url.raw_path.decode()
            signature_ok = crypto.signature_matches(
                [key],
                response.headers["x-cardsavr-signature"],
                path,
                response.headers["x-cardsavr-authorization"],
                response.headers["x-cardsavr-nonce"],
                response.content,
            )
        body: object = None
        if text:
            body = json.loads(text)
            if isinstance(body, dict) and "encrypted_body" in body:
                body = json.loads(crypto.decrypt(body["encrypted_body"], key))
        return WireResponse(
            response.status_code, body, response.headers, text, signature_ok
        )

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict | None = None,
    ) -> WireResponse:
        return await self.send(self.build(method, path, body, headers))

    async def login(self) -> WireResponse:
        private = crypto.generate_key_pair()
        proof = crypto.password_proof(
            self.config.username, self.config.password, self.config.app_key
        )
        self.key = self.config.app_key
        reply = await self.call(
            "POST",
            "/session/login",
            {
                "username": self.config.username,
                "client_public_key": crypto.public_key_b64(private),
                "password_proof": proof,
            },
        )
        assert reply.status == 200, reply.text
        assert reply.signature_ok is True
        self.token = reply.body["session_token"]
        self.key = crypto.shared_session_key(private, reply.body["server_public_key"])
        return reply

    # Conveniences for scenario tests.

    async def new_cardholder(self, **fields: object) -> dict:
        body = {"first_name": "Pat", "last_name": "Tester", **fields}
        reply = await self.call("POST", "/cardholders", body)
        assert reply.status == 201, reply.text
        return reply.body

    async def new_card(self, cardholder_id: int) -> dict:
        reply = await self.call(
            "POST",
            "/cardsavr_cards",
            {
                "cardholder_id": cardholder_id,
                "pan": "4111111111111111",
                "cvv": "123",
                "expiration_month": "12",
                "expiration_year": "30",
                "name_on_card": "Pat Tester",
            },
        )
        assert reply.status == 201, reply.text
        return reply.body

    async def start_job(
        self,
        account_link: dict | None,
        *,
        site_id: int = 1,
        cardholder: dict | None = None,
    ) -> dict:
        """A cardholder, card and job at the site; returns the hydrated job."""
        cardholder = cardholder or await self.new_cardholder()
        card = await self.new_card(cardholder["id"])
        account: dict = {"merchant_site_id": site_id}
        if account_link is not None:
            account["account_link"] = account_link
        reply = await self.call(
            "POST",
            "/place_card_on_single_site_jobs",
            {
                "status": "REQUESTED",
                "cardholder_id": cardholder["id"],
                "card_id": card["id"],
                "account": account,
            },
            {"x-cardsavr-hydration": '["credential_requests","account"]'},
        )
        assert reply.status == 201, reply.text
        return reply.body

    async def job(self, job_id: int) -> dict:
        reply = await self.call(
            "GET",
            f"/place_card_on_single_site_jobs/{job_id}",
            headers={"x-cardsavr-hydration": '["credential_requests"]'},
        )
        assert reply.status == 200, reply.text
        return reply.body

    async def answer(
        self, job_id: int, envelope_id: str, account_link: dict
    ) -> WireResponse:
        return await self.call(
            "PUT",
            f"/place_card_on_single_site_jobs/{job_id}",
            {"account": {"account_link": account_link}},
            {
                "x-cardsavr-envelope-id": envelope_id,
                "x-cardsavr-hydration": '["credential_requests"]',
            },
        )
