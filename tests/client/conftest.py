"""A minimal CardSavr server behind httpx.MockTransport.

It does what the real server does at the HTTP boundary: checks the login proof,
runs a real ECDH exchange, verifies every request signature, decrypts request
bodies and safe-key headers, and answers encrypted (in the scheme the client
used) and signed. Tests register route handlers and faults on it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from cardsavr import crypto
from cardsavr.client import CardSavrClient
from cardsavr.config import ClientConfig

APP_NAME = "test_app"
APP_KEY = "VeY9uD0w3zRdrlmIPxnU/l+Vr8w2bbV26E6DxajFu+A="
USERNAME = "agent-user"
PASSWORD = "agent-secret-password-42"
API_URL = "https://cardsavr.test/"


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Received:
    method: str
    target: str  # raw path and query as sent
    path: str
    query: list[tuple[str, str]]
    headers: httpx.Headers
    content: bytes
    body: Any  # decrypted JSON body, or None
    scheme: str | None  # envelope scheme of the body
    safe_key: str | None  # decrypted x-cardsavr-cardholder-safe-key


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    encrypt: bool = True
    sign: bool = True


Handler = Callable[[Received], "Reply | httpx.Response | Awaitable[httpx.Response]"]


class FakeCardSavr:
    def __init__(self) -> None:
        self.sessions: dict[str, tuple[str, str | None]] = {}  # token -> key, scheme
        self.routes: dict[tuple[str, str], Handler] = {}
        self.received: list[Received] = []
        self.logins = 0
        self.ended: list[str] = []
        # Called before authentication; may answer instead of the server.
        self.fault: Callable[[httpx.Request], Any] | None = None
        self.tamper_response_signature = False
        self.answered_schemes: list[str] = []

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def calls(self, method: str, path: str) -> list[Received]:
        return [r for r in self.received if r.method == method and r.path == path]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def drop_sessions(self) -> None:
        self.sessions.clear()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.fault is not None:
            answer = self.fault(request)
            if hasattr(answer, "__await__"):
                answer = await answer
            if answer is not None:
                return answer
        target = request.url.raw_path.decode("ascii")
        split = urlsplit(target)
        content = await request.aread()
        auth = request.headers.get("x-cardsavr-authorization", "")
        nonce = request.headers.get("x-cardsavr-nonce", "")
        signature = request.headers.get("x-cardsavr-signature", "")
        if auth != crypto.authorization_value(APP_NAME) or not nonce.isdigit():
            return self._plain(401, "Bad authorization")
        if split.path == "/session/login":
            key, scheme = APP_KEY, None
        else:
            token = request.headers.get("x-cardsavr-session-jwt", "")
            if token not in self.sessions:
                return self._plain(401, "Session not found")
            key, scheme = self.sessions[token]
        if not crypto.signature_matches([key], signature, target, auth, nonce, content):
            return self._plain(401, "Signature mismatch")
        body = None
        if content:
            wrapper = json.loads(content)
            assert set(wrapper) == {"encrypted_body"}
            # The client must send exactly the compact form it signed.
            assert content == compact(wrapper).encode()
            envelope = wrapper["encrypted_body"]
            scheme = crypto.envelope_scheme(envelope)
            body = json.loads(crypto.decrypt(envelope, key))
        safe_key = None
        if "x-cardsavr-cardholder-safe-key" in request.headers:
            safe_key = crypto.decrypt(
                request.headers["x-cardsavr-cardholder-safe-key"], key
            )
        received = Received(
            method=request.method,
            target=target,
            path=split.path,
            query=parse_qsl(split.query, keep_blank_values=True),
            headers=request.headers,
            content=content,
            body=body,
            scheme=scheme,
            safe_key=safe_key,
        )
        self.received.append(received)
        if split.path == "/session/login":
            return self._login(received)
        if split.path == "/session/end":
            token = request.headers["x-cardsavr-session-jwt"]
            self.sessions.pop(token, None)
            self.ended.append(token)
            return httpx.Response(200)
        handler = self.routes.get((request.method, split.path))
        if handler is None:
            reply: Any = Reply(404, {"_errors": [{"name": "Not Found"}]})
        else:
            reply = handler(received)
            if hasattr(reply, "__await__"):
                reply = await reply
        if isinstance(reply, httpx.Response):
            return reply
        return self.answer(received, reply, key, scheme or crypto.CBC)

    def _login(self, received: Received) -> httpx.Response:
        body = received.body
        expected = crypto.password_proof(USERNAME, PASSWORD, APP_KEY)
        if body.get("username") != USERNAME or body.get("password_proof") != expected:
            return self._plain(401, "Invalid credentials")
        public = crypto.b64d(body["client_public_key"])
        assert len(public) == 65 and public[0] == 4  # uncompressed P-256 point
        server_private = crypto.generate_key_pair()
        session_key = crypto.shared_session_key(
            server_private, body["client_public_key"]
        )
        token = "jwt." + secrets.token_urlsafe(16)
        self.sessions[token] = (session_key, received.scheme)
        self.logins += 1
        reply = Reply(
            200,
            {
                "server_public_key": crypto.public_key_b64(server_private),
                "session_token": token,
                "user_id": 7,
                "user": {"id": 7, "username": USERNAME},
            },
        )
        return self.answer(received, reply, APP_KEY, received.scheme or crypto.CBC)

    def answer(
        self, received: Received, reply: Reply, key: str, scheme: str
    ) -> httpx.Response:
        headers = dict(reply.headers)
        if reply.body is None:
            text = ""
        elif reply.encrypt:
            self.answered_schemes.append(scheme)
            text = compact(
                {"encrypted_body": crypto.encrypt(compact(reply.body), key, scheme)}
            )
        else:
            text = compact(reply.body)
        if reply.sign:
            auth = crypto.authorization_value(APP_NAME)
            nonce = crypto.new_nonce()
            signature = crypto.sign(key, received.target, auth, nonce, text)
            if self.tamper_response_signature:
                signature = crypto.sign(key, received.target, auth, nonce, text + " ")
            headers.update(
                {
                    "x-cardsavr-authorization": auth,
                    "x-cardsavr-nonce": nonce,
                    "x-cardsavr-signature": signature,
                }
            )
        if text:
            headers["content-type"] = "application/json"
        return httpx.Response(reply.status, content=text.encode(), headers=headers)

    @staticmethod
    def _plain(status: int, name: str) -> httpx.Response:
        return httpx.Response(status, json={"_errors": [{"name": name}]})

    def session_key(self, received: Received) -> str:
        return self.sessions[received.headers["x-cardsavr-session-jwt"]][0]


def make_config(**overrides: Any) -> ClientConfig:
    values: dict[str, Any] = {
        "api_url": API_URL,
        "app_name": APP_NAME,
        "app_key": APP_KEY,
        "username": USERNAME,
        "password": PASSWORD,
        "timeout": 5.0,
        "max_read_retries": 3,
    }
    values.update(overrides)
    return ClientConfig(**values)


@pytest.fixture
def server() -> FakeCardSavr:
    return FakeCardSavr()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff pauses the client asked for, without waiting them out."""
    recorded: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr("cardsavr.client._sleep", fake_sleep)
    return recorded


@pytest.fixture
async def client(server: FakeCardSavr, sleeps: list[float]):
    instance = CardSavrClient(make_config(), transport=server.transport())
    yield instance
    await instance.close()


def job_json(job_id: int = 11, **fields: Any) -> dict[str, Any]:
    job = {
        "id": job_id,
        "cardholder_id": 5,
        "card_id": 6,
        "account_id": 8,
        "status": "QUEUED",
        "status_message": "Your job is queued.",
        "termination_type": None,
        "percent_complete": 0,
        "auth_percent_complete": 0,
        "job_timeout": 300000,
        "created_on": "2026-12-03T15:00:00.000Z",
        "last_updated_on": "2026-12-03T15:00:01.000Z",
    }
    job.update(fields)
    return job
