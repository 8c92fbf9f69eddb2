"""Writes: everything that changes a cardholder, a card or a job.

Sync functions do their database work in `transaction.atomic` and push to the
channel layer only after commit, so a browser never sees a state that rolled
back. Async orchestrators call CardSavr and run the sync parts through
`sync_to_async`.

Merchant credentials, codes, card numbers and CVVs pass through to CardSavr
and are never stored, logged or put in an exception message here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from cardsavr import types as remote_types
from cardsavr.errors import (
    AuthenticationError,
    CardSavrError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
)
from cardsavr.errors import ValidationError as CardSavrValidationError
from jobs import events
from jobs.cardsavr_client import get_client
from jobs.models import (
    Card,
    Cardholder,
    CloseReason,
    CredentialRequest,
    Job,
    JobEvent,
    MerchantSite,
    Outcome,
    ReplyState,
)
from jobs.outcomes import derive_outcome
from jobs.selectors import (
    DEFAULT_UPSTREAM_STATE,
    PUSH_APPROVAL_TYPE,
    UPSTREAM_STATE_KEY,
    initial_fields,
    jobs_for_payload,
    jobs_with_state,
    payload_for,
)

logger = logging.getLogger(__name__)

# job_timeout shrinks on every read; a deadline that moved less than this is
# the same deadline and not worth a write or a push.
DEADLINE_TOLERANCE = timedelta(seconds=5)
MAX_REPLY_LENGTH = 256
# CardSavr's envelope ids are base64 text; anything else (a line break, say)
# must never reach the x-cardsavr-envelope-id header or the database.
ENVELOPE_ID_RE = re.compile(r"^[A-Za-z0-9+/=_.:-]{1,128}$")
KEY_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LOGO_FETCHES_AT_ONCE = 4
PUSH_APPROVAL_ANSWER = "ack"
CANCELLED_STATUSES = {"CANCELLED", "CANCELED"}
VANISHED_MESSAGE = (
    "CardSavr no longer knows this update, so its result is unknown. Check your "
    "card at the merchant, or start a new update."
)
UNCERTAIN_REPLY_MESSAGE = (
    "CardSavr did not confirm your answer. It may have been received, so it was "
    "not sent again: watch this update, it will move on or ask again."
)


class ServiceError(Exception):
    """A failure the cardholder can act on; `message` is safe to show."""

    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class JobNotFound(ServiceError):
    status = 404


class ReplyConflict(ServiceError):
    status = 409


class InvalidInput(ServiceError):
    status = 400


class UpstreamRejected(ServiceError):
    status = 502


class UpstreamUnavailable(ServiceError):
    status = 503


# -- pushes ---------------------------------------------------------------


def _send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:
        # A lost push costs a browser a late update (versions and snapshots
        # repair it); it must not fail the write that already committed.
        logger.warning("Push to %s failed", group, exc_info=True)


def _push_payload(cardholder_id: int, payload: dict[str, Any]) -> None:
    message = {"type": events.JOB_CHANGED_EVENT, "job": payload}
    transaction.on_commit(
        partial(_send, events.cardholder_group(cardholder_id), message)
    )


def push_job(job: Job) -> None:
    """Send the job's current payload to its cardholder once the transaction
    commits (at once outside a transaction)."""
    _push_payload(job.cardholder_id, payload_for(job))


def set_upstream_state(reachable: bool, message: str, retry_in: float | None) -> None:
    try:
        _store_upstream_state(reachable, message, retry_in)
    except Exception as exc:
        # The cache (Redis when scaled) being down must not stop the poller;
        # the state is written again on the next tick.
        logger.warning("CardSavr reachability not stored: %s", type(exc).__name__)


def _store_upstream_state(
    reachable: bool, message: str, retry_in: float | None
) -> None:
    previous = cache.get(UPSTREAM_STATE_KEY) or DEFAULT_UPSTREAM_STATE
    if previous["reachable"] == reachable and previous["message"] == message:
        return
    since = previous["since"]
    if previous["reachable"] != reachable or since is None:
        since = timezone.now().isoformat()
    state = {
        "reachable": reachable,
        "message": message,
        "since": since,
        "retry_in": retry_in,
    }
    cache.set(UPSTREAM_STATE_KEY, state, timeout=None)
    _send(
        events.BROADCAST_GROUP,
        {"type": events.UPSTREAM_CHANGED_EVENT, "state": state},
    )


# -- mirroring CardSavr's job state ---------------------------------------


@dataclass
class _Plan:
    updates: dict[str, Any] = field(default_factory=dict)
    to_open: list[remote_types.CredentialRequest] = field(default_factory=list)
    to_close: list[tuple[CredentialRequest, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.updates or self.to_open or self.to_close)


def _remote_fields(job: Job, remote: remote_types.Job, read_at: datetime) -> dict:
    wanted: dict[str, Any] = {
        "status": (remote.status or job.status)[:64],
        "status_message": remote.status_message[:500],
        "percent_complete": remote.percent_complete,
        "auth_percent_complete": remote.auth_percent_complete,
        "termination_type": (remote.termination_type or "")[:32],
    }
    for name, value in (
        ("account_id", remote.account_id),
        ("cardsavr_created_on", remote.created_on),
        ("started_on", remote.started_on),
        ("completed_on", remote.completed_on),
        ("last_updated_on", remote.last_updated_on),
    ):
        if value is not None:
            wanted[name] = value
    if remote.job_timeout is not None:
        deadline = read_at + timedelta(milliseconds=max(0, remote.job_timeout))
        if job.deadline is None or abs(deadline - job.deadline) > DEADLINE_TOLERANCE:
            wanted["deadline"] = deadline
    return {
        name: value for name, value in wanted.items() if getattr(job, name) != value
    }


def _close_reason(request: CredentialRequest, remote: remote_types.Job) -> str:
    if request.answered_at is not None:
        return CloseReason.ANSWERED
    if remote.termination_type:
        if remote.status.upper() in CANCELLED_STATUSES:
            return CloseReason.CANCELLED
        return CloseReason.JOB_ENDED
    return CloseReason.SUPERSEDED


def _plan(
    job: Job,
    open_requests: list[CredentialRequest],
    remote: remote_types.Job,
    read_at: datetime,
    known_envelopes: set[str] | None = None,
) -> _Plan:
    """What must change to mirror `remote`; `known_envelopes` holds the closed
    requests' envelope ids when the caller looked them up."""
    plan = _Plan()
    if job.is_terminated:
        # Finished is final at CardSavr; a late or stale read changes nothing.
        return plan
    if (
        remote.last_updated_on is not None
        and job.last_updated_on is not None
        and remote.last_updated_on < job.last_updated_on
    ):
        return plan
    plan.updates = _remote_fields(job, remote, read_at)

    open_by_envelope = {request.envelope_id: request for request in open_requests}
    remote_by_envelope = {
        r.envelope_id: r
        for r in remote.credential_requests
        if ENVELOPE_ID_RE.match(r.envelope_id)
    }
    if not remote.termination_type:
        plan.to_open = [
            request
            for envelope_id, request in remote_by_envelope.items()
            if envelope_id not in open_by_envelope
            and envelope_id not in (known_envelopes or ())
        ]
    # A PENDING job read without its request is an incomplete read, not a
    # closed question: keep what is open until CardSavr shows otherwise.
    incomplete = (
        not remote.termination_type
        and not remote.credential_requests
        and remote.status.upper().startswith("PENDING")
    )
    if not incomplete:
        plan.to_close = [
            (request, _close_reason(request, remote))
            for envelope_id, request in open_by_envelope.items()
            if remote.termination_type or envelope_id not in remote_by_envelope
        ]

    still_open = len(open_requests) - len(plan.to_close) + len(plan.to_open) > 0
    outcome = derive_outcome(
        plan.updates.get("status", job.status),
        plan.updates.get("termination_type", job.termination_type),
        still_open,
    )
    if outcome != job.outcome:
        plan.updates["outcome"] = outcome
    return plan


def _field_definitions(
    fields: tuple[remote_types.AccountLinkField, ...],
) -> list[dict[str, Any]]:
    return [
        {"key_name": f.key_name, "label": f.label, "secret": f.secret} for f in fields
    ]


def _open_request(
    job: Job, remote: remote_types.CredentialRequest, now: datetime, source: str
) -> CredentialRequest:
    request = CredentialRequest.objects.create(
        job=job,
        envelope_id=remote.envelope_id,
        type=remote.type[:64],
        account_link=_field_definitions(remote.account_link),
        status_message=(remote.status_message or job.status_message)[:500],
        opened_at=now,
    )
    JobEvent.objects.create(
        job=job,
        kind=JobEvent.Kind.PROMPT_OPENED,
        status=job.status,
        status_message=request.status_message,
        data={
            "envelope_id": request.envelope_id,
            "type": request.type,
            "fields": [f["key_name"] for f in request.account_link],
            "source": source,
        },
    )
    return request


def _execute(
    job: Job,
    open_requests: list[CredentialRequest],
    plan: _Plan,
    *,
    source: str,
    now: datetime,
) -> list[CredentialRequest]:
    """Write `plan` to `job` (locked by the caller); return the open requests."""
    old_status = job.status
    for name, value in plan.updates.items():
        setattr(job, name, value)
    job.version += 1
    job.last_synced_at = now
    job.save(update_fields=[*plan.updates, "version", "last_synced_at", "updated_at"])

    if "status" in plan.updates:
        JobEvent.objects.create(
            job=job,
            kind=JobEvent.Kind.STATUS,
            status=job.status,
            status_message=job.status_message,
            percent_complete=job.percent_complete,
            data={"from": old_status, "version": job.version, "source": source},
        )
    elif plan.updates.keys() & {
        "status_message",
        "percent_complete",
        "auth_percent_complete",
    }:
        JobEvent.objects.create(
            job=job,
            kind=JobEvent.Kind.PROGRESS,
            status=job.status,
            status_message=job.status_message,
            percent_complete=job.percent_complete,
            data={
                "auth_percent_complete": job.auth_percent_complete,
                "version": job.version,
                "source": source,
            },
        )

    closing = {request.pk for request, _ in plan.to_close}
    for request, reason in plan.to_close:
        request.closed_at = now
        request.close_reason = reason
        request.save(update_fields=["closed_at", "close_reason"])
        JobEvent.objects.create(
            job=job,
            kind=JobEvent.Kind.PROMPT_CLOSED,
            status=job.status,
            data={"envelope_id": request.envelope_id, "reason": reason},
        )
    still_open = [request for request in open_requests if request.pk not in closing]
    for remote_request in plan.to_open:
        still_open.insert(0, _open_request(job, remote_request, now, source))

    if plan.updates.get("termination_type"):
        JobEvent.objects.create(
            job=job,
            kind=JobEvent.Kind.TERMINATED,
            status=job.status,
            status_message=job.status_message,
            percent_complete=job.percent_complete,
            data={
                "termination_type": job.termination_type,
                "outcome": job.outcome,
                "source": source,
            },
        )
    return still_open


def _open_requests(job: Job) -> list[CredentialRequest]:
    cached = getattr(job, "open_requests", None)
    if cached is not None:
        return list(cached)
    return list(
        job.credential_requests.filter(closed_at__isnull=True).order_by(
            "-opened_at", "-pk"
        )
    )


def _copy_state(source: Job, target: Job) -> None:
    if source is target:
        return
    for model_field in Job._meta.concrete_fields:
        setattr(target, model_field.attname, getattr(source, model_field.attname))
    target.open_requests = source.open_requests


def _locked_job(job_pk: int) -> Job:
    job = (
        Job.objects.select_for_update(of=("self",))
        .select_related("merchant_site")
        .defer("merchant_site__logo")
        .get(pk=job_pk)
    )
    job.open_requests = list(
        job.credential_requests.select_for_update()
        .filter(closed_at__isnull=True)
        .order_by("-opened_at", "-pk")
    )
    return job


def remote_job_differs(job: Job, remote: remote_types.Job, read_at: datetime) -> bool:
    """Whether mirroring `remote` may change the job (no query when its open
    requests were prefetched)."""
    return bool(_plan(job, _open_requests(job), remote, read_at))


def apply_remote_job(
    job: Job,
    remote: remote_types.Job,
    *,
    source: str,
    read_at: datetime | None = None,
) -> bool:
    """Mirror CardSavr's view of the job; True if anything changed.

    An unchanged job costs no query when its open requests were prefetched
    (`open_requests`). Every change raises the version by exactly one and is
    pushed after commit. `read_at` is when `remote` was read (default now).
    """
    read_at = read_at or timezone.now()
    if not remote_job_differs(job, remote, read_at):
        return False
    with transaction.atomic():
        current = _locked_job(job.pk)
        remote_envelopes = {r.envelope_id for r in remote.credential_requests}
        open_envelopes = {r.envelope_id for r in current.open_requests}
        known = set(
            CredentialRequest.objects.filter(
                envelope_id__in=remote_envelopes - open_envelopes
            ).values_list("envelope_id", flat=True)
        )
        plan = _plan(current, current.open_requests, remote, read_at, known)
        if not plan:
            _copy_state(current, job)
            return False
        current.open_requests = _execute(
            current, current.open_requests, plan, source=source, now=timezone.now()
        )
        _push_payload(current.cardholder_id, payload_for(current))
    _copy_state(current, job)
    logger.debug(
        "Job %s changed (%s) to version %s from %s",
        current.pk,
        ",".join(plan.updates) or "requests",
        current.version,
        source,
    )
    return True


def mark_job_vanished(job: Job, *, source: str = "poll") -> None:
    """CardSavr answered 404 for the job: stop polling it and say so."""
    with transaction.atomic():
        current = _locked_job(job.pk)
        if current.vanished_at is not None:
            _copy_state(current, job)
            return
        now = timezone.now()
        for request in current.open_requests:
            request.closed_at = now
            request.close_reason = CloseReason.JOB_ENDED
            request.save(update_fields=["closed_at", "close_reason"])
        current.open_requests = []
        current.vanished_at = now
        current.outcome = Outcome.FAILED
        current.status_message = VANISHED_MESSAGE
        current.version += 1
        current.save(
            update_fields=[
                "vanished_at",
                "outcome",
                "status_message",
                "version",
                "updated_at",
            ]
        )
        JobEvent.objects.create(
            job=current,
            kind=JobEvent.Kind.VANISHED,
            status=current.status,
            status_message=VANISHED_MESSAGE,
            data={"source": source, "version": current.version},
        )
        _push_payload(current.cardholder_id, payload_for(current))
    _copy_state(current, job)
    logger.warning("Job %s is no longer known to CardSavr", current.pk)


def apply_webhook_job(
    cardsavr_job_id: int,
    *,
    status: str,
    status_message: str,
    termination_type: str | None,
    completed_on: datetime | None,
) -> Job | None:
    """Mirror a session_complete notification; None for a job not ours."""
    job = (
        Job.objects.select_related("merchant_site")
        .defer("merchant_site__logo")
        .filter(cardsavr_id=cardsavr_job_id)
        .first()
    )
    if job is None:
        return None
    remote = remote_types.Job(
        id=cardsavr_job_id,
        cardholder_id=None,
        card_id=None,
        account_id=None,
        merchant_site_id=None,
        status=status or job.status,
        status_message=status_message or job.status_message,
        termination_type=termination_type,
        percent_complete=job.percent_complete,
        auth_percent_complete=job.auth_percent_complete,
        job_timeout=None,
        created_on=None,
        started_on=None,
        completed_on=completed_on,
        last_updated_on=None,
        credential_requests=(),
        raw={},
    )
    apply_remote_job(job, remote, source="webhook")
    return job


# -- credential replies ---------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A credential request taken for one answer; what forwarding it needs."""

    request_pk: int
    job_pk: int
    cardsavr_job_id: int
    envelope_id: str
    field_names: tuple[str, ...]
    by: str


def _invalid_characters(value: str) -> bool:
    # Control characters and lone surrogates cannot be typed into a merchant's
    # form and would corrupt the request; everything else passes unchanged.
    return any(unicodedata.category(char) in ("Cc", "Cs") for char in value)


@sensitive_variables("account_link", "value")
def validate_reply(definitions: list[dict[str, Any]], account_link: Any) -> None:
    """The answer must fill exactly the requested fields with short text."""
    if not isinstance(account_link, dict):
        raise InvalidInput("Send the answer as named fields.", field="account_link")
    labels = {f["key_name"]: f.get("label") or f["key_name"] for f in definitions}
    for name in account_link:
        if name not in labels:
            if not KEY_NAME_RE.match(str(name)):
                raise InvalidInput(
                    "The answer names a field that was not asked for.",
                    field="account_link",
                )
            raise InvalidInput(f"{name} was not asked for.", field=name)
    for name, label in labels.items():
        value = account_link.get(name)
        if value is None or value == "":
            raise InvalidInput(f"Enter your {label}.", field=name)
        if not isinstance(value, str):
            raise InvalidInput(f"{label} must be text.", field=name)
        if len(value) > MAX_REPLY_LENGTH:
            raise InvalidInput(
                f"{label} is too long: {MAX_REPLY_LENGTH} characters at most.",
                field=name,
            )
        if _invalid_characters(value):
            raise InvalidInput(
                f"{label} contains characters that cannot be typed; enter it again.",
                field=name,
            )


@sensitive_variables("account_link")
def check_reply_shape(envelope_id: Any, account_link: Any) -> None:
    """What any reply must look like before its question is even looked up."""
    if not isinstance(envelope_id, str) or not ENVELOPE_ID_RE.match(envelope_id):
        raise InvalidInput(
            "The question this answers is missing; reload the page.",
            field="envelope_id",
        )
    if not isinstance(account_link, dict):
        raise InvalidInput(
            "Send the answer as an object of fields.", field="account_link"
        )


@sensitive_variables("account_link")
def claim_reply(
    cardholder: Cardholder, job_id: int, envelope_id: str, account_link: Any
) -> Claim:
    """Take the job's open question for this answer, once; forward_reply sends
    it. A second claim of the same question raises ReplyConflict."""
    with transaction.atomic():
        job = (
            Job.objects.select_for_update()
            .filter(pk=job_id, cardholder=cardholder)
            .first()
        )
        if job is None:
            raise JobNotFound("This update does not exist.")
        if job.is_terminated:
            raise ReplyConflict("This update has finished; there is nothing to answer.")
        request = (
            CredentialRequest.objects.select_for_update()
            .filter(job=job, envelope_id=envelope_id)
            .first()
        )
        if request is None or not request.is_open:
            raise ReplyConflict(
                "This question is no longer open. Your dashboard shows what the "
                "update needs now."
            )
        if request.answered_at is not None:
            raise ReplyConflict(
                "This question was already answered. Watch the update for what "
                "happens next."
            )
        validate_reply(request.account_link, account_link)
        return _claim(request, job, by="cardholder")


def _claim(request: CredentialRequest, job: Job, *, by: str) -> Claim:
    """Claim an open request for one reply; the caller holds the job's lock."""
    # One conditional update decides who answers: a second reply to the same
    # envelope, even a concurrent one, finds it claimed and gets a conflict.
    claimed = CredentialRequest.objects.filter(
        pk=request.pk, closed_at__isnull=True, answered_at__isnull=True
    ).update(answered_at=timezone.now(), reply_state=ReplyState.SENDING, reply_error="")
    if claimed != 1:
        raise ReplyConflict(
            "This question was already answered. Watch the update for what "
            "happens next."
        )
    Job.objects.filter(pk=job.pk).update(
        version=F("version") + 1, updated_at=timezone.now()
    )
    # The claimed state is pushed once the answer has gone (_put_answer):
    # building the payload here would hold the answer back.
    return Claim(
        request_pk=request.pk,
        job_pk=job.pk,
        cardsavr_job_id=job.cardsavr_id,
        envelope_id=request.envelope_id,
        field_names=tuple(f["key_name"] for f in request.account_link),
        by=by,
    )


def _finish_reply(
    claim: Claim, reply_state: str, reply_error: str = "", *, push: bool = True
) -> None:
    """Record how CardSavr took the reply; a refused one is open again."""
    with transaction.atomic():
        job = _locked_job(claim.job_pk)
        request = CredentialRequest.objects.select_for_update().get(pk=claim.request_pk)
        request.reply_state = reply_state
        request.reply_error = reply_error[:300]
        if reply_state == ReplyState.REJECTED:
            request.answered_at = None
        request.save(update_fields=["reply_state", "reply_error", "answered_at"])
        if reply_state == ReplyState.SENT:
            JobEvent.objects.create(
                job=job,
                kind=JobEvent.Kind.PROMPT_ANSWERED,
                status=job.status,
                data={
                    "envelope_id": claim.envelope_id,
                    "fields": list(claim.field_names),
                    "by": claim.by,
                },
            )
        elif reply_state in (ReplyState.REJECTED, ReplyState.UNCERTAIN):
            JobEvent.objects.create(
                job=job,
                kind=JobEvent.Kind.UPSTREAM_ERROR,
                status=job.status,
                status_message=reply_error[:500],
                data={"envelope_id": claim.envelope_id, "reply_state": reply_state},
            )
        job.version += 1
        job.save(update_fields=["version", "updated_at"])
        if push:
            job.open_requests = list(
                job.credential_requests.filter(closed_at__isnull=True).order_by(
                    "-opened_at", "-pk"
                )
            )
            _push_payload(job.cardholder_id, payload_for(job))


def _apply_or_push(job_pk: int, remote: remote_types.Job, source: str) -> Job:
    """Mirror `remote`, and push the job even when that changed nothing: the
    caller wrote a change it left for this push."""
    job = jobs_with_state().get(pk=job_pk)
    if not apply_remote_job(job, remote, source=source):
        push_job(job)
    return job


def _push_by_pk(job_pk: int) -> Job:
    job = jobs_with_state().get(pk=job_pk)
    push_job(job)
    return job


def _apply_by_pk(job_pk: int, remote: remote_types.Job, source: str) -> Job:
    job = Job.objects.select_related("merchant_site").defer("merchant_site__logo")
    job = job.get(pk=job_pk)
    apply_remote_job(job, remote, source=source)
    return job


def _get_job(job_pk: int) -> Job:
    return (
        Job.objects.select_related("merchant_site", "cardholder")
        .defer("merchant_site__logo")
        .get(pk=job_pk)
    )


async def _reread(
    job_pk: int, cardsavr_job_id: int, *, source: str, push: bool = False
) -> Job:
    """Read the job from CardSavr at once and mirror it; on failure the poller
    catches up later. With `push` the job is pushed whatever the read shows."""
    try:
        remote = await get_client().get_job(cardsavr_job_id)
    except NotFoundError:
        job = await sync_to_async(_get_job)(job_pk)
        await sync_to_async(mark_job_vanished)(job, source=source)
        return job
    except CardSavrError as exc:
        logger.warning(
            "Re-reading job %s after %s failed: %s", job_pk, source, type(exc).__name__
        )
        if push:
            return await sync_to_async(_push_by_pk)(job_pk)
        return await sync_to_async(_get_job)(job_pk)
    if push:
        return await sync_to_async(_apply_or_push)(job_pk, remote, source)
    return await sync_to_async(_apply_by_pk)(job_pk, remote, source)


@sensitive_variables("account_link")
async def _put_answer(claim: Claim, account_link: dict[str, str]) -> None:
    try:
        await get_client().answer_credential_request(
            claim.cardsavr_job_id, claim.envelope_id, account_link
        )
    finally:
        # Whatever CardSavr said, the claim comes first on the cardholder's
        # pages (its version is the next one), then what became of it.
        try:
            await sync_to_async(_push_claimed)(claim.job_pk)
        except Exception:
            logger.warning("Push of job %s failed", claim.job_pk, exc_info=True)


@sensitive_variables("account_link")
async def forward_reply(claim: Claim, account_link: dict[str, str]) -> Job:
    """Send a claimed reply to CardSavr exactly once and record the result."""
    try:
        await _put_answer(claim, account_link)
    except (CardSavrValidationError, NotFoundError) as exc:
        logger.warning(
            "CardSavr refused the reply to job %s (%s)", claim.job_pk, exc.status
        )
        message = (
            "CardSavr did not accept this answer. Check it and send it again."
            if isinstance(exc, CardSavrValidationError)
            else "CardSavr no longer has this update; it cannot take answers."
        )
        await sync_to_async(_finish_reply)(claim, ReplyState.REJECTED, message)
        raise UpstreamRejected(message) from None
    except (RateLimitedError, AuthenticationError, PermissionDeniedError) as exc:
        # Refused before CardSavr looked at the answer: safe to send again.
        logger.warning(
            "CardSavr turned the reply to job %s away (%s)", claim.job_pk, exc.status
        )
        message = "CardSavr is busy and did not take your answer. Send it again."
        await sync_to_async(_finish_reply)(claim, ReplyState.REJECTED, message)
        raise UpstreamUnavailable(message) from None
    except BaseException as exc:
        # Timeouts, dropped connections, 5xx, garbage, cancellation: the
        # answer may have arrived, and sending it twice can lock the
        # cardholder out, so it is never resent.
        logger.warning(
            "Reply to job %s has an unknown fate (%s)",
            claim.job_pk,
            type(exc).__name__,
        )
        await sync_to_async(_finish_reply)(
            claim, ReplyState.UNCERTAIN, UNCERTAIN_REPLY_MESSAGE
        )
        if isinstance(exc, CardSavrError):
            raise UpstreamUnavailable(UNCERTAIN_REPLY_MESSAGE) from None
        raise
    # The re-read right after pushes this change along with what it shows.
    await sync_to_async(_finish_reply)(claim, ReplyState.SENT, push=False)
    logger.info("Reply to job %s sent (%s)", claim.job_pk, ",".join(claim.field_names))
    return await _reread(claim.job_pk, claim.cardsavr_job_id, source="reply", push=True)


def _push_claimed(job_pk: int) -> None:
    job = jobs_for_payload().get(pk=job_pk)
    _push_payload(job.cardholder_id, payload_for(job))


@sensitive_variables("account_link")
async def submit_reply(
    cardholder: Cardholder, job_id: int, envelope_id: str, account_link: dict[str, str]
) -> Job:
    claim = await sync_to_async(claim_reply)(
        cardholder, job_id, envelope_id, account_link
    )
    return await forward_reply(claim, account_link)


def _claim_push_approval(request_pk: int) -> Claim | None:
    job_pk = (
        CredentialRequest.objects.filter(pk=request_pk)
        .values_list("job_id", flat=True)
        .first()
    )
    if job_pk is None:
        return None
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_pk)
        request = (
            CredentialRequest.objects.select_for_update().filter(pk=request_pk).first()
        )
        if (
            request is None
            or not request.is_open
            or request.answered_at is not None
            or job.is_terminated
        ):
            return None
        return _claim(request, job, by="portal")


async def acknowledge_push_approval(request_pk: int) -> bool:
    """Answer a push-approval request with `ack` through the same claim-once
    path as a cardholder's reply; True if CardSavr took it."""
    claim = await sync_to_async(_claim_push_approval)(request_pk)
    if claim is None:
        return False
    names = claim.field_names or (PUSH_APPROVAL_TYPE,)
    try:
        await forward_reply(claim, dict.fromkeys(names, PUSH_APPROVAL_ANSWER))
    except ServiceError:
        return False
    return True


# -- jobs -----------------------------------------------------------------


def _latest_card(cardholder: Cardholder) -> Card | None:
    return Card.objects.filter(cardholder=cardholder).order_by("-created_at").first()


@sensitive_variables("requests", "account_link", "link")
def _validate_job_requests(
    requests: list[tuple[MerchantSite, dict | None]],
) -> None:
    if not requests:
        raise InvalidInput("Choose at least one merchant.", field="merchant_sites")
    seen: set[int] = set()
    for site, account_link in requests:
        if site.pk in seen:
            raise InvalidInput(
                f"{site.name} is chosen twice; choose it once.", field="merchant_sites"
            )
        seen.add(site.pk)
        if account_link is not None:
            validate_reply(initial_fields(site), account_link)


def _record_created_jobs(
    cardholder: Cardholder,
    card: Card | None,
    created: list[tuple[MerchantSite, remote_types.Job]],
    read_at: datetime,
) -> list[Job]:
    jobs = []
    with transaction.atomic():
        for site, remote in created:
            existing = jobs_with_state().filter(cardsavr_id=remote.id).first()
            if existing is not None:
                apply_remote_job(existing, remote, source="create", read_at=read_at)
                jobs.append(existing)
                continue
            job = Job(
                cardsavr_id=remote.id,
                cardholder=cardholder,
                card=card,
                merchant_site=site,
                status=remote.status[:64] or "REQUESTED",
                last_synced_at=read_at,
            )
            for name, value in _remote_fields(job, remote, read_at).items():
                setattr(job, name, value)
            requests = [
                request
                for request in remote.credential_requests
                if not remote.termination_type
                and ENVELOPE_ID_RE.match(request.envelope_id)
            ]
            job.outcome = derive_outcome(
                job.status, job.termination_type, bool(requests)
            )
            job.save()
            JobEvent.objects.create(
                job=job,
                kind=JobEvent.Kind.CREATED,
                status=job.status,
                status_message=job.status_message,
                percent_complete=job.percent_complete,
                data={"cardsavr_id": remote.id, "version": job.version},
            )
            job.open_requests = [
                _open_request(job, request, read_at, "create") for request in requests
            ][::-1]
            _push_payload(cardholder.pk, payload_for(job))
            jobs.append(job)
    return jobs


async def _find_created_jobs(
    cardholder: Cardholder, sites: list[MerchantSite]
) -> list[tuple[MerchantSite, remote_types.Job]]:
    """After a POST whose answer was lost, find the jobs it may have created."""
    by_cardsavr_id = {site.cardsavr_id: site for site in sites}
    known = await sync_to_async(
        lambda: set(
            Job.objects.filter(cardholder=cardholder).values_list(
                "cardsavr_id", flat=True
            )
        )
    )()
    page = await get_client().list_jobs(
        cardholder_ids=[cardholder.cardsavr_id],
        hydrate=("credential_requests", "account"),
        page_length=100,
    )
    return [
        (by_cardsavr_id[remote.merchant_site_id], remote)
        for remote in page.items
        if remote.id not in known
        and remote.merchant_site_id in by_cardsavr_id
        and not remote.termination_type
    ]


@sensitive_variables("requests", "specs")
async def start_jobs(
    cardholder: Cardholder, requests: list[tuple[MerchantSite, dict | None]]
) -> list[Job]:
    """One job per merchant site, created in one call to CardSavr."""
    _validate_job_requests(requests)
    card = await sync_to_async(_latest_card)(cardholder)
    if card is None:
        raise InvalidInput("Add a card before updating merchants.", field="card")
    if cardholder.cardsavr_id is None:
        raise InvalidInput("This account is not set up at CardSavr yet.", field=None)
    specs = [
        remote_types.JobSpec(
            cardholder_id=cardholder.cardsavr_id,
            card_id=card.cardsavr_id,
            merchant_site_id=site.cardsavr_id,
            account_link=dict(account_link) if account_link else None,
        )
        for site, account_link in requests
    ]
    sites = [site for site, _ in requests]
    read_at = timezone.now()
    try:
        remote_jobs = await get_client().create_jobs(specs)
    except CardSavrValidationError as exc:
        created = list(getattr(exc, "created_jobs", []))
        logger.warning(
            "CardSavr refused %s of %s jobs for cardholder %s: %s",
            len(specs) - len(created),
            len(specs),
            cardholder.pk,
            exc,
        )
        if created:
            await sync_to_async(_record_created_jobs)(
                cardholder, card, _match_sites(sites, created), read_at
            )
        raise UpstreamRejected(
            "CardSavr did not start every update. Check the details you entered "
            "and try the missing merchants again.",
            field=exc.property,
        ) from None
    except CardSavrError as exc:
        logger.warning(
            "Starting jobs for cardholder %s failed: %s",
            cardholder.pk,
            type(exc).__name__,
        )
        try:
            found = await _find_created_jobs(cardholder, sites)
        except CardSavrError:
            found = []
        if found:
            await sync_to_async(_record_created_jobs)(cardholder, card, found, read_at)
        raise UpstreamUnavailable(
            "CardSavr did not answer in time. Any update it started is on your "
            "dashboard; start the others again in a moment."
        ) from None
    jobs = await sync_to_async(_record_created_jobs)(
        cardholder, card, _match_sites(sites, remote_jobs), read_at
    )
    logger.info("Started %s jobs for cardholder %s", len(jobs), cardholder.pk)
    return jobs


def _match_sites(
    sites: list[MerchantSite], remote_jobs: list[remote_types.Job]
) -> list[tuple[MerchantSite, remote_types.Job]]:
    """Pair created jobs with sites: by the site CardSavr names, else by order
    (a plural POST answers in the order it was asked)."""
    by_cardsavr_id = {site.cardsavr_id: site for site in sites}
    pairs = []
    for index, remote in enumerate(remote_jobs):
        site = by_cardsavr_id.get(remote.merchant_site_id)
        if site is None and index < len(sites):
            site = sites[index]
        if site is not None:
            pairs.append((site, remote))
    return pairs


def _job_for(job_id: int, cardholder: Cardholder | None) -> Job:
    jobs = Job.objects.select_related("merchant_site").defer("merchant_site__logo")
    if cardholder is not None:
        jobs = jobs.filter(cardholder=cardholder)
    job = jobs.filter(pk=job_id).first()
    if job is None:
        raise JobNotFound("This update does not exist.")
    return job


def _record_cancel_requested(job_pk: int, actor: str) -> None:
    JobEvent.objects.create(
        job_id=job_pk, kind=JobEvent.Kind.CANCEL_REQUESTED, data={"actor": actor}
    )


async def cancel_job(
    job_id: int, *, cardholder: Cardholder | None = None, actor: str = "cardholder"
) -> Job:
    job = await sync_to_async(_job_for)(job_id, cardholder)
    if job.is_terminated:
        raise ReplyConflict("This update has already finished.")
    try:
        answered = await get_client().cancel_job(job.cardsavr_id)
    except NotFoundError:
        await sync_to_async(mark_job_vanished)(job, source="cancel")
        raise UpstreamRejected(VANISHED_MESSAGE) from None
    except CardSavrValidationError:
        raise UpstreamRejected(
            "CardSavr could not cancel this update; it may be finishing. Watch it "
            "on your dashboard."
        ) from None
    except CardSavrError as exc:
        logger.warning("Cancelling job %s failed: %s", job.pk, type(exc).__name__)
        raise UpstreamUnavailable(
            "CardSavr did not answer, so the update may not be cancelled. Try again "
            "in a moment."
        ) from None
    await sync_to_async(_record_cancel_requested)(job.pk, actor)
    logger.info("Cancel requested for job %s by %s", job.pk, actor)
    try:
        remote = await get_client().get_job(job.cardsavr_id)
    except CardSavrError:
        remote = answered
    return await sync_to_async(_apply_by_pk)(job.pk, remote, "cancel")


async def refresh_job(job_id: int) -> Job:
    job = await sync_to_async(_job_for)(job_id, None)
    return await _reread(job.pk, job.cardsavr_id, source="refresh")


# -- cards and cardholders ------------------------------------------------


def luhn_ok(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def card_brand(pan: str) -> str:
    if pan.startswith("4"):
        return "Visa"
    if pan[:2] in {"34", "37"}:
        return "American Express"
    if 51 <= int(pan[:2]) <= 55 or 2221 <= int(pan[:4]) <= 2720:
        return "Mastercard"
    if pan.startswith(("6011", "65")) or 644 <= int(pan[:3]) <= 649:
        return "Discover"
    return ""


ADDRESS_FIELDS = {
    "address1": ("street address", True),
    "address2": ("apartment or suite", False),
    "city": ("city", True),
    "subnational": ("state", True),
    "postal_code": ("ZIP or postal code", True),
    "country": ("country", False),
}


@sensitive_variables("pan", "cvv", "digits")
def validate_card(
    *,
    pan: Any,
    cvv: Any,
    expiration_month: Any,
    expiration_year: Any,
    name_on_card: Any,
    address: Any,
    today: date | None = None,
) -> tuple[str, str, int, int, str, dict[str, str]]:
    """Check a card; return (pan, cvv, month, four-digit year, name, address)."""
    digits = "".join(ch for ch in str(pan or "") if ch not in " -")
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        raise InvalidInput("Enter the card number: 12 to 19 digits.", field="pan")
    if not luhn_ok(digits):
        raise InvalidInput(
            "This card number is not valid; check it for a typo.", field="pan"
        )
    cvv = str(cvv or "").strip()
    if not (cvv.isdigit() and cvv.isascii() and len(cvv) in (3, 4)):
        raise InvalidInput(
            "Enter the security code: 3 or 4 digits on the card.", field="cvv"
        )
    try:
        month = int(str(expiration_month).strip())
    except ValueError:
        month = 0
    if not 1 <= month <= 12:
        raise InvalidInput(
            "Enter the expiry month as a number from 1 to 12.", field="expiration_month"
        )
    try:
        year = int(str(expiration_year).strip())
    except ValueError:
        year = -1
    if 0 <= year < 100:
        year += 2000
    if not 2000 <= year <= 2099:
        raise InvalidInput("Enter the expiry year, e.g. 2031.", field="expiration_year")
    today = today or timezone.now().date()
    if (year, month) < (today.year, today.month):
        raise InvalidInput(
            "This card has expired; use a card that is still valid.",
            field="expiration_year",
        )
    name = str(name_on_card or "").strip()
    if not name:
        raise InvalidInput("Enter the name on the card.", field="name_on_card")
    if len(name) > 100 or _invalid_characters(name):
        raise InvalidInput(
            "Enter the name as printed on the card (100 characters at most).",
            field="name_on_card",
        )
    if not isinstance(address, dict):
        raise InvalidInput("Enter the billing address.", field="address")
    cleaned: dict[str, str] = {}
    for key, (label, required) in ADDRESS_FIELDS.items():
        value = address.get(key) or ""
        if not isinstance(value, str):
            raise InvalidInput(f"Enter the {label} as text.", field=key)
        value = value.strip()
        if required and not value:
            raise InvalidInput(f"Enter the {label}.", field=key)
        if len(value) > 100 or _invalid_characters(value):
            raise InvalidInput(
                f"Enter the {label} in plain text (100 characters at most).",
                field=key,
            )
        if value:
            cleaned[key] = value
    return digits, cvv, month, year, name, cleaned


def _record_card(
    cardholder: Cardholder, answer: dict, last4: str, brand: str, month: int, year: int
) -> Card:
    card = Card.objects.create(
        cardholder=cardholder,
        cardsavr_id=int(answer["id"]),
        last4=str(answer.get("last_4") or last4)[-4:],
        brand=brand,
        expiration_month=month,
        expiration_year=year,
    )
    logger.info("Card %s added for cardholder %s", card.pk, cardholder.pk)
    return card


@sensitive_variables("pan", "cvv", "digits", "code")
async def add_card(
    cardholder: Cardholder,
    *,
    pan: str,
    cvv: str,
    expiration_month: str | int,
    expiration_year: str | int,
    name_on_card: str,
    address: dict,
) -> Card:
    digits, code, month, year, name, cleaned = validate_card(
        pan=pan,
        cvv=cvv,
        expiration_month=expiration_month,
        expiration_year=expiration_year,
        name_on_card=name_on_card,
        address=address,
    )
    if cardholder.cardsavr_id is None:
        raise InvalidInput("This account is not set up at CardSavr yet.", field=None)
    try:
        answer = await get_client().create_card(
            cardholder_id=cardholder.cardsavr_id,
            pan=digits,
            cvv=code,
            expiration_month=f"{month:02d}",
            expiration_year=f"{year % 100:02d}",
            name_on_card=name,
            address=cleaned,
        )
    except CardSavrValidationError as exc:
        logger.warning(
            "CardSavr refused a card for cardholder %s (property %s)",
            cardholder.pk,
            exc.property,
        )
        field_name = exc.property if exc.property else None
        raise InvalidInput(
            "CardSavr did not accept this card. Check the details and try again.",
            field=field_name,
        ) from None
    except CardSavrError as exc:
        logger.warning(
            "Adding a card for cardholder %s failed: %s",
            cardholder.pk,
            type(exc).__name__,
        )
        raise UpstreamUnavailable(
            "CardSavr did not answer, so the card may not be saved. Check your "
            "wallet in a moment before adding it again."
        ) from None
    return await sync_to_async(_record_card)(
        cardholder, answer, digits[-4:], card_brand(digits), month, year
    )


@sensitive_variables("password")
def _validate_new_user(username: str, password: str, email: str) -> None:
    user_model = get_user_model()
    username_field = user_model._meta.get_field(user_model.USERNAME_FIELD)
    try:
        username_field.clean(username, None)
    except DjangoValidationError as exc:
        raise InvalidInput(" ".join(exc.messages), field="username") from None
    if user_model._default_manager.filter(
        **{f"{user_model.USERNAME_FIELD}__iexact": username}
    ).exists():
        raise InvalidInput("This username is taken; choose another.", field="username")
    if email:
        try:
            validate_email(email)
        except DjangoValidationError:
            raise InvalidInput("Enter a valid email address.", field="email") from None
    try:
        validate_password(password, user_model(**{user_model.USERNAME_FIELD: username}))
    except DjangoValidationError as exc:
        raise InvalidInput(" ".join(exc.messages), field="password") from None


@sensitive_variables("password")
def _record_cardholder(
    username: str, password: str, email: str, cuid: str, cardsavr_id: int
) -> Cardholder:
    with transaction.atomic():
        user = get_user_model()._default_manager.create_user(
            username=username, password=password, email=email
        )
        cardholder = Cardholder.objects.create(
            user=user, cuid=cuid, cardsavr_id=cardsavr_id
        )
    logger.info("Cardholder %s created (CardSavr %s)", cardholder.pk, cardsavr_id)
    return cardholder


@sensitive_variables("password")
async def create_cardholder(
    username: str, password: str, *, email: str = ""
) -> Cardholder:
    await sync_to_async(_validate_new_user)(username, password, email)
    cuid = secrets.token_hex(10)
    try:
        answer = await get_client().create_cardholder(
            cuid=cuid,
            email=email,
            webhook_url=settings.CARDSAVR_CARDHOLDER_WEBHOOK_URL or None,
        )
    except CardSavrValidationError as exc:
        logger.warning("CardSavr refused a new cardholder (property %s)", exc.property)
        raise UpstreamRejected(
            "CardSavr did not accept the new account. Check the details and try again.",
            field=exc.property,
        ) from None
    except CardSavrError as exc:
        logger.warning("Creating a cardholder failed: %s", type(exc).__name__)
        raise UpstreamUnavailable(
            "CardSavr did not answer, so the account was not created. Try again in "
            "a moment."
        ) from None
    return await sync_to_async(_record_cardholder)(
        username, password, email, cuid, int(answer["id"])
    )


# -- merchant sites -------------------------------------------------------


def _upsert_merchant_sites(sites: list[remote_types.MerchantSite]) -> list[int]:
    """Store the sites; return the pks of those whose logo must be fetched."""
    now = timezone.now()
    existing = {
        site.cardsavr_id: site
        for site in MerchantSite.objects.defer("logo").filter(
            cardsavr_id__in=[site.id for site in sites]
        )
    }
    need_logo = []
    with transaction.atomic():
        for remote in sites:
            values = {
                "name": remote.name[:200] or remote.host[:200] or str(remote.id),
                "host": remote.host[:255],
                "tags": list(remote.tags),
                "account_link": [
                    {
                        "key_name": f.key_name,
                        "label": f.label,
                        "type": f.type,
                        "secret": f.secret,
                    }
                    for f in remote.account_link
                ],
                "synced_at": now,
            }
            site = existing.get(remote.id)
            logo_url = remote.logo_url[:500]
            if site is None:
                site = MerchantSite.objects.create(
                    cardsavr_id=remote.id, logo_url=logo_url, **values
                )
                if logo_url:
                    need_logo.append(site.pk)
                continue
            logo_changed = site.logo_url != logo_url
            for name, value in values.items():
                setattr(site, name, value)
            update = [*values]
            if logo_changed or (logo_url and not site.logo_content_type):
                site.logo_url = logo_url
                update.append("logo_url")
                if logo_url:
                    need_logo.append(site.pk)
            site.save(update_fields=update)
    return need_logo


def _store_logo(site_pk: int, content: bytes, content_type: str) -> None:
    MerchantSite.objects.filter(pk=site_pk).update(
        logo=content, logo_content_type=content_type[:64]
    )


async def sync_merchant_sites() -> int:
    """Mirror every merchant site and fetch logos not fetched yet; return how
    many sites CardSavr listed."""
    client = get_client()
    page_length = 100
    sites: list[remote_types.MerchantSite] = []
    page_number = 1
    while True:
        page = await client.list_merchant_sites(
            page=page_number, page_length=page_length
        )
        sites.extend(page.items)
        if len(page.items) < page_length or (
            page.total_results is not None and len(sites) >= page.total_results
        ):
            break
        page_number += 1
    need_logo = await sync_to_async(_upsert_merchant_sites)(sites)
    urls = dict(
        await sync_to_async(
            lambda: list(
                MerchantSite.objects.filter(pk__in=need_logo).values_list(
                    "pk", "logo_url"
                )
            )
        )()
    )
    limiter = asyncio.Semaphore(LOGO_FETCHES_AT_ONCE)

    async def fetch_logo(site_pk: int, url: str) -> bool:
        async with limiter:
            try:
                content, content_type = await client.fetch_bytes(url)
            except CardSavrError as exc:
                logger.warning(
                    "Logo of merchant site %s not fetched: %s",
                    site_pk,
                    type(exc).__name__,
                )
                return False
        if not content_type.startswith("image/") or not content:
            logger.warning("Logo of merchant site %s is not an image", site_pk)
            return False
        await sync_to_async(_store_logo)(site_pk, content, content_type)
        return True

    stored = await asyncio.gather(*(fetch_logo(pk, url) for pk, url in urls.items()))
    logger.info(
        "Synced %s merchant sites, %s of %s new logos stored",
        len(sites),
        sum(stored),
        len(urls),
    )
    return len(sites)
