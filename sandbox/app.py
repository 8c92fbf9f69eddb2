"""The sandbox as a plain ASGI application speaking CardSavr's wire protocol.

Each API request is checked like CardSavr checks it (integrator name, session
token, HMAC signature over the decoded path, nonce and exact body), its
``encrypted_body`` is opened with the session key (CBC or GCM), and the answer
is encrypted in the scheme the session logged in with and signed with the same
three headers. ``/_sandbox/...`` holds the test hooks that CardSavr lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from cardsavr import crypto

from . import sites as site_data
from .config import SandboxConfig
from .engine import (
    HYDRATIONS,
    ApiError,
    Engine,
    Session,
    error,
    invalid,
    parse_paging,
)
from .faults import Fault

logger = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
TICK_SECONDS = 0.05
GARBAGE = b"<html><body>502 Bad Gateway</body></html>\x00\xff{"


@dataclass
class Request:
    method: str
    path: str
    path_with_query: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    raw_body: bytes
    base_url: str
    session: Session | None = None
    key: str | None = None
    scheme: str = crypto.CBC
    body: object = None
    match: dict[str, str] = field(default_factory=dict)

    def hydrate(self) -> set[str]:
        raw = self.headers.get("x-cardsavr-hydration")
        if not raw:
            return set()
        try:
            names = json.loads(raw)
        except ValueError as exc:
            raise invalid(
                "x-cardsavr-hydration", "Hydration must be a JSON array."
            ) from exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise invalid("x-cardsavr-hydration", "Hydration must list names.")
        wanted: set[str] = set()
        for name in names:
            top = name.split(".")[0]
            if top not in HYDRATIONS:
                raise invalid(name, f"Cannot hydrate {name} on this resource.")
            wanted.add(HYDRATIONS[top])
            wanted.add(name)
        return wanted

    def paging(self, default_sort: str = "id") -> dict:
        return parse_paging(self.headers.get("x-cardsavr-paging"), default_sort)

    def envelope_id(self) -> str | None:
        # The C# SDK spells the header with an underscore.
        return self.headers.get("x-cardsavr-envelope-id") or self.headers.get(
            "x-cardsavr-envelope_id"
        )

    def int_arg(self, name: str) -> int:
        return int(self.match[name])


@dataclass
class Reply:
    status: int
    body: object = None
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[["SandboxApp", Request], Reply]


class SandboxApp:
    """ASGI callable; ``engine`` is shared with tests and the server."""

    def __init__(self, config: SandboxConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine or Engine(config)
        self._ticker: asyncio.Task | None = None
        self._deliveries: set[asyncio.Task] = set()
        self._webhook_client: httpx.AsyncClient | None = None

    # -- ASGI entry --------------------------------------------------------

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_forever())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for task in list(self._deliveries):
            task.cancel()
        if self._webhook_client is not None:
            await self._webhook_client.aclose()
            self._webhook_client = None

    # -- background work ---------------------------------------------------

    async def _tick_forever(self) -> None:
        """Move due jobs on and send due webhooks, even when nobody polls."""
        while True:
            try:
                self.engine.tick()
                for delivery in self.engine.due_webhooks():
                    task = asyncio.create_task(self._deliver(delivery))
                    self._deliveries.add(task)
                    task.add_done_callback(self._deliveries.discard)
            except Exception:
                logger.exception("Sandbox ticker failed; continuing")
            await asyncio.sleep(TICK_SECONDS)

    async def _deliver(self, delivery) -> None:
        if self._webhook_client is None:
            verify = self.config.webhook_ca_file or True
            self._webhook_client = httpx.AsyncClient(timeout=10.0, verify=verify)
        authorization = crypto.authorization_value(self.config.app_name)
        nonce = crypto.new_nonce()
        signature = crypto.sign_webhook(
            self.config.app_key, delivery.url, authorization, nonce, delivery.body
        )
        headers = {
            "content-type": "application/json",
            "x-cardsavr-authorization": authorization,
            "x-cardsavr-nonce": nonce,
            "x-cardsavr-signature": signature,
        }
        attempt = len(delivery.attempts) + 1
        try:
            response = await self._webhook_client.post(
                delivery.url, content=delivery.body, headers=headers
            )
        except httpx.HTTPError as exc:
            logger.warning(
                "Webhook for job %s attempt %s failed: %s",
                delivery.job_id,
                attempt,
                type(exc).__name__,
            )
            self.engine.webhook_result(delivery, None, type(exc).__name__)
            return
        level = logging.INFO if response.is_success else logging.WARNING
        logger.log(
            level,
            "Webhook for job %s attempt %s answered %s",
            delivery.job_id,
            attempt,
            response.status_code,
        )
        self.engine.webhook_result(delivery, response.status_code)

    # -- HTTP --------------------------------------------------------------

    async def _http(self, scope: dict, receive: Callable, send: Callable) -> None:
        started = time.perf_counter()
        raw_body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw_body += message.get("body", b"")
            if len(raw_body) > MAX_BODY:
                await _send(send, 413, b'{"_errors":[{"name":"Too Large"}]}', [])
                return
            if not message.get("more_body"):
                break
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope["headers"]
        }
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        host = headers.get("host") or "{}:{}".format(*scope.get("server") or ("", ""))
        request = Request(
            method=scope["method"],
            path=scope["path"],
            path_with_query=raw_path + (f"?{query}" if query else ""),
            params=urllib.parse.parse_qsl(query, keep_blank_values=True),
            headers=headers,
            raw_body=raw_body,
            base_url=f"{scope.get('scheme', 'https')}://{host}",
        )
        if request.path == "/" or request.path.startswith("/_sandbox/"):
            status = await self._control(request, send)
        else:
            status = await self._api(request, send)
        logger.debug(
            "%s %s %s %.1f ms",
            request.method,
            request.path,
            status,
            (time.perf_counter() - started) * 1000,
        )

    async def _api(self, request: Request, send: Callable) -> int:
        handler, route, job_id = self._route(request)
        self.engine.count_request(route)
        fault = self.engine.faults.take(job_id)
        if fault is not None:
            logger.info("Fault %s injected into %s", fault.kind, route)
            if fault.kind == "delay":
                await asyncio.sleep(fault.seconds)
            elif fault.kind != "drip":
                return await self._send_fault(fault, send)
        try:
            reply = self._authenticate_and_run(request, handler)
        except ApiError as exc:
            reply = Reply(exc.status, exc.body)
        except Exception:
            logger.exception("Sandbox failed on %s", route)
            reply = Reply(500, error(500, "Internal Error", "Sandbox error.").body)
        status, headers, body = self._encode(request, reply)
        if fault is not None and fault.kind == "drip":
            await _drip(send, status, body, headers, fault.seconds)
        else:
            await _send(send, status, body, headers)
        return status

    def _authenticate_and_run(self, request: Request, handler: Handler | None) -> Reply:
        authorization = request.headers.get("x-cardsavr-authorization", "")
        app_name = crypto.app_name_from_authorization(authorization)
        if app_name != self.config.app_name:
            raise error(401, "Authentication Failure", "Unknown integrator.")
        nonce = request.headers.get("x-cardsavr-nonce", "")
        signature = request.headers.get("x-cardsavr-signature", "")
        if not nonce or not signature:
            raise error(401, "Authentication Failure", "The request is not signed.")
        is_login = request.path == "/session/login"
        if is_login:
            key = self.config.app_key
        else:
            request.session = self.engine.session_for(
                request.headers.get("x-cardsavr-session-jwt")
            )
            key = request.session.key
            request.scheme = request.session.scheme
        if not crypto.signature_matches(
            [key],
            signature,
            request.path_with_query,
            authorization,
            nonce,
            request.raw_body,
        ):
            raise error(
                401, "Authentication Failure", "The request signature does not match."
            )
        request.key = key
        if request.raw_body:
            request.body = self._decrypt(request, key, is_login)
        if handler is None:
            raise error(
                404, "Not Found", f"No such endpoint: {request.method} {request.path}."
            )
        return handler(self, request)

    def _decrypt(self, request: Request, key: str, is_login: bool) -> object:
        try:
            wrapper = json.loads(request.raw_body)
        except ValueError as exc:
            raise invalid("encrypted_body", "The body is not JSON.") from exc
        if not isinstance(wrapper, dict) or not isinstance(
            wrapper.get("encrypted_body"), str
        ):
            raise invalid("encrypted_body", 'Send the body as {"encrypted_body": ...}.')
        envelope = wrapper["encrypted_body"]
        try:
            scheme = crypto.envelope_scheme(envelope)
            plaintext = crypto.decrypt(envelope, key)
            body = json.loads(plaintext)
        except (crypto.EnvelopeError, ValueError) as exc:
            raise invalid(
                "encrypted_body", "encrypted_body could not be decrypted."
            ) from exc
        if is_login:
            # The session answers in whatever scheme its login used.
            request.scheme = scheme
        return body

    def _encode(self, request: Request, reply: Reply) -> tuple[int, list, bytes]:
        headers = list(reply.headers)
        # A refused session or signature gets a plain, unsigned answer: the
        # sandbox cannot know which key the caller would trust.
        key = request.key if reply.status != 401 else None
        if reply.body is None:
            body = b""
        else:
            plaintext = json.dumps(
                reply.body, separators=(",", ":"), ensure_ascii=False
            )
            if key is not None:
                envelope = crypto.encrypt(plaintext, key, request.scheme)
                body = json.dumps(
                    {"encrypted_body": envelope}, separators=(",", ":")
                ).encode()
            else:
                body = plaintext.encode()
            headers.append(("content-type", "application/json"))
        if key is not None:
            authorization = crypto.authorization_value(self.config.app_name)
            nonce = crypto.new_nonce()
            signature = crypto.sign(
                key, request.path_with_query, authorization, nonce, body
            )
            headers += [
                ("x-cardsavr-authorization", authorization),
                ("x-cardsavr-nonce", nonce),
                ("x-cardsavr-signature", signature),
            ]
        return reply.status, headers, body

    async def _send_fault(self, fault: Fault, send: Callable) -> int:
        if fault.kind == "429":
            body = error(429, "Too Many Requests", "Slow down and retry later.").body
            retry = f"{fault.retry_after:g}"
            await _send(send, 429, _json(body), [("retry-after", retry), _CT])
            return 429
        if fault.kind in ("500", "503"):
            status = int(fault.kind)
            body = error(status, "Server Error", "The sandbox was told to fail.").body
            await _send(send, status, _json(body), [_CT])
            return status
        if fault.kind == "garbage":
            await _send(send, 200, GARBAGE, [_CT])
            return 200
        # "drop": promise a body, send part of it and hang up.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"512"),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b'{"encrypted_', "more_body": True}
        )
        return 0

    # -- routing -----------------------------------------------------------

    def _route(self, request: Request) -> tuple[Handler | None, str, int | None]:
        for method, pattern, handler, label in ROUTES:
            if method != request.method:
                continue
            found = pattern.fullmatch(request.path)
            if found:
                request.match = found.groupdict()
                job_id = None
                if "job" in label and "id" in request.match:
                    job_id = int(request.match["id"])
                return handler, f"{method} {label}", job_id
        return None, f"{request.method} (unknown)", None

    # -- control endpoints ---------------------------------------------------

    async def _control(self, request: Request, send: Callable) -> int:
        path = request.path
        if path == "/":
            text = (
                "CardSavr sandbox. Point a CardSavr client here (app "
                f"{self.config.app_name}, agent {self.config.username}). Test "
                "hooks live under /_sandbox/; see sandbox/README.md.\n"
            ).encode()
            await _send(send, 200, text, [(b"content-type", b"text/plain")])
            return 200
        logo = re.fullmatch(r"/_sandbox/logos/([a-z0-9-]+)\.svg", path)
        if logo and request.method == "GET":
            found = self.engine.logos.get(logo.group(1))
            if found is None:
                await _send(send, 404, _json({"error": "No such logo."}), [_CT])
                return 404
            svg = site_data.logo_svg(*found).encode()
            headers = [
                ("content-type", "image/svg+xml"),
                ("cache-control", "max-age=86400"),
            ]
            await _send(send, 200, svg, headers)
            return 200
        if request.headers.get("x-sandbox-key") != self.config.app_key:
            body = {"error": "Send the app key in the x-sandbox-key header."}
            await _send(send, 403, _json(body), [_CT])
            return 403
        status, body = self._control_json(request)
        await _send(send, status, _json(body), [_CT])
        return status

    def _control_json(self, request: Request) -> tuple[int, object]:
        engine = self.engine
        path, method = request.path, request.method
        if path == "/_sandbox/stats" and method == "GET":
            return 200, engine.stats()
        if path == "/_sandbox/faults":
            if method == "GET":
                return 200, [f.as_json() for f in engine.faults.active()]
            if method == "DELETE":
                engine.faults.clear()
                return 200, {"cleared": True}
            if method == "POST":
                try:
                    spec = json.loads(request.raw_body or b"{}")
                    if not isinstance(spec, dict):
                        raise ValueError("send a JSON object")
                    fault = engine.faults.add(
                        str(spec.get("kind", "")),
                        job_id=spec.get("job_id"),
                        seconds=float(spec.get("seconds") or 0),
                        count=spec.get("count"),
                        duration=spec.get("duration"),
                        retry_after=float(spec.get("retry_after") or 1),
                    )
                except (ValueError, TypeError) as exc:
                    return 400, {"error": f"Fault not added: {exc}."}
                return 201, fault.as_json()
        history = re.fullmatch(r"/_sandbox/jobs/(\d+)/history", path)
        if history and method == "GET":
            try:
                return 200, engine.job_history(int(history.group(1)))
            except ApiError as exc:
                return exc.status, {"error": exc.errors[0]["message"]}
        return 404, {"error": f"No sandbox hook at {method} {path}."}


# -- CardSavr endpoints ---------------------------------------------------------


def _object(request: Request, prop: str) -> dict:
    if not isinstance(request.body, dict):
        raise invalid(prop, f"The body must be a JSON {prop} object.")
    return request.body


def login(app: SandboxApp, request: Request) -> Reply:
    body = _object(request, "login")
    trace = None
    with contextlib.suppress(ValueError):
        trace = json.loads(request.headers.get("x-cardsavr-trace") or "null")
    result, _ = app.engine.login(body, request.scheme, trace)
    return Reply(200, result)


def end_session(app: SandboxApp, request: Request) -> Reply:
    assert request.session is not None
    app.engine.end_session(request.session)
    return Reply(200)


def refresh_session(app: SandboxApp, request: Request) -> Reply:
    return Reply(200, {"user_id": app.engine.user["id"]})


def create_cardholder(app: SandboxApp, request: Request) -> Reply:
    body = _object(request, "cardholder")
    record, _ = app.engine.upsert_cardholder(body, create_only=True)
    return Reply(201, record)


def upsert_cardholder(app: SandboxApp, request: Request) -> Reply:
    body = _object(request, "cardholder")
    if not body.get("cuid"):
        raise invalid("cuid", "cuid is required to upsert a cardholder.")
    record, created = app.engine.upsert_cardholder(body)
    return Reply(201 if created else 200, record)


def update_cardholder(app: SandboxApp, request: Request) -> Reply:
    body = _object(request, "cardholder")
    return Reply(200, app.engine.update_cardholder(request.int_arg("id"), body))


def list_cardholders(app: SandboxApp, request: Request) -> Reply:
    rows, meta = app.engine.list_cardholders(request.params, request.paging())
    return Reply(200, rows, [("x-cardsavr-paging", json.dumps(meta))])


def get_cardholder(app: SandboxApp, request: Request) -> Reply:
    return Reply(200, app.engine.get_cardholder(request.int_arg("id")))


def create_card(app: SandboxApp, request: Request) -> Reply:
    return Reply(201, app.engine.create_card(_object(request, "card")))


def get_card(app: SandboxApp, request: Request) -> Reply:
    return Reply(200, app.engine.get_card(request.int_arg("id")))


def create_account(app: SandboxApp, request: Request) -> Reply:
    return Reply(201, app.engine.create_account(_object(request, "account")))


def get_account(app: SandboxApp, request: Request) -> Reply:
    return Reply(200, app.engine.get_account(request.int_arg("id")))


def update_account(app: SandboxApp, request: Request) -> Reply:
    body = _object(request, "account")
    account = app.engine.answer_for_account(
        request.int_arg("id"),
        request.envelope_id(),
        body.get("account_link"),
    )
    return Reply(200, account)


def list_sites(app: SandboxApp, request: Request) -> Reply:
    rows, meta = app.engine.list_sites(
        request.params, request.paging("name"), request.base_url
    )
    return Reply(200, rows, [("x-cardsavr-paging", json.dumps(meta))])


def get_site(app: SandboxApp, request: Request) -> Reply:
    return Reply(200, app.engine.get_site(request.int_arg("id"), request.base_url))


def create_jobs(app: SandboxApp, request: Request) -> Reply:
    body = request.body
    plural = isinstance(body, list)
    bodies = body if plural else [body]
    if not bodies:
        raise invalid("job", "Send at least one job.")
    jobs = app.engine.create_jobs(bodies, request.hydrate(), request.base_url)
    return Reply(201, jobs if plural else jobs[0])


def list_jobs(app: SandboxApp, request: Request) -> Reply:
    rows, meta = app.engine.list_jobs(
        request.params, request.paging(), request.hydrate(), request.base_url
    )
    return Reply(200, rows, [("x-cardsavr-paging", json.dumps(meta))])


def cancel_jobs(app: SandboxApp, request: Request) -> Reply:
    jobs = app.engine.cancel_jobs(
        request.params, request.body, request.hydrate(), request.base_url
    )
    return Reply(200, jobs)


def get_job(app: SandboxApp, request: Request) -> Reply:
    return Reply(
        200,
        app.engine.get_job(request.int_arg("id"), request.hydrate(), request.base_url),
    )


def update_job(app: SandboxApp, request: Request) -> Reply:
    job = app.engine.update_job(
        request.int_arg("id"),
        _object(request, "job"),
        request.envelope_id(),
        request.hydrate(),
        request.base_url,
    )
    return Reply(200, job)


def job_messages(app: SandboxApp, request: Request) -> Reply:
    assert request.session is not None
    return Reply(
        200, app.engine.messages_for_job(request.session, request.int_arg("id"))
    )


def cardholder_messages(app: SandboxApp, request: Request) -> Reply:
    assert request.session is not None
    return Reply(
        200, app.engine.messages_for_cardholder(request.session, request.int_arg("id"))
    )


def credential_response(app: SandboxApp, request: Request) -> Reply:
    """The older messages-channel reply; the job PUT is the preferred form."""
    body = _object(request, "credential_response")
    envelope_id = body.get("envelope_id") or request.envelope_id()
    link = body.get("account_link")
    if link is None and isinstance(body.get("message"), str):
        link = {"tfa": body["message"]}
    app.engine.update_job(
        request.int_arg("id"),
        {"account": {"account_link": link}},
        envelope_id,
        set(),
        "",
    )
    return Reply(
        200,
        {
            "type": "credential_response",
            "job_id": request.int_arg("id"),
            "envelope_id": envelope_id,
            "message": "submitted",
        },
    )


def _r(method: str, pattern: str, handler: Handler) -> tuple:
    label = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
    return method, re.compile(pattern), handler, label


_ID = r"(?P<id>\d+)"
JOBS = "/place_card_on_single_site_jobs"
ROUTES = [
    _r("POST", "/session/login", login),
    _r("GET", "/session/end", end_session),
    _r("PUT", "/session/refresh", refresh_session),
    _r("POST", "/cardholders", create_cardholder),
    _r("PUT", "/cardholders", upsert_cardholder),
    _r("GET", "/cardholders", list_cardholders),
    _r("GET", f"/cardholders/{_ID}", get_cardholder),
    _r("PUT", f"/cardholders/{_ID}", update_cardholder),
    _r("POST", "/cardsavr_cards", create_card),
    _r("GET", f"/cardsavr_cards/{_ID}", get_card),
    _r("POST", "/cardsavr_accounts", create_account),
    _r("GET", f"/cardsavr_accounts/{_ID}", get_account),
    _r("PUT", f"/cardsavr_accounts/{_ID}", update_account),
    _r("GET", "/merchant_sites", list_sites),
    _r("GET", f"/merchant_sites/{_ID}", get_site),
    _r("POST", JOBS, create_jobs),
    _r("GET", JOBS, list_jobs),
    _r("PUT", JOBS, cancel_jobs),
    _r("GET", f"{JOBS}/{_ID}", get_job),
    _r("PUT", f"{JOBS}/{_ID}", update_job),
    _r("GET", f"/messages{JOBS}/{_ID}", job_messages),
    _r("POST", f"/messages{JOBS}/{_ID}/credential_responses", credential_response),
    _r("GET", f"/messages/cardholders/{_ID}", cardholder_messages),
]


def create_app(config: SandboxConfig, engine: Engine | None = None) -> SandboxApp:
    return SandboxApp(config, engine)


# -- raw ASGI sending ------------------------------------------------------------

_CT = ("content-type", "application/json")


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _encode_headers(headers: list, length: int) -> list[tuple[bytes, bytes]]:
    out = [
        (
            k.encode("latin-1") if isinstance(k, str) else k,
            v.encode("latin-1") if isinstance(v, str) else v,
        )
        for k, v in headers
    ]
    out.append((b"content-length", str(length).encode()))
    return out


async def _send(
    send: Callable[[dict], Awaitable[None]], status: int, body: bytes, headers: list
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _encode_headers(headers, len(body)),
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _drip(
    send: Callable, status: int, body: bytes, headers: list, seconds: float
) -> None:
    """Headers at once, then the body a few bytes at a time over ``seconds``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _encode_headers(headers, len(body)),
        }
    )
    pieces = max(1, min(len(body), 20))
    size = -(-len(body) // pieces) if body else 0
    for index in range(pieces):
        await asyncio.sleep(seconds / pieces)
        chunk = body[index * size : (index + 1) * size]
        await send(
            {
                "type": "http.response.body",
                "body": chunk,
                "more_body": index < pieces - 1,
            }
        )
