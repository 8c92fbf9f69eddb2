"""The one JSON shape of a job, used by the API, the websocket and pushes."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from django.urls import NoReverseMatch, get_script_prefix, reverse
from django.utils import timezone

from jobs.models import CredentialRequest, Job, MerchantSite
from jobs.outcomes import may_leave, next_steps

# The page views serve logos from the database (jobs/urls.py names the route).
LOGO_URL_NAMES = ("merchant_site_logo", "jobs:merchant_site_logo")


@functools.cache
def _logo_url_name() -> str | None:
    for name in LOGO_URL_NAMES:
        try:
            reverse(name, args=[1])
        except NoReverseMatch:
            continue
        return name
    return None


@functools.lru_cache(maxsize=4096)
def _logo_path(script_prefix: str, site_pk: int) -> str:
    # reverse() costs about 15 µs, paid for every job a poll tick pushes; a
    # site's path changes only with the prefix the portal is served under.
    name = _logo_url_name()
    return reverse(name, args=[site_pk]) if name else ""


def logo_url(site: MerchantSite) -> str:
    """The portal's own URL for the site's logo, or "" when it has none."""
    if not site.logo_content_type:
        return ""
    return _logo_path(get_script_prefix(), site.pk)


def account_link_fields(definitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "key_name": field["key_name"],
            "label": field.get("label") or field["key_name"],
            "secret": bool(field.get("secret")),
        }
        for field in definitions
        if isinstance(field, dict) and field.get("key_name")
    ]


def merchant_site_summary(site: MerchantSite) -> dict[str, Any]:
    return {
        "id": site.pk,
        "name": site.name,
        "host": site.host,
        "logo": logo_url(site),
    }


def credential_request_payload(request: CredentialRequest) -> dict[str, Any]:
    return {
        "envelope_id": request.envelope_id,
        "type": request.type,
        "account_link": account_link_fields(request.account_link),
        "status_message": request.status_message,
        # A claimed request is waiting for CardSavr, not for the cardholder.
        "answerable": request.answered_at is None,
        "reply_state": request.reply_state,
        "reply_error": request.reply_error,
    }


def seconds_left(job: Job, now: datetime | None = None) -> int | None:
    if job.deadline is None or job.is_terminated:
        return None
    now = now or timezone.now()
    return max(0, int((job.deadline - now).total_seconds()))


def job_payload(
    job: Job, open_request: CredentialRequest | None, now: datetime | None = None
) -> dict[str, Any]:
    """`open_request` is the job's open credential request, if any; pass None for
    a finished job."""
    if job.is_terminated:
        open_request = None
    return {
        "id": job.pk,
        "merchant_site": merchant_site_summary(job.merchant_site),
        "status": job.status,
        "status_message": job.status_message,
        "percent_complete": job.percent_complete,
        "auth_percent_complete": job.auth_percent_complete,
        "termination_type": job.termination_type or None,
        "outcome": job.outcome,
        "deadline": job.deadline.isoformat() if job.deadline else None,
        "seconds_left": seconds_left(job, now),
        "version": job.version,
        "credential_request": (
            credential_request_payload(open_request) if open_request else None
        ),
        "may_leave": not job.is_terminated
        and may_leave(job.status, job.auth_percent_complete),
        "next_steps": next_steps(
            job.status, job.outcome, vanished=job.vanished_at is not None
        ),
        "created_at": job.created_at.isoformat() if job.created_at else None,
    }
