"""A Python client for Strivve's CardSavr REST API (no Django dependency)."""

from cardsavr.client import CardSavrClient
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
from cardsavr.types import (
    AccountLinkField,
    CredentialRequest,
    Job,
    JobSpec,
    MerchantSite,
    Page,
)

__all__ = [
    "AccountLinkField",
    "AuthenticationError",
    "CardSavrClient",
    "CardSavrError",
    "ClientConfig",
    "CredentialRequest",
    "Job",
    "JobSpec",
    "MerchantSite",
    "NotFoundError",
    "Page",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitedError",
    "ServerError",
    "TransportError",
    "UpstreamTimeoutError",
    "ValidationError",
]
