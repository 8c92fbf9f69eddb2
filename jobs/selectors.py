"""Reads for pages, the API, the websocket and the poller."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.db.models import Prefetch, Q, QuerySet
from django.utils import timezone

from jobs.models import (
    Cardholder,
    CloseReason,
    CredentialRequest,
    Job,
    JobEvent,
    MerchantSite,
)
from jobs.serializers import job_payload

UPSTREAM_STATE_KEY = "cardsavr:upstream_state"
DEFAULT_UPSTREAM_STATE: dict[str, Any] = {
    "reachable": True,
    "message": "",
    "since": None,
    "retry_in": None,
}
# How many of a cardholder's jobs the dashboard shows, newest first.
DASHBOARD_JOB_LIMIT = 200
# A push approval is acknowledged by the portal at once; its instruction (a
# number to tap, say) is what the cardholder still needs to see.
PUSH_APPROVAL_TYPE = "tfa_message"


def open_requests_prefetch() -> Prefetch:
    """Open credential requests into `job.open_requests`, newest first."""
    return Prefetch(
        "credential_requests",
        queryset=CredentialRequest.objects.filter(closed_at__isnull=True).order_by(
            "-opened_at", "-pk"
        ),
        to_attr="open_requests",
    )


def answered_requests_prefetch() -> Prefetch:
    return Prefetch(
        "credential_requests",
        queryset=CredentialRequest.objects.filter(
            close_reason=CloseReason.ANSWERED
        ).order_by("-opened_at", "-pk"),
        to_attr="answered_requests",
    )


def jobs_with_state() -> QuerySet[Job]:
    """Jobs with their open requests, in two queries however many there are."""
    return (
        Job.objects.select_related("merchant_site")
        .defer("merchant_site__logo")
        .prefetch_related(open_requests_prefetch())
    )


def jobs_for_payload() -> QuerySet[Job]:
    """Jobs with all a payload needs, in three queries however many there are."""
    return jobs_with_state().prefetch_related(answered_requests_prefetch())


def open_request_of(job: Job) -> CredentialRequest | None:
    requests = getattr(job, "open_requests", None)
    if requests is None:
        requests = list(
            job.credential_requests.filter(closed_at__isnull=True).order_by(
                "-opened_at", "-pk"
            )
        )
    return requests[0] if requests else None


def shown_request_of(job: Job) -> CredentialRequest | None:
    """The request the cardholder sees: the open one, else an acknowledged
    push approval while the sign-in it approves is still under way."""
    request = open_request_of(job)
    if request is not None or job.is_terminated or job.auth_percent_complete >= 100:
        return request
    answered = getattr(job, "answered_requests", None)
    if answered is None:
        answered = list(
            job.credential_requests.filter(close_reason=CloseReason.ANSWERED).order_by(
                "-opened_at", "-pk"
            )[:1]
        )
    if answered and answered[0].type == PUSH_APPROVAL_TYPE:
        return answered[0]
    return None


def payload_for(job: Job, now: datetime | None = None) -> dict[str, Any]:
    return job_payload(job, shown_request_of(job), now=now)


def cardholder_for_user(user: Any) -> Cardholder | None:
    if user is None or not user.is_authenticated:
        return None
    return Cardholder.objects.filter(user_id=user.pk).first()


def job_payloads_for_cardholder(cardholder: Cardholder) -> list[dict[str, Any]]:
    """Jobs waiting for the cardholder first, soonest deadline first; then the
    rest, newest first."""
    now = timezone.now()
    jobs = jobs_for_payload().filter(cardholder=cardholder).order_by("-created_at")
    payloads = [payload_for(job, now) for job in jobs[:DASHBOARD_JOB_LIMIT]]
    waiting = [p for p in payloads if _waiting_for_cardholder(p)]
    waiting.sort(
        key=lambda p: p["seconds_left"] if p["seconds_left"] is not None else 10**9
    )
    others = [p for p in payloads if not _waiting_for_cardholder(p)]
    return waiting + others


def _waiting_for_cardholder(payload: dict[str, Any]) -> bool:
    request = payload["credential_request"]
    return request is not None and request["answerable"]


def job_for_cardholder(cardholder: Cardholder, job_id: int) -> Job:
    """Raises Job.DoesNotExist for another cardholder's job, as for no job."""
    return jobs_for_payload().get(pk=job_id, cardholder=cardholder)


def job_payload_by_id(job_id: int) -> dict[str, Any]:
    return payload_for(jobs_for_payload().get(pk=job_id))


def job_timeline(job: Job) -> list[JobEvent]:
    return list(JobEvent.objects.filter(job=job).order_by("created_at", "pk"))


def merchant_sites(q: str = "") -> QuerySet[MerchantSite]:
    sites = MerchantSite.objects.defer("logo").order_by("name", "pk")
    q = q.strip()
    if q:
        sites = sites.filter(Q(name__icontains=q) | Q(host__icontains=q))
    return sites


def initial_fields(site: MerchantSite) -> list[dict[str, Any]]:
    """The fields asked before a job starts: those typed initial_account_link,
    or all of them when CardSavr typed none."""
    fields = [f for f in site.account_link if isinstance(f, dict) and f.get("key_name")]
    initial = [f for f in fields if f.get("type") == "initial_account_link"]
    if initial or any(f.get("type") for f in fields):
        return initial
    return fields


def active_jobs() -> QuerySet[Job]:
    """Jobs CardSavr may still change: not finished and not vanished."""
    return Job.objects.filter(termination_type="", vanished_at__isnull=True)


def upstream_state() -> dict[str, Any]:
    try:
        state = cache.get(UPSTREAM_STATE_KEY)
    except Exception:
        # Without the cache the last known state is unknown; pages still
        # load from the database.
        state = None
    return dict(state) if state else dict(DEFAULT_UPSTREAM_STATE)
