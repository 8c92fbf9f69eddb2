"""One exception family for everything CardSavr or the network can do to a call.

Messages name the method, the path without query values, the status and the
error names/properties CardSavr reported, never a request or response body:
bodies carry merchant credentials, card data and codes.
"""

from __future__ import annotations

from typing import Any


class CardSavrError(Exception):
    status: int | None
    errors: list[dict[str, Any]]

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []


class AuthenticationError(CardSavrError):
    """401: bad credentials, session or signature."""


class PermissionDeniedError(CardSavrError):
    """403: the agent's role may not do this."""


class NotFoundError(CardSavrError):
    """404."""


class ValidationError(CardSavrError):
    """400: CardSavr refused the input, usually naming the property."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        property: str | None = None,
    ) -> None:
        super().__init__(message, status=status, errors=errors)
        self.property = property


class RateLimitedError(CardSavrError):
    """429; retry_after holds the server's Retry-After in seconds when given."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        errors: list[dict[str, Any]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, errors=errors)
        self.retry_after = retry_after


class ServerError(CardSavrError):
    """5xx."""


class UpstreamTimeoutError(CardSavrError):
    """The call's deadline passed before a complete answer arrived."""


class TransportError(CardSavrError):
    """The connection failed: refused, reset, TLS failure."""


class ProtocolError(CardSavrError):
    """An answer that is not CardSavr's protocol: garbage, an envelope that does
    not decrypt, a bad response signature."""
