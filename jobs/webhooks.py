"""CardSavr's signed ``session_complete`` webhook.

CardSavr signs each delivery with the app key over the full webhook URL, the
authorization header, the nonce and the raw body. A failed delivery is retried
(10, 20 and 40 seconds later) with a new nonce and signature but the same body,
so deliveries are recorded once per body hash, while an identical nonce and
signature seen again is a replay and is refused.
"""

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.utils.dateparse import parse_datetime
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from cardsavr import crypto
from jobs import services
from jobs.models import WebhookNotification

logger = logging.getLogger(__name__)
security_logger = logging.getLogger("jobs.webhooks.security")

MAX_BODY_BYTES = 256 * 1024
# CardSavr's nonce is a millisecond epoch; one more than five minutes away
# from this server's clock, either way, is refused.
NONCE_WINDOW_MS = 5 * 60 * 1000
_REPLAY_KEY = "webhooks:cardsavr:seen:%s"

SIGNATURE_HEADER = "x-cardsavr-signature"
AUTHORIZATION_HEADER = "x-cardsavr-authorization"
NONCE_HEADER = "x-cardsavr-nonce"


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def signing_keys() -> list[str]:
    """The current app key first, then keys still valid during a rotation."""
    keys = [settings.CARDSAVR_APP_KEY, *settings.CARDSAVR_PREVIOUS_APP_KEYS]
    return [key for key in keys if key]


def webhook_signature_matches(
    keys: list[str],
    signature: str,
    full_url: str,
    authorization: str,
    nonce: str,
    body: bytes,
) -> bool:
    for key in keys:
        try:
            expected = crypto.sign_webhook(key, full_url, authorization, nonce, body)
        except ValueError:
            logger.error("A configured CardSavr app key is not valid base64")
            continue
        if hmac.compare_digest(expected, signature):
            return True
    return False


def _parse_jobs(payload: Any) -> list[dict[str, Any]]:
    """Check the payload's shape; raise Refused(400) naming what is wrong."""
    if not isinstance(payload, dict):
        raise Refused(HTTPStatus.BAD_REQUEST, "body is not a JSON object")
    entries = payload.get("jobs")
    if not isinstance(entries, list):
        raise Refused(HTTPStatus.BAD_REQUEST, "'jobs' is missing or not a list")
    jobs = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise Refused(HTTPStatus.BAD_REQUEST, "a 'jobs' entry is not an object")
        job_id = entry.get("job_id")
        # Older CardSavr payloads sometimes send ids as strings.
        if isinstance(job_id, str) and job_id.isdigit():
            job_id = int(job_id)
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            raise Refused(HTTPStatus.BAD_REQUEST, "a 'jobs' entry has no job_id")
        completed_on = entry.get("completed_on")
        completed: datetime | None = None
        if isinstance(completed_on, str):
            try:
                completed = parse_datetime(completed_on)
            except ValueError:
                completed = None
        jobs.append(
            {
                "job_id": job_id,
                # Statuses change often at CardSavr: kept as they come.
                "status": str(entry.get("job_status") or ""),
                "status_message": str(entry.get("job_status_message") or ""),
                "termination_type": str(entry.get("termination_type") or ""),
                "completed_on": completed,
            }
        )
    return jobs


def record_notification(
    *, nonce: str, body_sha256: str, payload: dict[str, Any], jobs: list[dict]
) -> WebhookNotification | None:
    """Store the delivery and apply its jobs; None when this body was seen."""
    if WebhookNotification.objects.filter(body_sha256=body_sha256).exists():
        return None
    known: list[int] = []
    unknown: list[int] = []
    with transaction.atomic():
        try:
            with transaction.atomic():
                notification = WebhookNotification.objects.create(
                    nonce=nonce,
                    body_sha256=body_sha256,
                    event=str(payload.get("event") or "session_complete")[:64],
                    cuid=str(payload.get("cuid") or "")[:64],
                    job_ids=[entry["job_id"] for entry in jobs],
                )
        except IntegrityError:
            # A retry of the same delivery raced this one and was stored first.
            return None
        for entry in jobs:
            job = services.apply_webhook_job(
                entry["job_id"],
                status=entry["status"],
                status_message=entry["status_message"],
                termination_type=entry["termination_type"],
                completed_on=entry["completed_on"],
            )
            (known if job is not None else unknown).append(entry["job_id"])
        if unknown:
            notification.unknown_job_ids = unknown
            notification.save(update_fields=["unknown_job_ids"])
    for job_id in unknown:
        logger.warning("Webhook named CardSavr job %s, unknown to the portal", job_id)
    logger.info(
        "Webhook %s recorded: %s known jobs, %s unknown",
        notification.pk,
        len(known),
        len(unknown),
    )
    return notification


@method_decorator(csrf_exempt, name="dispatch")
class CardSavrWebhookView(View):
    """Receive ``session_complete`` notifications.

    CSRF protection does not apply: CardSavr is not a browser holding a
    session, and every request is authenticated by its HMAC signature, which
    only a holder of the app key can produce.
    """

    http_method_names = ["post"]
    # Seconds since the epoch; tests pass a fixed clock to check the window.
    clock: Callable[[], float] = staticmethod(time.time)

    def post(self, request: HttpRequest) -> JsonResponse:
        try:
            body = self._read_body(request)
            nonce = self._authenticate(request, body)
            try:
                payload = json.loads(body)
            except (UnicodeDecodeError, ValueError) as exc:
                raise Refused(HTTPStatus.BAD_REQUEST, "body is not valid JSON") from exc
            jobs = _parse_jobs(payload)
        except Refused as refusal:
            if refusal.status == HTTPStatus.UNAUTHORIZED:
                security_logger.warning(
                    "Webhook refused: %s from %s",
                    refusal.reason,
                    request.META.get("REMOTE_ADDR", "?"),
                )
            else:
                logger.warning("Webhook rejected: %s", refusal.reason)
            return JsonResponse({"error": refusal.reason}, status=refusal.status)

        body_sha256 = hashlib.sha256(body).hexdigest()
        notification = record_notification(
            nonce=nonce, body_sha256=body_sha256, payload=payload, jobs=jobs
        )
        if notification is None:
            logger.info("Webhook retry of a recorded delivery ignored, nonce %s", nonce)
            return JsonResponse({"status": "duplicate"})
        return JsonResponse(
            {
                "status": "recorded",
                "jobs": len(jobs),
                "unknown_job_ids": notification.unknown_job_ids,
            }
        )

    def _read_body(self, request: HttpRequest) -> bytes:
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > MAX_BODY_BYTES:
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
        # Read the stream directly: request.body is capped by
        # DATA_UPLOAD_MAX_MEMORY_SIZE, which is sized for forms, not webhooks.
        body = request.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
        return body

    def _authenticate(self, request: HttpRequest, body: bytes) -> str:
        """Return the nonce of a genuine, fresh, first delivery."""
        signature = request.headers.get(SIGNATURE_HEADER, "")
        authorization = request.headers.get(AUTHORIZATION_HEADER, "")
        nonce = request.headers.get(NONCE_HEADER, "")
        if not (signature and authorization and nonce):
            raise Refused(HTTPStatus.UNAUTHORIZED, "missing signature headers")
        app_name = crypto.app_name_from_authorization(authorization)
        if app_name != settings.CARDSAVR_APP_NAME:
            raise Refused(HTTPStatus.UNAUTHORIZED, "authorization names another app")
        # Behind a proxy the URL CardSavr signed is not the one Django sees.
        full_url = settings.CARDSAVR_WEBHOOK_URL or request.build_absolute_uri()
        if not webhook_signature_matches(
            signing_keys(), signature, full_url, authorization, nonce, body
        ):
            raise Refused(HTTPStatus.UNAUTHORIZED, "bad signature")
        if not nonce.isdigit() or len(nonce) > 20:
            raise Refused(HTTPStatus.UNAUTHORIZED, "nonce is not a millisecond time")
        now_ms = int(self.clock() * 1000)
        if abs(now_ms - int(nonce)) > NONCE_WINDOW_MS:
            raise Refused(HTTPStatus.UNAUTHORIZED, "nonce outside the time window")
        # Only checked once the signature holds, so nobody without the key can
        # fill the cache. The table covers a cache that was emptied: the same
        # nonce with the same body means the same signature.
        seen_key = (
            _REPLAY_KEY % hashlib.sha256(f"{nonce}:{signature}".encode()).hexdigest()
        )
        first_time = cache.add(seen_key, 1, timeout=2 * NONCE_WINDOW_MS // 1000)
        if (
            not first_time
            or WebhookNotification.objects.filter(
                nonce=nonce, body_sha256=hashlib.sha256(body).hexdigest()
            ).exists()
        ):
            raise Refused(HTTPStatus.UNAUTHORIZED, "replayed nonce")
        return nonce


cardsavr_webhook = CardSavrWebhookView.as_view()
