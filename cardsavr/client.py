"""Async client for CardSavr's REST API.

Every request is signed; every request body is sent encrypted as
`{"encrypted_body": "<envelope>"}`; responses are decrypted and their
signatures verified when the server signs them. The client logs in lazily on
the first call, once even when many calls start together, and logs in again
once if CardSavr answers 401 (sessions end without notice).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import json
import logging
import random
import ssl
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from cardsavr import crypto
from cardsavr.config import ClientConfig
from cardsavr.errors import (
    AuthenticationError,
    CardSavrError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    TransportError,
    UpstreamTimeoutError,
    ValidationError,
)
from cardsavr.types import Job, JobSpec, MerchantSite, Page

logger = logging.getLogger(__name__)

CLIENT_VERSION = "0.1.0"
LOGIN_PATH = "/session/login"
END_PATH = "/session/end"
JOBS_PATH = "/place_card_on_single_site_jobs"
MAX_LOGO_BYTES = 1_000_000
# Characters left as they are in query values. Commas stay bare because
# CardSavr reads `ids=1,2` as a list and the SDKs sign the bare form.
_QUERY_SAFE = ",:/*@!$'()"


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _compact(value: Any) -> str:
    """The same text JavaScript's JSON.stringify produces."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def build_query(params: Sequence[tuple[str, Any]]) -> str:
    """`a=1,2&b=x` with list values joined by commas and no comma escapes.

    None values are left out; a list value for a key that appears twice means
    AND, as CardSavr reads repeated keys.
    """
    parts = []
    for key, value in params:
        if value is None:
            continue
        if isinstance(value, list | tuple | set | frozenset):
            if not value:
                continue
            value = ",".join(str(item) for item in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        parts.append(f"{key}={urllib.parse.quote(str(value), safe=_QUERY_SAFE)}")
    return "&".join(parts)


def _timestamp(moment: datetime.datetime) -> str:
    """CardSavr's form: UTC, milliseconds, a Z."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now; it may be a number or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    return max(seconds, 0.0)


def _error_elements(body: Any) -> list[dict[str, Any]]:
    """`_errors` as dicts, whether CardSavr sent objects or plain strings."""
    raw: Any = None
    if isinstance(body, dict):
        raw = body.get("_errors")
        if raw is None and isinstance(body.get("message"), str):
            raw = [body["message"]]
    elif isinstance(body, list):
        raw = [
            error
            for item in body
            if isinstance(item, dict)
            for error in (item.get("_errors") or ())
        ]
    if isinstance(raw, dict | str):
        raw = [raw]
    if not isinstance(raw, list):
        return []
    elements = []
    for item in raw:
        if isinstance(item, dict):
            elements.append(item)
        elif isinstance(item, str):
            elements.append({"message": item})
    return elements


def _error_property(errors: list[dict[str, Any]]) -> str | None:
    for error in errors:
        for key in ("property", "property_name"):
            value = error.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def _error_summary(errors: list[dict[str, Any]]) -> str:
    """CardSavr's error names and properties only: messages may quote input."""
    names = []
    for error in errors:
        name = error.get("name")
        prop = error.get("property") or error.get("property_name")
        if isinstance(name, str) and name:
            names.append(f"{name} ({prop})" if isinstance(prop, str) and prop else name)
        elif isinstance(prop, str) and prop:
            names.append(f"property {prop}")
    return "; ".join(names[:5])


@dataclass(frozen=True)
class _Session:
    token: str
    key: str


@dataclass(frozen=True)
class _Answer:
    status: int
    body: Any
    headers: httpx.Headers


class CardSavrClient:
    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if config.encryption not in crypto.SCHEMES:
            raise ValueError(f"encryption must be one of {crypto.SCHEMES}")
        self._config = config
        self._transport = transport
        self._base = config.api_url.rstrip("/")
        self._http: httpx.AsyncClient | None = None
        self._session: _Session | None = None
        self._login_lock = asyncio.Lock()
        self._authorization = crypto.authorization_value(config.app_name)
        self._trace = _compact({"key": config.trace_key or config.username})

    # -- session ----------------------------------------------------------

    async def login(self) -> None:
        """Open a session unless one is open; calls do this by themselves."""
        await self._current_session()

    async def close(self) -> None:
        """End the CardSavr session (errors swallowed) and release connections."""
        session = self._session
        self._session = None
        try:
            if session is not None:
                try:
                    await self._exchange("GET", END_PATH, session=session)
                except CardSavrError as exc:
                    logger.info("CardSavr session end failed: %s", type(exc).__name__)
        finally:
            if self._http is not None:
                await self._http.aclose()
                self._http = None

    async def __aenter__(self) -> CardSavrClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _login_locked(self) -> None:
        config = self._config
        private_key = crypto.generate_key_pair()
        body = {
            "username": config.username,
            "client_public_key": crypto.public_key_b64(private_key),
            "password_proof": crypto.password_proof(
                config.username, config.password, config.app_key
            ),
        }
        # Before login the app key is the session key (for AES and HMAC).
        app_session = _Session(token="", key=config.app_key)
        answer = await self._exchange(
            "POST", LOGIN_PATH, body=body, session=app_session
        )
        payload = answer.body
        if not isinstance(payload, dict):
            raise ProtocolError(f"POST {LOGIN_PATH} answered without a session")
        token = payload.get("session_token")
        server_key = payload.get("server_public_key")
        if not isinstance(token, str) or not token or not isinstance(server_key, str):
            raise ProtocolError(f"POST {LOGIN_PATH} answered without a session")
        try:
            session_key = crypto.shared_session_key(private_key, server_key)
        except (crypto.EnvelopeError, ValueError) as exc:
            raise ProtocolError(
                f"POST {LOGIN_PATH} answered with an unusable server key"
            ) from exc
        self._session = _Session(token=token, key=session_key)
        logger.info("CardSavr session started for user id %s", payload.get("user_id"))

    async def _current_session(self) -> _Session:
        session = self._session
        if session is not None:
            return session
        async with self._login_lock:
            if self._session is None:
                await self._login_locked()
            assert self._session is not None
            return self._session

    async def _renew_session(self, stale: _Session) -> _Session:
        async with self._login_lock:
            # Another call may already have logged in again after the same 401.
            if self._session is None or self._session is stale:
                self._session = None
                await self._login_locked()
            assert self._session is not None
            return self._session

    # -- transport --------------------------------------------------------

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            verify: ssl.SSLContext | bool = True
            if self._config.ca_file:
                verify = ssl.create_default_context(cafile=self._config.ca_file)
            self._http = httpx.AsyncClient(
                transport=self._transport,
                verify=verify,
                http1=True,
                http2=False,
                timeout=httpx.Timeout(self._config.timeout),
                # A poller keeps a handful of calls in flight and reuses them.
                limits=httpx.Limits(
                    max_connections=20,
                    max_keepalive_connections=10,
                    keepalive_expiry=30.0,
                ),
                headers={
                    "user-agent": f"cardsavr-portal/{CLIENT_VERSION}",
                    "x-cardsavr-client-application": (
                        f"{self._config.app_name} - cardsavr-portal/{CLIENT_VERSION}"
                    ),
                },
                follow_redirects=False,
            )
        return self._http

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        safe_key: str | None = None,
        retry: bool,
        retries: int | None = None,
    ) -> _Answer:
        """One logical call: session, one re-login on 401, retries when allowed
        (`retries` times, by default the configured max_read_retries)."""
        if retries is None:
            retries = self._config.max_read_retries
        query_text = build_query(query)
        target = f"{path}?{query_text}" if query_text else path
        attempt = 0
        relogged = False
        while True:
            try:
                session = await self._current_session()
                try:
                    return await self._exchange(
                        method,
                        target,
                        body=body,
                        headers=headers,
                        safe_key=safe_key,
                        session=session,
                    )
                except AuthenticationError:
                    # A 401 is refused before CardSavr acts on the request, so
                    # sending it again on a fresh session cannot duplicate it.
                    if relogged:
                        raise
                    relogged = True
                    logger.warning(
                        "CardSavr %s %s answered 401, logging in again", method, path
                    )
                    await self._renew_session(session)
            except (
                RateLimitedError,
                ServerError,
                TransportError,
                UpstreamTimeoutError,
            ) as exc:
                if not retry or attempt >= retries:
                    raise
                delay = self._backoff(attempt, exc)
                attempt += 1
                logger.warning(
                    "CardSavr %s %s failed (%s), retry %s of %s in %.2f s",
                    method,
                    path,
                    type(exc).__name__,
                    attempt,
                    retries,
                    delay,
                )
                await _sleep(delay)

    def _backoff(self, attempt: int, exc: CardSavrError) -> float:
        config = self._config
        ceiling = min(config.retry_backoff_cap, config.retry_backoff * 2**attempt)
        delay = random.uniform(0, ceiling)
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, config.retry_after_cap))
        return delay

    async def _exchange(
        self,
        method: str,
        target: str,
        *,
        session: _Session,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        safe_key: str | None = None,
    ) -> _Answer:
        """One signed request and its verified, decrypted answer."""
        path = target.split("?", 1)[0]
        scheme = self._config.encryption
        content = b""
        request_headers: dict[str, str] = {"x-cardsavr-trace": self._trace}
        if body is not None:
            envelope = crypto.encrypt(_compact(body), session.key, scheme)
            # Serialised once: these exact bytes are signed and sent.
            content = _compact({"encrypted_body": envelope}).encode("utf-8")
            request_headers["content-type"] = "application/json"
        if headers:
            request_headers.update(headers)
        if safe_key is not None:
            request_headers["x-cardsavr-cardholder-safe-key"] = crypto.encrypt(
                safe_key, session.key, scheme
            )
        if session.token:
            request_headers["x-cardsavr-session-jwt"] = session.token
        nonce = crypto.new_nonce()
        request_headers["x-cardsavr-authorization"] = self._authorization
        request_headers["x-cardsavr-nonce"] = nonce
        request_headers["x-cardsavr-signature"] = crypto.sign(
            session.key, target, self._authorization, nonce, content
        )

        http = self._http_client()
        request = http.build_request(
            method,
            self._base + target,
            content=content or None,
            headers=request_headers,
        )
        started = time.monotonic()
        try:
            # The deadline covers the whole exchange, body included, so a
            # server that drips its answer cannot hold the call forever.
            async with asyncio.timeout(self._config.timeout):
                response = await http.send(request, stream=True)
                try:
                    raw = await response.aread()
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException) as exc:
            logger.warning(
                "CardSavr %s %s timed out after %.0f ms",
                method,
                path,
                (time.monotonic() - started) * 1000,
            )
            raise UpstreamTimeoutError(
                f"{method} {path} got no complete answer within "
                f"{self._config.timeout:g} s"
            ) from exc
        except httpx.TransportError as exc:
            raise TransportError(
                f"{method} {path} could not reach CardSavr ({type(exc).__name__})"
            ) from exc
        status = response.status_code
        logger.debug(
            "CardSavr %s %s -> %s in %.0f ms",
            method,
            path,
            status,
            (time.monotonic() - started) * 1000,
        )
        if status <= 400 and "x-cardsavr-authorization" in response.headers:
            self._verify_response(method, target, response.headers, raw, session.key)
        parsed = self._decode(method, path, status, raw, session.key)
        if status >= 400:
            raise self._error_for(method, path, status, parsed, response.headers)
        return _Answer(status=status, body=parsed, headers=response.headers)

    def _verify_response(
        self,
        method: str,
        target: str,
        headers: httpx.Headers,
        raw: bytes,
        key: str,
    ) -> None:
        path = target.split("?", 1)[0]
        authorization = headers.get("x-cardsavr-authorization", "")
        nonce = headers.get("x-cardsavr-nonce")
        signature = headers.get("x-cardsavr-signature")
        if authorization != self._authorization or not nonce or not signature:
            logger.warning(
                "CardSavr %s %s answered with incomplete signature headers",
                method,
                path,
            )
            raise ProtocolError(f"{method} {path} answered with a bad signature")
        candidates: list[bytes] = [raw]
        # JavaScript servers sign JSON.stringify of the parsed body; if the
        # text on the wire was formatted differently, try that form too.
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            if raw.strip():
                compact = _compact(json.loads(raw)).encode("utf-8")
                if compact != raw:
                    candidates.append(compact)
        for candidate in candidates:
            if crypto.signature_matches(
                [key], signature, target, authorization, nonce, candidate
            ):
                return
        logger.warning("CardSavr %s %s answered with a bad signature", method, path)
        raise ProtocolError(f"{method} {path} answered with a bad signature")

    def _decode(self, method: str, path: str, status: int, raw: bytes, key: str) -> Any:
        """Parse the body and open its envelope; error bodies are best effort."""
        if not raw.strip():
            return None
        try:
            parsed = json.loads(raw)
            if isinstance(parsed, dict) and "encrypted_body" in parsed:
                envelope = parsed["encrypted_body"]
                if not isinstance(envelope, str):
                    raise crypto.EnvelopeError("encrypted_body is not a string")
                text = crypto.decrypt(envelope, key)
                parsed = json.loads(text) if text.strip() else None
            return parsed
        except (ValueError, UnicodeDecodeError) as exc:
            if status >= 400:
                # An HTML error page from a proxy: the status says enough.
                return None
            logger.warning(
                "CardSavr %s %s answered %s with an unreadable body",
                method,
                path,
                status,
            )
            raise ProtocolError(
                f"{method} {path} answered {status} with a body that is not "
                "CardSavr JSON"
            ) from exc

    def _error_for(
        self,
        method: str,
        path: str,
        status: int,
        body: Any,
        headers: httpx.Headers,
    ) -> CardSavrError:
        errors = _error_elements(body)
        summary = _error_summary(errors)
        message = f"{method} {path} answered {status}"
        if summary:
            message = f"{message}: {summary}"
        if status == 400:
            return ValidationError(
                message, status=status, errors=errors, property=_error_property(errors)
            )
        if status == 401:
            return AuthenticationError(message, status=status, errors=errors)
        if status == 403:
            return PermissionDeniedError(message, status=status, errors=errors)
        if status == 404:
            return NotFoundError(message, status=status, errors=errors)
        if status == 429:
            return RateLimitedError(
                message,
                status=status,
                errors=errors,
                retry_after=_retry_after_seconds(headers.get("retry-after")),
            )
        if status == 504:
            return UpstreamTimeoutError(message, status=status, errors=errors)
        if status >= 500:
            return ServerError(message, status=status, errors=errors)
        return CardSavrError(message, status=status, errors=errors)

    # -- parsing helpers --------------------------------------------------

    @staticmethod
    def _object(answer: _Answer, method: str, path: str) -> dict:
        body = answer.body
        if isinstance(body, list) and len(body) == 1 and isinstance(body[0], dict):
            body = body[0]
        if not isinstance(body, dict):
            raise ProtocolError(f"{method} {path} answered without an object")
        errors = _error_elements(body) if "_errors" in body else []
        if errors:
            raise ValidationError(
                f"{method} {path} answered {answer.status}: {_error_summary(errors)}",
                status=answer.status,
                errors=errors,
                property=_error_property(errors),
            )
        return body

    @staticmethod
    def _list(answer: _Answer, method: str, path: str) -> list:
        body = answer.body
        if body is None:
            return []
        if isinstance(body, dict):
            # A filter matching one object is still a list to the caller.
            return [body]
        if not isinstance(body, list):
            raise ProtocolError(f"{method} {path} answered without a list")
        return body

    @staticmethod
    def _parse(factory: Any, value: Any, method: str, path: str) -> Any:
        try:
            return factory(value)
        except (ValueError, TypeError, KeyError) as exc:
            raise ProtocolError(
                f"{method} {path} answered with an object that has no id"
            ) from exc

    @staticmethod
    def _paging_header(page: int, page_length: int, sort: str | None) -> str:
        paging: dict[str, Any] = {"page": page, "page_length": page_length}
        if sort:
            paging["sort"] = sort
            paging["is_descending"] = False
        return _compact(paging)

    @classmethod
    def _page(
        cls, answer: _Answer, factory: Any, path: str, page: int, page_length: int
    ) -> Page:
        items = [
            cls._parse(factory, item, "GET", path)
            for item in cls._list(answer, "GET", path)
        ]
        return Page(
            items=items,
            page=page,
            page_length=page_length,
            total_results=cls._total_results(answer.headers),
        )

    @staticmethod
    def _total_results(headers: httpx.Headers) -> int | None:
        with contextlib.suppress(ValueError, TypeError):
            paging = json.loads(headers.get("x-cardsavr-paging", ""))
            total = paging.get("total_results") if isinstance(paging, dict) else None
            if isinstance(total, int) and not isinstance(total, bool):
                return total
            if isinstance(total, str) and total.isdigit():
                return int(total)
        return None

    @staticmethod
    def _hydration(hydrate: Iterable[str] | None) -> dict[str, str]:
        names = list(hydrate or ())
        return {"x-cardsavr-hydration": _compact(names)} if names else {}

    # -- generic ----------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Any CardSavr endpoint without a helper: the decrypted JSON answer.

        Only GET is retried; anything else is sent once, since the client
        cannot know whether repeating it is harmless.
        """
        if not path.startswith("/"):
            raise ValueError("path must start with /")
        answer = await self._call(
            method.upper(),
            path,
            query=query,
            body=body,
            headers=headers,
            retry=method.upper() == "GET",
        )
        return answer.body

    # -- merchant sites ---------------------------------------------------

    async def list_merchant_sites(
        self,
        *,
        ids: Iterable[int] | None = None,
        host: str | None = None,
        hosts: Iterable[str] | None = None,
        tags: Iterable[str] | Iterable[Iterable[str]] | None = None,
        name_starts_with: str | None = None,
        page: int = 1,
        page_length: int = 100,
        sort: str = "name",
        retries: int | None = None,
    ) -> Page[MerchantSite]:
        """`tags` is a list of tags (any of them) or a list of such lists
        (each group must match), as CardSavr reads repeated `tags` keys.
        `retries` overrides max_read_retries for this read, as for get_job."""
        query: list[tuple[str, Any]] = [
            ("ids", list(ids) if ids is not None else None),
            ("host", host),
            ("hosts", list(hosts) if hosts is not None else None),
            ("name_starts_with", name_starts_with),
        ]
        for group in _tag_groups(tags):
            query.append(("tags", group))
        path = "/merchant_sites"
        answer = await self._call(
            "GET",
            path,
            query=query,
            headers={"x-cardsavr-paging": self._paging_header(page, page_length, sort)},
            retry=True,
            retries=retries,
        )
        return self._page(answer, MerchantSite.from_json, path, page, page_length)

    async def get_merchant_site(self, site_id: int) -> MerchantSite:
        path = f"/merchant_sites/{int(site_id)}"
        answer = await self._call("GET", path, retry=True)
        return self._parse(
            MerchantSite.from_json, self._object(answer, "GET", path), "GET", path
        )

    async def fetch_bytes(self, url: str) -> tuple[bytes, str]:
        """Download a logo: (content, content type). Unsigned, like a browser."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https"):
            raise ValidationError(f"GET {parsed.path} is not an http(s) URL")
        attempt = 0
        while True:
            try:
                return await self._fetch_once(url, parsed.path)
            except (
                RateLimitedError,
                ServerError,
                TransportError,
                UpstreamTimeoutError,
            ) as exc:
                if attempt >= self._config.max_read_retries:
                    raise
                delay = self._backoff(attempt, exc)
                attempt += 1
                logger.warning(
                    "Logo GET %s failed (%s), retry %s in %.2f s",
                    parsed.path,
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                await _sleep(delay)

    async def _fetch_once(self, url: str, path: str) -> tuple[bytes, str]:
        http = self._http_client()
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._config.timeout):
                async with http.stream("GET", url) as response:
                    chunks = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_LOGO_BYTES:
                            raise ProtocolError(f"GET {path} answered a body too large")
                        chunks.append(chunk)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise UpstreamTimeoutError(f"GET {path} timed out") from exc
        except httpx.TransportError as exc:
            raise TransportError(
                f"GET {path} could not connect ({type(exc).__name__})"
            ) from exc
        status = response.status_code
        logger.debug(
            "Logo GET %s -> %s in %.0f ms",
            path,
            status,
            (time.monotonic() - started) * 1000,
        )
        if status >= 400:
            raise self._error_for("GET", path, status, None, response.headers)
        content_type = response.headers.get("content-type", "application/octet-stream")
        return b"".join(chunks), content_type.split(";")[0].strip()

    # -- cardholders, cards, accounts -------------------------------------

    async def create_cardholder(
        self,
        *,
        cuid: str,
        first_name: str = "",
        last_name: str = "",
        email: str = "",
        webhook_url: str | None = None,
        type: str = "persistent_creds",
        safe_key: str | None = None,
    ) -> dict:
        body: dict[str, Any] = {"cuid": cuid, "type": type}
        for name, value in (
            ("first_name", first_name),
            ("last_name", last_name),
            ("email", email),
            ("webhook_url", webhook_url),
        ):
            if value:
                body[name] = value
        path = "/cardholders"
        answer = await self._call(
            "POST",
            path,
            body=body,
            headers={
                "x-cardsavr-financial-institution": self._config.financial_institution
            },
            safe_key=safe_key,
            retry=False,
        )
        return self._object(answer, "POST", path)

    async def get_cardholder(
        self, cardholder_id: int, *, safe_key: str | None = None
    ) -> dict:
        path = f"/cardholders/{int(cardholder_id)}"
        answer = await self._call("GET", path, safe_key=safe_key, retry=True)
        return self._object(answer, "GET", path)

    async def create_card(
        self,
        *,
        cardholder_id: int,
        pan: str,
        cvv: str,
        expiration_month: str,
        expiration_year: str,
        name_on_card: str,
        address: dict | None = None,
        safe_key: str | None = None,
    ) -> dict:
        body: dict[str, Any] = {
            "cardholder_id": cardholder_id,
            "pan": pan,
            "cvv": cvv,
            "expiration_month": expiration_month,
            "expiration_year": expiration_year,
            "name_on_card": name_on_card,
        }
        if address:
            body["address"] = {"cardholder_id": cardholder_id, **address}
        path = "/cardsavr_cards"
        answer = await self._call(
            "POST", path, body=body, safe_key=safe_key, retry=False
        )
        card = self._object(answer, "POST", path)
        # CardSavr never echoes these; drop them should a stand-in ever do so.
        return {key: value for key, value in card.items() if key not in ("pan", "cvv")}

    async def create_account(
        self,
        *,
        cardholder_id: int,
        merchant_site_id: int,
        account_link: dict[str, str] | None = None,
        customer_key: str | None = None,
        safe_key: str | None = None,
    ) -> dict:
        body: dict[str, Any] = {
            "cardholder_id": cardholder_id,
            "merchant_site_id": merchant_site_id,
        }
        if account_link:
            body["account_link"] = dict(account_link)
        if customer_key:
            body["customer_key"] = customer_key
        path = "/cardsavr_accounts"
        answer = await self._call(
            "POST", path, body=body, safe_key=safe_key, retry=False
        )
        account = self._object(answer, "POST", path)
        return {key: value for key, value in account.items() if key != "account_link"}

    # -- jobs -------------------------------------------------------------

    @staticmethod
    def _job_body(spec: JobSpec) -> dict[str, Any]:
        account: dict[str, Any] = {
            "cardholder_id": spec.cardholder_id,
            "merchant_site_id": spec.merchant_site_id,
        }
        if spec.account_link:
            account["account_link"] = dict(spec.account_link)
        return {
            "status": "REQUESTED",
            "cardholder_id": spec.cardholder_id,
            "card_id": spec.card_id,
            "account": account,
        }

    async def create_jobs(self, specs: Sequence[JobSpec]) -> list[Job]:
        """Create several jobs in one plural POST.

        Never retried: if the answer is lost the jobs may exist anyway, and a
        second POST would start a second bot logging in to the same merchant
        account, which can lock the cardholder out. The caller reconciles by
        listing the cardholder's jobs instead.
        """
        if not specs:
            return []
        path = JOBS_PATH
        answer = await self._call(
            "POST",
            path,
            body=[self._job_body(spec) for spec in specs],
            headers=self._hydration(("credential_requests", "account")),
            retry=False,
        )
        items = self._list(answer, "POST", path)
        jobs = []
        failed: list[dict[str, Any]] = []
        for item in items:
            if (
                isinstance(item, dict)
                and item.get("_errors")
                and item.get("id") is None
            ):
                failed.extend(_error_elements(item))
                continue
            jobs.append(self._parse(Job.from_json, item, "POST", path))
        if failed:
            error = ValidationError(
                f"POST {path} answered {answer.status}: {len(failed)} job(s) "
                f"refused: {_error_summary(failed)}",
                status=answer.status,
                errors=failed,
                property=_error_property(failed),
            )
            # The jobs that were created exist upstream; the caller must keep them.
            error.created_jobs = jobs  # type: ignore[attr-defined]
            raise error
        return jobs

    async def create_job(self, spec: JobSpec) -> Job:
        jobs = await self.create_jobs([spec])
        if len(jobs) != 1:
            raise ProtocolError(f"POST {JOBS_PATH} answered {len(jobs)} jobs for one")
        return jobs[0]

    async def get_job(
        self,
        job_id: int,
        *,
        hydrate: Iterable[str] = ("credential_requests", "account"),
        retries: int | None = None,
    ) -> Job:
        """`retries` overrides max_read_retries for this read; a caller that
        retries on its own schedule passes 0 and hears of a failure at once."""
        path = f"{JOBS_PATH}/{int(job_id)}"
        answer = await self._call(
            "GET",
            path,
            headers=self._hydration(hydrate),
            retry=True,
            retries=retries,
        )
        return self._parse(
            Job.from_json, self._object(answer, "GET", path), "GET", path
        )

    async def list_jobs(
        self,
        *,
        ids: Iterable[int] | None = None,
        cardholder_ids: Iterable[int] | None = None,
        status_include: Iterable[str] | None = None,
        status_exclude: Iterable[str] | None = None,
        last_updated_on_min: datetime.datetime | None = None,
        hydrate: Iterable[str] = ("credential_requests",),
        page: int = 1,
        page_length: int = 100,
        retries: int | None = None,
    ) -> Page[Job]:
        """`last_updated_on_min` lists only jobs updated at or after it (the
        poller's delta reads). `retries` as for get_job."""
        query = [
            ("ids", list(ids) if ids is not None else None),
            (
                "cardholder_ids",
                list(cardholder_ids) if cardholder_ids is not None else None,
            ),
            ("status_include", list(status_include) if status_include else None),
            ("status_exclude", list(status_exclude) if status_exclude else None),
            (
                "last_updated_on_min",
                _timestamp(last_updated_on_min) if last_updated_on_min else None,
            ),
        ]
        headers = {
            **self._hydration(hydrate),
            "x-cardsavr-paging": self._paging_header(page, page_length, None),
        }
        path = JOBS_PATH
        answer = await self._call(
            "GET", path, query=query, headers=headers, retry=True, retries=retries
        )
        return self._page(answer, Job.from_json, path, page, page_length)

    async def cancel_job(self, job_id: int) -> Job:
        path = f"{JOBS_PATH}/{int(job_id)}"
        # Asking twice for a cancellation leaves the job just as cancelled.
        answer = await self._call(
            "PUT",
            path,
            body={"status": "CANCEL_REQUESTED"},
            headers=self._hydration(("credential_requests", "account")),
            retry=True,
        )
        return self._parse(
            Job.from_json, self._object(answer, "PUT", path), "PUT", path
        )

    async def answer_credential_request(
        self, job_id: int, envelope_id: str, account_link: dict[str, str]
    ) -> Job:
        """Send the cardholder's answer to one credential request.

        Never retried automatically: CardSavr allows one failed login and one
        failed code per job, so an answer that did arrive and is sent again
        can count as a second failure and lock the cardholder out of the
        merchant. Whoever calls this decides, with the cardholder, what next.
        """
        path = f"{JOBS_PATH}/{int(job_id)}"
        answer = await self._call(
            "PUT",
            path,
            body={"account": {"account_link": dict(account_link)}},
            headers={
                "x-cardsavr-envelope-id": envelope_id,
                **self._hydration(("credential_requests", "account")),
            },
            retry=False,
        )
        return self._parse(
            Job.from_json, self._object(answer, "PUT", path), "PUT", path
        )

    # -- messages ---------------------------------------------------------

    async def get_cardholder_messages(self, cardholder_id: int) -> list[dict]:
        path = f"/messages/cardholders/{int(cardholder_id)}"
        answer = await self._call("GET", path, retry=True)
        return [
            item for item in self._list(answer, "GET", path) if isinstance(item, dict)
        ]

    async def get_job_messages(self, job_id: int) -> list[dict]:
        path = f"/messages{JOBS_PATH}/{int(job_id)}"
        answer = await self._call("GET", path, retry=True)
        return [
            item for item in self._list(answer, "GET", path) if isinstance(item, dict)
        ]


def _tag_groups(tags: Any) -> list[list[str]]:
    if not tags:
        return []
    if isinstance(tags, str):
        return [[tags]]
    items = list(tags)
    if all(isinstance(item, str) for item in items):
        return [items]
    return [[item] if isinstance(item, str) else list(item) for item in items]
