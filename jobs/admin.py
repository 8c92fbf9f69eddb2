"""The operators' console: look up jobs, see why they failed, act on them.

Everything shown here mirrors CardSavr, which stays the source of truth, so
mirrored fields are read-only for everyone and nothing can be added by hand.
Acting on a job (cancel, refresh, resync) goes through jobs.services and needs
the ``jobs.act_on_job`` permission that the operators group holds.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Count,
    Exists,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.text import smart_split, unescape_string_literal
from django.utils.timesince import timesince

from jobs import reports, services
from jobs.models import (
    Card,
    Cardholder,
    CredentialRequest,
    Job,
    JobEvent,
    MerchantSite,
    TerminationType,
    WebhookNotification,
)

logger = logging.getLogger(__name__)

ACT_PERMISSION = "jobs.act_on_job"
# One action runs inside one admin request; larger batches are refused rather
# than left to time out half done.
MAX_ACTION_JOBS = 50
# A running job CardSavr has not reported on for this long is worth a look.
STUCK_AFTER = timedelta(minutes=10)


class ReadOnlyMirrorAdmin(admin.ModelAdmin):
    """Rows arrive from CardSavr only: no adding, every field read-only."""

    # Lists stay fast with 100,000 jobs: a filtered list does not count the
    # whole table as well, and there are no facet counts (one count per filter
    # choice over every row).
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None):
        declared = [f for f in self.readonly_fields if f not in self._model_fields()]
        return [*self._model_fields(), *declared]

    def _model_fields(self) -> list[str]:
        excluded = self.exclude or ()
        return [
            f.name for f in self.model._meta.concrete_fields if f.name not in excluded
        ]

    def has_act_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ACT_PERMISSION)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _fields_asked(account_link: Any) -> str:
    """Labels and key names of the fields CardSavr asked for; never values."""
    if not isinstance(account_link, list):
        return ""
    names = []
    for item in account_link:
        if isinstance(item, dict):
            key_name = str(item.get("key_name", ""))
            label = str(item.get("label", "")) or key_name
            names.append(f"{label} ({key_name})" if label != key_name else key_name)
    return ", ".join(names)


class CredentialRequestInline(ReadOnlyInline):
    model = CredentialRequest
    verbose_name = "question asked"
    verbose_name_plural = "Questions CardSavr asked the cardholder"
    fields = (
        "type",
        "fields_asked",
        "status_message",
        "opened_at",
        "answered_at",
        "reply_state",
        "reply_error",
        "closed_at",
        "close_reason",
    )
    readonly_fields = fields
    ordering = ("opened_at",)

    @admin.display(description="fields asked")
    def fields_asked(self, obj: CredentialRequest) -> str:
        return _fields_asked(obj.account_link)


class JobEventInline(ReadOnlyInline):
    model = JobEvent
    verbose_name = "event"
    verbose_name_plural = "Timeline"
    fields = (
        "created_at",
        "kind",
        "status",
        "status_message",
        "percent_complete",
        "detail",
    )
    readonly_fields = fields
    ordering = ("created_at", "id")

    @admin.display(description="detail")
    def detail(self, obj: JobEvent) -> str:
        # Events hold ids, field names and versions by contract; kept short.
        if not obj.data:
            return ""
        text = json.dumps(obj.data, sort_keys=True, default=str)
        return text if len(text) <= 300 else text[:297] + "..."


class TerminationTypeFilter(admin.SimpleListFilter):
    title = "termination type"
    parameter_name = "termination_type"
    UNFINISHED = "none"
    OTHER = "other"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin):
        return [
            *TerminationType.choices,
            (self.UNFINISHED, "Not finished"),
            (self.OTHER, "Other (new at CardSavr)"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == self.UNFINISHED:
            return queryset.filter(termination_type="")
        if value == self.OTHER:
            return queryset.exclude(termination_type__in=[*TerminationType.values, ""])
        if value in TerminationType.values:
            return queryset.filter(termination_type=value)
        return queryset


class MerchantSiteFilter(admin.SimpleListFilter):
    """Merchant sites by name, without loading their logos."""

    title = "merchant site"
    parameter_name = "merchant_site__id__exact"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin):
        return MerchantSite.objects.order_by("name").values_list("pk", "name")

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value is None:
            return queryset
        if not value.isdigit():
            raise IncorrectLookupParameters(f"No merchant site {value!r}.")
        return queryset.filter(merchant_site_id=int(value))


class AttentionFilter(admin.SimpleListFilter):
    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin):
        return [
            ("waiting", "Waiting for the cardholder"),
            ("stuck", f"No news for {STUCK_AFTER.seconds // 60}+ minutes"),
            ("vanished", "No longer known to CardSavr"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        running = Q(termination_type="", vanished_at__isnull=True)
        if self.value() == "waiting":
            return queryset.filter(running, has_open_request=True)
        if self.value() == "stuck":
            # CardSavr's own last change: the poller touching the row is no news.
            last_news = Coalesce("last_updated_on", "created_at")
            cutoff = timezone.now() - STUCK_AFTER
            return queryset.alias(last_news=last_news).filter(
                running, last_news__lt=cutoff
            )
        if self.value() == "vanished":
            return queryset.filter(vanished_at__isnull=False)
        return queryset


async def _each(
    call: Callable[[int], Awaitable[Any]], job_ids: list[int]
) -> list[tuple[int, Any, str]]:
    """Run call for each job one after another: (job id, result, error)."""
    outcomes = []
    for job_id in job_ids:
        try:
            outcomes.append((job_id, await call(job_id), ""))
        except services.ServiceError as exc:
            outcomes.append((job_id, None, exc.message))
        except Exception:
            logger.exception("Operator action failed for job %s", job_id)
            outcomes.append((job_id, None, "unexpected error, see the server log"))
    return outcomes


@admin.register(Job)
class JobAdmin(ReadOnlyMirrorAdmin):
    list_display = (
        "cardsavr_id",
        "cardholder_link",
        "merchant_site",
        "status",
        "outcome",
        "percent",
        "termination_type",
        "age",
        "questions",
    )
    list_display_links = ("cardsavr_id",)
    list_filter = (
        "outcome",
        TerminationTypeFilter,
        AttentionFilter,
        "status",
        MerchantSiteFilter,
        "created_at",
    )
    search_fields = (
        "cardholder__user__username",
        "=cardholder__cuid",
        "merchant_site__name",
        "merchant_site__host",
    )
    search_help_text = (
        "Cardholder username or CUID, CardSavr job id, merchant name or host."
    )
    date_hierarchy = "created_at"
    # Ids follow creation order, and the primary key index lets the database
    # read one page without sorting every job.
    ordering = ("-id",)
    list_select_related = ("cardholder__user", "merchant_site")
    list_per_page = 50
    inlines = (CredentialRequestInline, JobEventInline)
    readonly_fields = ("diagnosis", "cardholder_link")
    fieldsets = (
        (
            "What happened",
            {
                "fields": (
                    "diagnosis",
                    "cardholder_link",
                    "merchant_site",
                    "status",
                    "status_message",
                    "termination_type",
                    "outcome",
                    "percent_complete",
                    "auth_percent_complete",
                )
            },
        ),
        (
            "When",
            {
                "fields": (
                    "created_at",
                    "cardsavr_created_on",
                    "started_on",
                    "completed_on",
                    "last_updated_on",
                    "deadline",
                    "last_synced_at",
                    "vanished_at",
                )
            },
        ),
        (
            "CardSavr record",
            {
                "classes": ("collapse",),
                "fields": (
                    "cardsavr_id",
                    "cardholder",
                    "card",
                    "account_id",
                    "version",
                    "lease_owner",
                    "lease_expires_at",
                    "updated_at",
                ),
            },
        ),
    )
    actions = ("cancel_at_cardsavr", "refresh_from_cardsavr")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        # Per-row figures come from correlated subqueries, which the database
        # evaluates only for the page shown, not from a GROUP BY over all jobs.
        requests = CredentialRequest.objects.filter(job=OuterRef("pk"))
        asked = (
            requests.order_by()
            .values("job")
            .annotate(count=Count("pk"))
            .values("count")
        )
        return (
            super()
            .get_queryset(request)
            .select_related("cardholder__user", "merchant_site")
            .defer("merchant_site__logo")
            .annotate(
                has_open_request=Exists(requests.filter(closed_at__isnull=True)),
                questions_asked=Coalesce(
                    Subquery(asked, output_field=IntegerField()), 0
                ),
            )
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.get_object(request, unquote(object_id))
        if job is not None:
            subtitle = (
                f"CardSavr job {job.cardsavr_id}: {job.cardholder} "
                f"at {job.merchant_site.name}"
            )
            extra_context = {**(extra_context or {}), "subtitle": subtitle}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_search_results(self, request: HttpRequest, queryset, search_term: str):
        """Match each word against cardholders, merchant sites and job ids.

        Words are looked up in the small cardholder and merchant site tables
        first and jobs are then filtered by id, rather than joining every job
        to both tables and pattern-matching each row.
        """
        for word in smart_split(search_term):
            word = unescape_string_literal(word) if word[0] in "\"'" else word
            cardholders = Cardholder.objects.filter(
                Q(user__username__icontains=word) | Q(cuid=word)
            ).values("pk")
            sites = MerchantSite.objects.filter(
                Q(name__icontains=word) | Q(host__icontains=word)
            ).values("pk")
            match = Q(cardholder__in=cardholders) | Q(merchant_site__in=sites)
            if word.isdigit() and len(word) <= 18:
                match |= Q(cardsavr_id=int(word))
            queryset = queryset.filter(match)
        return queryset, False

    @admin.display(description="cardholder", ordering="cardholder__user__username")
    def cardholder_link(self, obj: Job) -> str:
        url = reverse("admin:jobs_cardholder_change", args=[obj.cardholder_id])
        return format_html('<a href="{}">{}</a>', url, obj.cardholder)

    @admin.display(description="%", ordering="percent_complete")
    def percent(self, obj: Job) -> str:
        return f"{obj.percent_complete:.0f}"

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: Job) -> str:
        return timesince(obj.created_at, depth=1)

    @admin.display(description="questions")
    def questions(self, obj: Job) -> str:
        asked = getattr(obj, "questions_asked", 0)
        if getattr(obj, "has_open_request", False):
            return f"{asked} (one waiting)"
        return str(asked)

    @admin.display(description="in short")
    def diagnosis(self, obj: Job) -> str:
        return job_diagnosis(obj)

    @admin.action(description="Cancel selected jobs at CardSavr", permissions=["act"])
    def cancel_at_cardsavr(self, request: HttpRequest, queryset: QuerySet[Job]):
        jobs = self._selected(request, queryset)
        if jobs is None:
            return
        finished = [job for job in jobs if job.is_terminated]
        running = [job for job in jobs if not job.is_terminated]
        actor = f"operator:{request.user.get_username()}"

        async def cancel(job_id: int) -> Job:
            return await services.cancel_job(job_id, actor=actor)

        outcomes = async_to_sync(_each)(cancel, [job.pk for job in running])
        by_id = {job.pk: job for job in running}
        done, failed = [], []
        for job_id, _result, error in outcomes:
            job = by_id[job_id]
            if error:
                failed.append(f"{job.cardsavr_id} ({error})")
                self.log_change(request, job, f"Cancel at CardSavr failed: {error}")
            else:
                done.append(str(job.cardsavr_id))
                self.log_change(request, job, "Cancel requested at CardSavr")
        if done:
            message = f"Cancel requested at CardSavr for jobs {', '.join(done)}."
            self.message_user(request, message, messages.SUCCESS)
        if finished:
            ids = ", ".join(str(job.cardsavr_id) for job in finished)
            message = f"Already finished, so left alone: {ids}."
            self.message_user(request, message, messages.INFO)
        if failed:
            message = (
                f"Could not cancel: {'; '.join(failed)}. Try again in a moment, or "
                "refresh them to see where they stand."
            )
            self.message_user(request, message, messages.ERROR)

    @admin.action(
        description="Refresh selected jobs from CardSavr now", permissions=["act"]
    )
    def refresh_from_cardsavr(self, request: HttpRequest, queryset: QuerySet[Job]):
        jobs = self._selected(request, queryset)
        if jobs is None:
            return
        by_id = {job.pk: job for job in jobs}
        outcomes = async_to_sync(_each)(services.refresh_job, list(by_id))
        changed, unchanged, failed = [], [], []
        for job_id, result, error in outcomes:
            job = by_id[job_id]
            if error:
                failed.append(f"{job.cardsavr_id} ({error})")
                self.log_change(request, job, f"Refresh from CardSavr failed: {error}")
                continue
            new_version = getattr(result, "version", job.version)
            if new_version != job.version:
                changed.append(f"{job.cardsavr_id} (now {result.status})")
            else:
                unchanged.append(str(job.cardsavr_id))
            self.log_change(request, job, "Refreshed from CardSavr")
        if changed:
            message = f"Updated from CardSavr: {', '.join(changed)}."
            self.message_user(request, message, messages.SUCCESS)
        if unchanged:
            message = f"Already up to date: {', '.join(unchanged)}."
            self.message_user(request, message, messages.INFO)
        if failed:
            message = (
                f"Could not refresh: {'; '.join(failed)}. CardSavr may be "
                "unreachable; the poller keeps trying on its own."
            )
            self.message_user(request, message, messages.ERROR)

    def _selected(self, request: HttpRequest, queryset: QuerySet[Job]):
        jobs = list(queryset.select_related("merchant_site")[: MAX_ACTION_JOBS + 1])
        if len(jobs) > MAX_ACTION_JOBS:
            self.message_user(
                request,
                f"Select at most {MAX_ACTION_JOBS} jobs at a time; nothing was done.",
                messages.ERROR,
            )
            return None
        return jobs


# What each termination type means for the cardholder, in an operator's words.
TERMINATION_HINTS = {
    TerminationType.BILLABLE: "The card was placed.",
    TerminationType.USER_DATA_FAILURE: (
        "Something the cardholder gave or has was not accepted; they can try "
        "again once it is put right."
    ),
    TerminationType.SITE_INTERACTION_FAILURE: (
        "The merchant's site did not behave as expected; not the cardholder's "
        "doing. Try again later, and check the report if this merchant fails often."
    ),
    TerminationType.PROCESS_FAILURE: (
        "CardSavr's own process failed; not the cardholder's doing. Try again later."
    ),
    TerminationType.NEVER_STARTED: (
        "The job never started (cancelled, or no credentials were given); it is "
        "left out of success rates."
    ),
}
# The commonest final statuses, explained; any other is shown as CardSavr names it.
STATUS_HINTS = {
    "TIMEOUT_CREDENTIALS": "The cardholder did not give their login in time.",
    "TIMEOUT_TFA": "The cardholder did not enter the verification code in time.",
    "TOO_MANY_LOGIN_FAILURES": "The merchant refused the login twice.",
    "TOO_MANY_TFA_FAILURES": "The verification code was wrong too many times.",
    "ACCOUNT_LOCKED": "The merchant has locked the cardholder's account.",
    "PASSWORD_RESET_REQUIRED": "The merchant wants the password reset first.",
    "INVALID_CARD": "The merchant refused the card.",
    "EXPIRED_CARD": "The merchant says the card has expired.",
    "INVALID_CVV": "The merchant refused the card's security code.",
    "DUPLICATE_CARD": "The card was already on file at the merchant.",
}


def _request_summary(request: CredentialRequest) -> str:
    fields = _fields_asked(request.account_link) or "no fields"
    if request.closed_at is None:
        state = "still waiting"
    else:
        state = f"closed ({request.get_close_reason_display() or 'no reason kept'})"
    if request.reply_state:
        state += f", reply: {request.get_reply_state_display()}"
    if request.reply_error:
        state += f" ({request.reply_error})"
    return f"{request.type} asking {fields}, {state}"


def job_diagnosis(job: Job) -> str:
    """A few sentences an operator can read out to a cardholder."""
    site = job.merchant_site.name
    if job.termination_type:
        kind = job.termination_type
        if kind in TerminationType.values:
            kind = TerminationType(kind).label
        parts = [f"Finished at {site}: {kind}, CardSavr status {job.status}."]
        if job.status in STATUS_HINTS:
            parts.append(STATUS_HINTS[job.status])
        if job.termination_type in TERMINATION_HINTS:
            parts.append(TERMINATION_HINTS[job.termination_type])
    elif job.vanished_at:
        parts = [f"CardSavr no longer knows this job (since {job.vanished_at:%c})."]
    else:
        parts = [f"Running at {site}: status {job.status}."]
    if job.status_message:
        parts.append(f"CardSavr told the cardholder: “{job.status_message}”")
    requests = list(job.credential_requests.order_by("opened_at"))
    if requests:
        asked = "; ".join(_request_summary(request) for request in requests)
        times = "once" if len(requests) == 1 else f"{len(requests)} times"
        parts.append(f"The cardholder was asked {times}: {asked}.")
    else:
        parts.append("The cardholder was never asked anything.")
    last_news = job.last_updated_on or job.created_at
    if not job.is_terminated and last_news < timezone.now() - STUCK_AFTER:
        parts.append(
            f"No news from CardSavr for {timesince(last_news, depth=1)}: "
            "use “Refresh selected jobs from CardSavr now”."
        )
    return " ".join(parts)


@admin.register(Cardholder)
class CardholderAdmin(ReadOnlyMirrorAdmin):
    list_display = ("user", "cuid", "cardsavr_id", "job_count", "created_at")
    search_fields = ("user__username", "user__email", "=cuid")
    list_select_related = ("user",)
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    readonly_fields = ("recent_jobs",)
    fields = ("user", "cuid", "cardsavr_id", "created_at", "recent_jobs")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Cardholder]:
        jobs = (
            Job.objects.filter(cardholder=OuterRef("pk"))
            .order_by()
            .values("cardholder")
            .annotate(count=Count("pk"))
            .values("count")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                jobs_total=Coalesce(Subquery(jobs, output_field=IntegerField()), 0)
            )
        )

    @admin.display(description="jobs", ordering="jobs_total")
    def job_count(self, obj: Cardholder) -> str:
        url = reverse("admin:jobs_job_changelist")
        query = urlencode({"cardholder__id__exact": obj.pk})
        return format_html('<a href="{}?{}">{}</a>', url, query, obj.jobs_total)

    @admin.display(description="latest jobs")
    def recent_jobs(self, obj: Cardholder) -> str:
        jobs = (
            obj.jobs.select_related("merchant_site")
            .defer("merchant_site__logo")
            .order_by("-id")[:20]
        )
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td></tr>",
            (
                (
                    reverse("admin:jobs_job_change", args=[job.pk]),
                    job.cardsavr_id,
                    job.merchant_site.name,
                    job.status,
                    job.status_message,
                    timesince(job.created_at, depth=1) + " ago",
                )
                for job in jobs
            ),
        )
        if not rows:
            return "No jobs yet."
        all_url = (
            reverse("admin:jobs_job_changelist")
            + "?"
            + urlencode({"cardholder__id__exact": obj.pk})
        )
        return format_html(
            "<table><thead><tr><th>CardSavr job</th><th>merchant</th><th>status</th>"
            "<th>message</th><th>started</th></tr></thead><tbody>{}</tbody></table>"
            '<p><a href="{}">All jobs of this cardholder</a></p>',
            rows,
            all_url,
        )


@admin.register(Card)
class CardAdmin(ReadOnlyMirrorAdmin):
    # Only what identifies a card to a person is mirrored: no number, no CVV.
    list_display = ("__str__", "cardholder", "expiration", "cardsavr_id", "created_at")
    search_fields = ("cardholder__user__username", "=last4", "=cardsavr_id")
    list_select_related = ("cardholder__user",)
    ordering = ("-created_at",)

    @admin.display(description="expires")
    def expiration(self, obj: Card) -> str:
        return f"{obj.expiration_month:02d}/{obj.expiration_year}"


@admin.register(MerchantSite)
class MerchantSiteAdmin(ReadOnlyMirrorAdmin):
    list_display = ("name", "host", "cardsavr_id", "fields_asked", "synced_at", "links")
    search_fields = ("name", "host", "=cardsavr_id")
    ordering = ("name",)
    # Logo bytes are served by the portal; they say nothing to an operator.
    exclude = ("logo",)
    actions = ("resync_merchant_sites",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[MerchantSite]:
        return super().get_queryset(request).defer("logo")

    @admin.display(description="initial fields")
    def fields_asked(self, obj: MerchantSite) -> str:
        return _fields_asked(obj.account_link)

    @admin.display(description="")
    def links(self, obj: MerchantSite) -> str:
        jobs = (
            reverse("admin:jobs_job_changelist")
            + "?"
            + urlencode({"merchant_site__id__exact": obj.pk})
        )
        report = (
            reverse("admin:jobs_report") + "?" + urlencode({"merchant_site": obj.pk})
        )
        return format_html(
            '<a href="{}">jobs</a> · <a href="{}">report</a>', jobs, report
        )

    def get_urls(self):
        resync = path(
            "resync/",
            self.admin_site.admin_view(self.resync_view),
            name="jobs_merchantsite_resync",
        )
        return [resync, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_act": self.has_act_permission(request),
        }
        return super().changelist_view(request, extra_context)

    def resync_view(self, request: HttpRequest) -> HttpResponse:
        """The changelist's button: a resync needs no site selected first."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_act_permission(request):
            raise PermissionDenied
        self._resync(request)
        return redirect("admin:jobs_merchantsite_changelist")

    @admin.action(
        description="Resync all merchant sites from CardSavr", permissions=["act"]
    )
    def resync_merchant_sites(self, request: HttpRequest, queryset: QuerySet):
        self._resync(request)

    def _resync(self, request: HttpRequest) -> None:
        try:
            count = async_to_sync(services.sync_merchant_sites)()
        except services.ServiceError as exc:
            message = f"Resync from CardSavr failed: {exc.message}"
            level = messages.ERROR
        except Exception:
            logger.exception("Merchant site resync failed")
            message = (
                "Resync from CardSavr failed: CardSavr could not be reached or "
                "answered badly. Try again in a minute; details are in the log."
            )
            level = messages.ERROR
        else:
            message = f"Resynced {count} merchant sites from CardSavr."
            level = messages.SUCCESS
        LogEntry.objects.create(
            user_id=request.user.pk,
            content_type=ContentType.objects.get_for_model(MerchantSite),
            object_repr="All merchant sites",
            action_flag=CHANGE,
            change_message=message,
        )
        self.message_user(request, message, level)


@admin.register(CredentialRequest)
class CredentialRequestAdmin(ReadOnlyMirrorAdmin):
    list_display = (
        "job",
        "type",
        "fields_asked",
        "opened_at",
        "answered_at",
        "reply_state",
        "close_reason",
    )
    list_filter = ("type", "reply_state", "close_reason", "opened_at")
    search_fields = ("=job__cardsavr_id", "job__cardholder__user__username")
    list_select_related = ("job",)
    ordering = ("-opened_at",)
    date_hierarchy = "opened_at"

    @admin.display(description="fields asked")
    def fields_asked(self, obj: CredentialRequest) -> str:
        return _fields_asked(obj.account_link)


@admin.register(JobEvent)
class JobEventAdmin(ReadOnlyMirrorAdmin):
    list_display = ("created_at", "job", "kind", "status", "status_message")
    list_filter = ("kind", "created_at")
    search_fields = ("=job__cardsavr_id",)
    list_select_related = ("job",)
    ordering = ("-created_at", "-id")
    date_hierarchy = "created_at"


@admin.register(WebhookNotification)
class WebhookNotificationAdmin(ReadOnlyMirrorAdmin):
    list_display = ("received_at", "event", "cuid", "job_ids", "unknown_job_ids")
    list_filter = ("event", "received_at")
    search_fields = ("=cuid", "=nonce", "=body_sha256")
    ordering = ("-received_at",)
    date_hierarchy = "received_at"


class ReportForm(forms.Form):
    date_from = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    merchant_site = forms.ModelChoiceField(
        queryset=MerchantSite.objects.only("id", "name").order_by("name"),
        required=False,
        empty_label="All merchant sites",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        _, default_to = reports.default_range()
        date_to = data.get("date_to") or default_to
        date_from = data.get("date_from") or (
            date_to - timedelta(days=reports.DEFAULT_DAYS - 1)
        )
        if date_from > date_to:
            raise forms.ValidationError("The start date is after the end date.")
        if (date_to - date_from).days >= reports.MAX_DAYS:
            raise forms.ValidationError(
                f"Choose a range of at most {reports.MAX_DAYS} days."
            )
        data["date_from"], data["date_to"] = date_from, date_to
        return data


def report_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("jobs.view_job"):
        raise PermissionDenied
    chosen = request.GET.copy()
    chosen.pop("format", None)
    if chosen:
        form = ReportForm(request.GET)
    else:
        # Nothing chosen yet: show this week, with its dates in the form.
        default_from, default_to = reports.default_range()
        form = ReportForm({"date_from": default_from, "date_to": default_to})
    if form.is_valid():
        date_from = form.cleaned_data["date_from"]
        date_to = form.cleaned_data["date_to"]
        merchant_site = form.cleaned_data["merchant_site"]
    elif request.GET.get("format") == "csv":
        errors = "; ".join(e for errs in form.errors.values() for e in errs)
        return HttpResponse(
            f"Report not produced: {errors}", status=400, content_type="text/plain"
        )
    else:
        date_from, date_to = reports.default_range()
        merchant_site = None
    report = reports.placement_report(date_from, date_to, merchant_site)

    if request.GET.get("format") == "csv":
        response = HttpResponse(reports.report_csv(report), content_type="text/csv")
        filename = f"placements-{date_from}-{date_to}.csv"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    csv_query = request.GET.copy()
    csv_query["format"] = "csv"
    context = {
        **admin.site.each_context(request),
        "title": "Placements by merchant site",
        "form": form,
        "report": report,
        "totals": report.totals,
        "rated_types": [
            (kind, reports.TYPE_LABELS[kind]) for kind in reports.RATED_TYPES
        ],
        "rate_chart": reports.success_rate_bars(report),
        "day_chart": reports.outcome_day_bars(report),
        "csv_url": f"?{csv_query.urlencode()}",
        "opts": Job._meta,
    }
    return TemplateResponse(request, "admin/jobs/report.html", context)


_admin_site_urls = admin.site.get_urls


def _get_urls_with_report():
    report = path(
        "jobs/report/", admin.site.admin_view(report_view), name="jobs_report"
    )
    return [report, *_admin_site_urls()]


# The report belongs to the admin (staff login, admin look) but to no model.
admin.site.get_urls = _get_urls_with_report
