"""Typed views of CardSavr's JSON objects.

CardSavr adds fields and renames statuses often, so parsing is lenient: every
object keeps the whole JSON in `raw`, statuses stay plain strings, and a
missing or malformed optional value becomes None (or an empty value) instead of
an exception. Only a missing id makes an object unusable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")

INITIAL_ACCOUNT_LINK = "initial_account_link"


def parse_timestamp(value: Any) -> datetime | None:
    """ISO-8601 (with or without Z, with or without ms) as an aware datetime."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _float(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _status(value: Any) -> str:
    """A status as text, whatever scalar CardSavr sent."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _required_id(raw: Any, what: str) -> int:
    if not isinstance(raw, dict):
        raise ValueError(f"{what} is not a JSON object")
    value = _int_or_none(raw.get("id"))
    if value is None:
        raise ValueError(f"{what} has no usable id")
    return value


@dataclass(frozen=True)
class AccountLinkField:
    key_name: str
    label: str
    secret: bool
    type: str | None

    @classmethod
    def from_json(cls, raw: Any) -> AccountLinkField | None:
        if not isinstance(raw, dict) or not _str(raw.get("key_name")):
            return None
        return cls(
            key_name=raw["key_name"],
            label=_str(raw.get("label")) or raw["key_name"],
            secret=bool(raw.get("secret", False)),
            type=_str_or_none(raw.get("type")),
        )


def _account_link(value: Any) -> tuple[AccountLinkField, ...]:
    if not isinstance(value, list):
        return ()
    fields = (AccountLinkField.from_json(item) for item in value)
    return tuple(field for field in fields if field is not None)


@dataclass(frozen=True)
class CredentialRequest:
    envelope_id: str
    type: str
    job_id: int
    account_link: tuple[AccountLinkField, ...]
    status: str | None
    status_message: str
    job_timeout: int | None
    raw: dict

    @classmethod
    def from_json(cls, raw: Any, job_id: int | None = None) -> CredentialRequest:
        if not isinstance(raw, dict) or not _str(raw.get("envelope_id")):
            raise ValueError("credential request has no envelope_id")
        # Legacy requests carry a placeholder string instead of a message object.
        message = raw.get("message")
        if not isinstance(message, dict):
            message = {}
        request_job_id = _int_or_none(raw.get("job_id"))
        if request_job_id is None:
            request_job_id = job_id
        if request_job_id is None:
            raise ValueError("credential request has no job_id")
        return cls(
            envelope_id=raw["envelope_id"],
            type=_str(raw.get("type")),
            job_id=request_job_id,
            account_link=_account_link(raw.get("account_link")),
            status=_str_or_none(message.get("status")),
            status_message=_str(message.get("status_message")),
            job_timeout=_int_or_none(message.get("job_timeout")),
            raw=raw,
        )


@dataclass(frozen=True)
class Job:
    id: int
    cardholder_id: int | None
    card_id: int | None
    account_id: int | None
    merchant_site_id: int | None
    status: str
    status_message: str
    termination_type: str | None
    percent_complete: float
    auth_percent_complete: float
    job_timeout: int | None  # milliseconds left, as CardSavr actually reports it
    created_on: datetime | None
    started_on: datetime | None
    completed_on: datetime | None
    last_updated_on: datetime | None
    credential_requests: tuple[CredentialRequest, ...]
    raw: dict

    @classmethod
    def from_json(cls, raw: Any) -> Job:
        job_id = _required_id(raw, "job")
        # merchant_site_id lives on the account; only a hydrated account has it.
        account = raw.get("account")
        merchant_site_id = None
        if isinstance(account, dict):
            merchant_site_id = _int_or_none(account.get("merchant_site_id"))
        if merchant_site_id is None:
            merchant_site_id = _int_or_none(raw.get("merchant_site_id"))
        account_id = _int_or_none(raw.get("account_id"))
        if account_id is None and isinstance(account, dict):
            account_id = _int_or_none(account.get("id"))
        requests = []
        hydrated = raw.get("credential_requests")
        for item in hydrated if isinstance(hydrated, list) else ():
            try:
                requests.append(CredentialRequest.from_json(item, job_id))
            except ValueError:
                continue
        return cls(
            id=job_id,
            cardholder_id=_int_or_none(raw.get("cardholder_id")),
            card_id=_int_or_none(raw.get("card_id")),
            account_id=account_id,
            merchant_site_id=merchant_site_id,
            status=_status(raw.get("status")),
            status_message=_str(raw.get("status_message")),
            termination_type=_status(raw.get("termination_type")) or None,
            percent_complete=_float(raw.get("percent_complete")),
            auth_percent_complete=_float(raw.get("auth_percent_complete")),
            job_timeout=_int_or_none(raw.get("job_timeout")),
            created_on=parse_timestamp(raw.get("created_on")),
            started_on=parse_timestamp(raw.get("started_on")),
            completed_on=parse_timestamp(raw.get("completed_on")),
            last_updated_on=parse_timestamp(raw.get("last_updated_on")),
            credential_requests=tuple(requests),
            raw=raw,
        )


def _tags(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(tag.strip() for tag in value.split(",") if tag.strip())
    if isinstance(value, list):
        return tuple(tag for tag in value if isinstance(tag, str))
    return ()


@dataclass(frozen=True)
class MerchantSite:
    id: int
    name: str
    host: str
    tags: tuple[str, ...]
    images: tuple[dict, ...]
    account_link: tuple[AccountLinkField, ...]
    raw: dict

    @classmethod
    def from_json(cls, raw: Any) -> MerchantSite:
        site_id = _required_id(raw, "merchant site")
        images = raw.get("images")
        return cls(
            id=site_id,
            name=_str(raw.get("name")),
            host=_str(raw.get("host")),
            tags=_tags(raw.get("tags")),
            images=tuple(
                image
                for image in (images if isinstance(images, list) else ())
                if isinstance(image, dict) and _str(image.get("url"))
            ),
            account_link=_account_link(raw.get("account_link")),
            raw=raw,
        )

    @property
    def logo_url(self) -> str:
        """The widest colour image, else the widest grayscale one, else ""."""
        if not self.images:
            return ""
        best = max(
            self.images,
            key=lambda image: (not image.get("grayscale"), _float(image.get("width"))),
        )
        return best["url"]

    @property
    def initial_account_link(self) -> tuple[AccountLinkField, ...]:
        initial = tuple(
            field for field in self.account_link if field.type == INITIAL_ACCOUNT_LINK
        )
        if initial or any(field.type for field in self.account_link):
            return initial
        return self.account_link


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    page: int
    page_length: int
    total_results: int | None


@dataclass(frozen=True)
class JobSpec:
    cardholder_id: int
    card_id: int
    merchant_site_id: int
    account_link: dict[str, str] | None = None

    def __repr__(self) -> str:
        # account_link holds merchant credentials; keep them out of reprs/logs.
        return (
            f"JobSpec(cardholder_id={self.cardholder_id}, card_id={self.card_id}, "
            f"merchant_site_id={self.merchant_site_id})"
        )
