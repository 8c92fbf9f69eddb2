"""The small JSON API: thin async views over jobs.services and jobs.selectors.

Session-authenticated and CSRF-checked like every page (send the token in
X-CSRFToken). Errors are `{"error": message, "field": name or null}`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from jobs import selectors, services
from jobs.models import Cardholder, Job, JobEvent, MerchantSite
from jobs.ratelimit import rate_limit_replies
from jobs.serializers import account_link_fields, logo_url

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
MAX_SITES_PER_REQUEST = 25
MAX_QUERY_LENGTH = 100
MAX_SITES_LISTED = 100

View = Callable[..., Awaitable[JsonResponse]]


def error_response(
    message: str, *, field: str | None = None, status: int = 400
) -> JsonResponse:
    return JsonResponse({"error": message, "field": field}, status=status)


class _BodyTooLarge(Exception):
    pass


@sensitive_variables("data")
def _json_object(request: HttpRequest) -> dict[str, Any]:
    try:
        body = request.body
    except RequestDataTooBig:
        raise _BodyTooLarge from None
    if len(body) > MAX_BODY_BYTES:
        raise _BodyTooLarge
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise services.InvalidInput(
            "Send the request body as a JSON object.", field=None
        ) from None
    if not isinstance(data, dict):
        raise services.InvalidInput(
            "Send the request body as a JSON object.", field=None
        )
    return data


def api_view(*methods: str) -> Callable[[View], View]:
    """Allow `methods`, answer anonymous callers with 401 and turn service
    errors into JSON; the view gets the caller's cardholder."""

    def decorator(view: View) -> View:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any):
            if request.method not in methods:
                response = error_response(
                    f"Use {' or '.join(methods)} here.", status=405
                )
                response["Allow"] = ", ".join(methods)
                return response
            user = await request.auser()
            if not user.is_authenticated:
                return error_response("Sign in to continue.", status=401)
            cardholder = await sync_to_async(selectors.cardholder_for_user)(user)
            if cardholder is None:
                return error_response(
                    "This login has no card wallet; sign in as a cardholder.",
                    status=403,
                )
            try:
                return await view(request, cardholder, *args, **kwargs)
            except _BodyTooLarge:
                return error_response(
                    "The request is too large.", field=None, status=413
                )
            except services.ServiceError as exc:
                return error_response(exc.message, field=exc.field, status=exc.status)

        return wrapper

    return decorator


def _site_json(site: MerchantSite) -> dict[str, Any]:
    return {
        "id": site.pk,
        "name": site.name,
        "host": site.host,
        "logo": logo_url(site),
        "tags": list(site.tags or []),
        "account_link": account_link_fields(selectors.initial_fields(site)),
    }


def _merchant_sites_json(q: str) -> list[dict[str, Any]]:
    return [_site_json(site) for site in selectors.merchant_sites(q)[:MAX_SITES_LISTED]]


@api_view("GET")
async def merchant_sites(request: HttpRequest, cardholder: Cardholder) -> JsonResponse:
    q = request.GET.get("q", "")
    if len(q) > MAX_QUERY_LENGTH:
        raise services.InvalidInput(
            f"Search with at most {MAX_QUERY_LENGTH} characters.", field="q"
        )
    sites = await sync_to_async(_merchant_sites_json)(q)
    return JsonResponse(sites, safe=False)


def _jobs_json(cardholder: Cardholder) -> dict[str, Any]:
    return {
        "jobs": selectors.job_payloads_for_cardholder(cardholder),
        "upstream": selectors.upstream_state(),
    }


@sensitive_variables("data", "entries", "entry", "account_link", "requests")
def _job_requests(
    data: dict[str, Any],
) -> list[tuple[MerchantSite, dict[str, str] | None]]:
    entries = data.get("jobs")
    if not isinstance(entries, list) or not entries:
        raise services.InvalidInput(
            "List the merchants to update in jobs.", field="jobs"
        )
    if len(entries) > MAX_SITES_PER_REQUEST:
        raise services.InvalidInput(
            f"Choose at most {MAX_SITES_PER_REQUEST} merchants at a time.",
            field="jobs",
        )
    ids: list[int] = []
    links: list[dict[str, str] | None] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise services.InvalidInput(
                "Each job names a merchant_site_id.", field="jobs"
            )
        site_id = entry.get("merchant_site_id")
        if isinstance(site_id, bool) or not isinstance(site_id, int):
            raise services.InvalidInput(
                "merchant_site_id must be a number.", field="merchant_site_id"
            )
        account_link = entry.get("account_link")
        if account_link is not None and not isinstance(account_link, dict):
            raise services.InvalidInput(
                "account_link must be an object of fields.", field="account_link"
            )
        ids.append(site_id)
        links.append(account_link or None)
    sites = selectors.merchant_sites().in_bulk(ids)
    requests = []
    for site_id, account_link in zip(ids, links, strict=True):
        site = sites.get(site_id)
        if site is None:
            raise services.InvalidInput(
                "One of the merchants does not exist; search again.",
                field="merchant_site_id",
            )
        requests.append((site, account_link))
    return requests


def _created_json(jobs: list[Job]) -> dict[str, Any]:
    return {"jobs": [selectors.job_payload_by_id(job.pk) for job in jobs]}


@sensitive_post_parameters()
@sensitive_variables("data", "requests")
@api_view("GET", "POST")
async def jobs(request: HttpRequest, cardholder: Cardholder) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse(await sync_to_async(_jobs_json)(cardholder))
    data = _json_object(request)
    requests = await sync_to_async(_job_requests)(data)
    created = await services.start_jobs(cardholder, requests)
    return JsonResponse(await sync_to_async(_created_json)(created), status=201)


def _event_json(event: JobEvent) -> dict[str, Any]:
    return {
        "at": event.created_at.isoformat(),
        "kind": event.kind,
        "label": event.get_kind_display(),
        "status": event.status,
        "status_message": event.status_message,
        "percent_complete": event.percent_complete,
    }


def _job_json(cardholder: Cardholder, job_id: int) -> dict[str, Any]:
    try:
        job = selectors.job_for_cardholder(cardholder, job_id)
    except Job.DoesNotExist:
        raise services.JobNotFound("This update does not exist.") from None
    return {
        "job": selectors.payload_for(job),
        "timeline": [_event_json(event) for event in selectors.job_timeline(job)],
    }


@api_view("GET")
async def job_detail(
    request: HttpRequest, cardholder: Cardholder, job_id: int
) -> JsonResponse:
    return JsonResponse(await sync_to_async(_job_json)(cardholder, job_id))


def _payload_json(job: Job) -> dict[str, Any]:
    return {"job": selectors.job_payload_by_id(job.pk)}


@sensitive_post_parameters()
@sensitive_variables("data", "account_link")
@rate_limit_replies
@api_view("POST")
async def job_reply(
    request: HttpRequest, cardholder: Cardholder, job_id: int
) -> JsonResponse:
    data = _json_object(request)
    envelope_id, account_link = data.get("envelope_id"), data.get("account_link")
    services.check_reply_shape(envelope_id, account_link)
    job = await services.submit_reply(cardholder, job_id, envelope_id, account_link)
    return JsonResponse(await sync_to_async(_payload_json)(job), status=202)


@api_view("POST")
async def job_cancel(
    request: HttpRequest, cardholder: Cardholder, job_id: int
) -> JsonResponse:
    job = await services.cancel_job(job_id, cardholder=cardholder)
    return JsonResponse(await sync_to_async(_payload_json)(job), status=202)
