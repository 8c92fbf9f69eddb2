"""The cardholder's pages: thin views over jobs.services and jobs.selectors."""

import hashlib
import logging

from asgiref.sync import async_to_sync
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST

from jobs import selectors, services
from jobs.forms import CardForm, ReplyForm, field_kind, valid_account_link
from jobs.models import Card, Job, MerchantSite, Outcome
from jobs.ratelimit import rate_limit_replies

logger = logging.getLogger(__name__)

MAX_SITES_PER_START = 25
# A warning this long before a prompt's deadline, announced to screen readers.
WARNING_SECONDS = 60

OUTCOME_LABELS = {
    Outcome.IN_PROGRESS: "In progress",
    Outcome.NEEDS_INPUT: "Waiting for your answer",
    Outcome.SUCCESS: "Done: your card is saved here",
    Outcome.FAILED: "Failed",
    Outcome.CANCELLED: "Cancelled, did not start",
}

# Prompt wording by credential-request type; "{merchant}" is the site's name.
PROMPT_TEXT = {
    "credentials": {
        "title": "Sign in to {merchant}",
        "hint": (
            "{merchant} allows one wrong sign-in: a second one ends this job. "
            "Use the details you sign in with on {merchant}'s own website."
        ),
        "submit": "Send sign-in",
    },
    "tfa": {
        "title": "Enter the code {merchant} sent you",
        "hint": (
            "{merchant} allows one wrong code. Check your newest text message "
            "or email before you send it."
        ),
        "submit": "Send code",
    },
    "push": {
        "title": "Approve the sign-in in your {merchant} app",
        "hint": (
            "Open the {merchant} app on your phone and approve the sign-in "
            "before the time runs out. There is nothing to type here."
        ),
        "submit": "",
    },
    "security": {
        "title": "Answer {merchant}'s security questions",
        "hint": "Answer exactly as you set them up at {merchant}; capitals count.",
        "submit": "Send answers",
    },
    "other": {
        "title": "{merchant} needs more information",
        "hint": "",
        "submit": "Send",
    },
}

# services.add_card names CardSavr's fields; the form names its own.
SERVICE_CARD_FIELDS = {
    "pan": "number",
    "address1": "street",
    "subnational": "state",
}

CREDENTIAL_TYPES = {"initial_account_link", "credential_request"}
TFA_TYPES = {"tfa", "tfa_request", "otp"}


def prompt_group(request_type: str) -> str:
    if request_type in CREDENTIAL_TYPES:
        return "credentials"
    if request_type in TFA_TYPES:
        return "tfa"
    if request_type == "tfa_message":
        return "push"
    if request_type == "security":
        return "security"
    return "other"


def client_texts() -> dict:
    """The wording the page script uses, so it renders what the server renders."""
    return {
        "outcomes": {str(k): v for k, v in OUTCOME_LABELS.items()},
        "prompts": PROMPT_TEXT,
        "warning_seconds": WARNING_SECONDS,
    }


def format_seconds(seconds: int | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def present_field(job_id: int, field: dict, request_type: str) -> dict:
    kind = field_kind(field, request_type)
    if kind not in ("push", "tfa"):
        kind = "secret" if field.get("secret") else "text"
    key = field["key_name"]
    autocomplete = "off"
    if key in ("username", "email", "user", "login"):
        autocomplete = "username"
    elif key == "password":
        autocomplete = "current-password"
    return {
        "key_name": key,
        "label": field.get("label") or key,
        "kind": kind,
        "question": request_type == "security",
        "id": f"f-{job_id}-{key}",
        "autocomplete": autocomplete,
    }


def present_job(job: dict) -> dict:
    """A JOB payload plus what the page shows for it (the script derives the same)."""
    view = dict(job)
    name = job["merchant_site"]["name"]
    outcome = job.get("outcome") or Outcome.IN_PROGRESS
    percent = max(0, min(100, round(job.get("percent_complete") or 0)))
    if outcome == Outcome.SUCCESS:
        # CardSavr may end a placement below 100; a saved card is complete.
        percent = 100
    finished = outcome in (Outcome.SUCCESS, Outcome.FAILED, Outcome.CANCELLED)
    view.update(
        percent=percent,
        percent_step=percent - percent % 5,
        outcome=outcome,
        outcome_label=OUTCOME_LABELS.get(outcome, outcome),
        finished=finished,
        retryable=outcome in (Outcome.FAILED, Outcome.CANCELLED),
        can_leave=bool(job.get("may_leave")) and not finished,
        next_steps=job.get("next_steps", "") if finished else "",
        prompt=None,
    )
    request = job.get("credential_request")
    if request and not finished:
        group = prompt_group(request.get("type", ""))
        text = PROMPT_TEXT[group]
        seconds_left = job.get("seconds_left")
        view["prompt"] = {
            "envelope_id": request["envelope_id"],
            "type": request.get("type", ""),
            "group": group,
            "title": text["title"].format(merchant=name),
            "hint": text["hint"].format(merchant=name),
            "submit": text["submit"],
            "status_message": request.get("status_message", ""),
            "seconds_left": seconds_left,
            "time_left": format_seconds(seconds_left),
            "warn": seconds_left is not None and seconds_left <= WARNING_SECONDS,
            # False once a reply is on its way to CardSavr.
            "answerable": request.get("answerable", True),
            "reply_error": request.get("reply_error", ""),
            "instruction": "",
            "fields": [],
        }
        fields = valid_account_link(request.get("account_link"))
        if group == "push":
            # The label carries the live instruction ("tap 54 in the app");
            # the portal answers the request itself, so there is nothing to type.
            view["prompt"]["instruction"] = " ".join(
                f.get("label", "") for f in fields
            ).strip() or text["title"].format(merchant=name)
        else:
            view["prompt"]["fields"] = [
                present_field(job["id"], field, request.get("type", ""))
                for field in fields
            ]
    return view


def blank_job() -> dict:
    """The empty job the page script clones for jobs that arrive live."""
    return present_job(
        {
            "id": 0,
            "merchant_site": {"id": 0, "name": "", "host": "", "logo": ""},
            "status": "",
            "status_message": "",
            "percent_complete": 0,
            "auth_percent_complete": 0,
            "termination_type": None,
            "outcome": Outcome.IN_PROGRESS,
            "deadline": None,
            "seconds_left": None,
            "version": 0,
            "credential_request": None,
            "may_leave": False,
            "next_steps": "",
        }
    )


def blank_prompt() -> dict:
    return {
        "envelope_id": "",
        "type": "",
        "group": "other",
        "title": "",
        "hint": "",
        "submit": "Send",
        "status_message": "",
        "seconds_left": None,
        "time_left": "",
        "warn": False,
        "answerable": True,
        "reply_error": "",
        "instruction": "",
        "fields": [],
    }


def blank_fields() -> list[dict]:
    field = {"key_name": "", "label": "", "id": "", "autocomplete": "off"}
    return [
        {**field, "kind": kind, "question": False} for kind in ("text", "secret", "tfa")
    ]


def _cardholder_or_404(request: HttpRequest):
    cardholder = selectors.cardholder_for_user(request.user)
    if cardholder is None:
        raise Http404("This login has no cardholder profile.")
    return cardholder


def _current_card(cardholder) -> Card | None:
    return Card.objects.filter(cardholder=cardholder).first()


def _service_error(request: HttpRequest, error: services.ServiceError) -> None:
    messages.error(request, error.message)


@never_cache
@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    cardholder = selectors.cardholder_for_user(request.user)
    if cardholder is None:
        return render(request, "jobs/no_cardholder.html", status=403)
    jobs = [
        present_job(job) for job in selectors.job_payloads_for_cardholder(cardholder)
    ]
    return render(
        request,
        "jobs/dashboard.html",
        {
            "jobs": jobs,
            "open_prompts": sum(
                1 for job in jobs if job["prompt"] and job["prompt"]["answerable"]
            ),
            "card": _current_card(cardholder),
            "blank_job": blank_job(),
            "blank_prompt": blank_prompt(),
            "blank_fields": blank_fields(),
            "client_texts": client_texts(),
            "upstream": selectors.upstream_state(),
            "live": True,
        },
    )


@never_cache
@login_required
@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    cardholder = _cardholder_or_404(request)
    try:
        job = selectors.job_for_cardholder(cardholder, job_id)
    except Job.DoesNotExist:
        raise Http404("No such job.") from None
    payload = present_job(selectors.job_payload_by_id(job.pk))
    return render(
        request,
        "jobs/job_detail.html",
        {"job": payload, "events": selectors.job_timeline(job)},
    )


def _own_job(request: HttpRequest, job_id: int) -> tuple[object, Job]:
    cardholder = _cardholder_or_404(request)
    try:
        return cardholder, selectors.job_for_cardholder(cardholder, job_id)
    except Job.DoesNotExist:
        raise Http404("No such job.") from None


def _back(request: HttpRequest, job_id: int | None = None) -> HttpResponse:
    url = reverse("dashboard")
    return redirect(f"{url}#job-{job_id}" if job_id else url)


@sensitive_post_parameters()
@login_required
@require_POST
@rate_limit_replies
def job_reply(request: HttpRequest, job_id: int) -> HttpResponse:
    cardholder, job = _own_job(request, job_id)
    request_payload = selectors.job_payload_by_id(job.pk).get("credential_request")
    if not request_payload or request_payload["envelope_id"] != request.POST.get(
        "envelope_id"
    ):
        messages.error(
            request,
            "That question was already answered or has expired. The current "
            "state of the job is shown below.",
        )
        return _back(request, job.pk)
    form = ReplyForm(
        request.POST,
        account_link=request_payload.get("account_link"),
        request_type=request_payload.get("type", ""),
    )
    if not form.is_valid():
        for name, errors in form.errors.items():
            label = form.fields[name].label if name in form.fields else name
            messages.error(request, f"{label}: {' '.join(errors)}")
        return _back(request, job.pk)
    try:
        async_to_sync(services.submit_reply)(
            cardholder,
            job.pk,
            form.cleaned_data["envelope_id"],
            form.account_link(),
        )
    except services.ServiceError as error:
        _service_error(request, error)
    else:
        messages.success(
            request,
            f"Sent to {job.merchant_site.name}. The job goes on by itself; this "
            "page shows what happens next.",
        )
    return _back(request, job.pk)


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    cardholder, job = _own_job(request, job_id)
    try:
        async_to_sync(services.cancel_job)(job.pk, cardholder=cardholder)
    except services.ServiceError as error:
        _service_error(request, error)
    else:
        messages.success(
            request, f"Cancel requested for {job.merchant_site.name}. It stops shortly."
        )
    return _back(request, job.pk)


@login_required
@require_POST
def job_retry(request: HttpRequest, job_id: int) -> HttpResponse:
    cardholder, job = _own_job(request, job_id)
    if not job.is_terminated:
        messages.error(request, "This job is still running; wait for it to finish.")
        return _back(request, job.pk)
    if _current_card(cardholder) is None:
        messages.error(request, "Add your card first, then try again.")
        return redirect("card")
    try:
        new_jobs = async_to_sync(services.start_jobs)(
            cardholder, [(job.merchant_site, None)]
        )
    except services.ServiceError as error:
        _service_error(request, error)
        return _back(request, job.pk)
    messages.success(
        request,
        f"Started again at {job.merchant_site.name}. Sign in when it asks you to.",
    )
    return _back(request, new_jobs[0].pk if new_jobs else None)


@never_cache
@sensitive_post_parameters("number", "cvv")
@login_required
def card(request: HttpRequest) -> HttpResponse:
    cardholder = selectors.cardholder_for_user(request.user)
    if cardholder is None:
        return render(request, "jobs/no_cardholder.html", status=403)
    current = _current_card(cardholder)
    if request.method == "POST":
        form = CardForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                new_card = async_to_sync(services.add_card)(
                    cardholder,
                    pan=data["number"],
                    cvv=data["cvv"],
                    expiration_month=f"{data['expiration_month']:02d}",
                    expiration_year=str(data["expiration_year"]),
                    name_on_card=data["name_on_card"],
                    address=form.address(),
                )
            except services.ServiceError as error:
                field = SERVICE_CARD_FIELDS.get(error.field or "", error.field)
                form.add_error(field if field in form.fields else None, error.message)
            else:
                messages.success(
                    request,
                    f"Card ending {new_card.last4} saved. Choose where to put it next.",
                )
                return redirect("start")
        logger.info("Card form rejected for cardholder %s", cardholder.pk)
    else:
        form = CardForm()
    return render(
        request,
        "jobs/card.html",
        {"form": form, "card": current, "upstream": selectors.upstream_state()},
        status=400 if form.errors else 200,
    )


def present_site(site: MerchantSite, chosen: set[int], values: dict) -> dict:
    fields = []
    for field in valid_account_link(selectors.initial_fields(site)):
        key = field["key_name"]
        name = f"site-{site.pk}-{key}"
        secret = bool(field.get("secret"))
        fields.append(
            {
                "name": name,
                "id": f"s-{site.pk}-{key}",
                "label": field.get("label") or key,
                "secret": secret,
                # Secrets are never written back into a page.
                "value": "" if secret else values.get(name, ""),
                "autocomplete": "current-password"
                if secret
                else ("username" if key in ("username", "email") else "off"),
            }
        )
    return {
        "id": site.pk,
        "name": site.name,
        "host": site.host,
        "chosen": site.pk in chosen,
        "has_logo": bool(site.logo_content_type),
        "fields": fields,
    }


@never_cache
@sensitive_post_parameters()
@login_required
def start(request: HttpRequest) -> HttpResponse:
    cardholder = selectors.cardholder_for_user(request.user)
    if cardholder is None:
        return render(request, "jobs/no_cardholder.html", status=403)
    if _current_card(cardholder) is None:
        messages.info(request, "Add your card first: then choose where to put it.")
        return redirect("card")
    query = request.GET.get("q", "").strip()[:100]
    errors: list[str] = []
    chosen: set[int] = set()
    if request.method == "POST":
        query = request.POST.get("q", "").strip()[:100]
        try:
            chosen = {int(v) for v in request.POST.getlist("site")}
        except ValueError:
            chosen = set()
        later = request.POST.get("mode") == "later"
        sites = list(selectors.merchant_sites().filter(pk__in=chosen))
        if not sites:
            errors.append("Choose at least one merchant site.")
        elif len(sites) > MAX_SITES_PER_START:
            errors.append(f"Choose at most {MAX_SITES_PER_START} sites at a time.")
        requests: list[tuple[MerchantSite, dict | None]] = []
        for site in sites:
            if later:
                requests.append((site, None))
                continue
            link = {}
            for field in valid_account_link(selectors.initial_fields(site)):
                value = request.POST.get(f"site-{site.pk}-{field['key_name']}", "")
                if not value:
                    label = field.get("label") or field["key_name"]
                    errors.append(
                        f"{site.name}: enter your {label.lower()}, or choose "
                        "“Start now, I'll sign in when asked”."
                    )
                link[field["key_name"]] = value
            requests.append((site, link or None))
        if not errors:
            try:
                async_to_sync(services.start_jobs)(cardholder, requests)
            except services.ServiceError as error:
                errors.append(error.message)
            else:
                names = ", ".join(site.name for site in sites)
                messages.success(
                    request,
                    f"Started at {names}. Watch each job here and answer when asked.",
                )
                return redirect("dashboard")
    sites = selectors.merchant_sites(query)
    values = request.POST if request.method == "POST" else {}
    return render(
        request,
        "jobs/start.html",
        {
            "query": query,
            "sites": [present_site(site, chosen, values) for site in sites],
            "errors": errors,
            "upstream": selectors.upstream_state(),
        },
        status=400 if errors else 200,
    )


@require_GET
def merchant_logo(request: HttpRequest, site_id: int) -> HttpResponse:
    site = get_object_or_404(MerchantSite, pk=site_id)
    content = bytes(site.logo or b"")
    if not content or not site.logo_content_type.startswith("image/"):
        raise Http404("No logo for this site.")
    etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
    if request.headers.get("If-None-Match") == etag:
        response = HttpResponseNotModified()
    else:
        response = HttpResponse(content, content_type=site.logo_content_type)
    response["ETag"] = etag
    response["Cache-Control"] = "public, max-age=604800"
    # An SVG opened directly must not run script in the portal's origin.
    response["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    )
    response["X-Content-Type-Options"] = "nosniff"
    return response
