"""Per-merchant placement report for operators, computed in the database.

Every figure comes from aggregate queries whose number does not depend on how
many jobs there are. NEVER_STARTED jobs (cancelled before they began, or no
credentials ever given) are counted in their own column and left out of every
rate, as CardSavr's documentation asks.
"""

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db import connection
from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Window,
)
from django.db.models.functions import Coalesce, RowNumber, TruncDate
from django.utils import timezone

from jobs.models import CredentialRequest, Job, MerchantSite, TerminationType

# Termination types that count towards the success rate, in display order.
RATED_TYPES = (
    TerminationType.BILLABLE,
    TerminationType.USER_DATA_FAILURE,
    TerminationType.SITE_INTERACTION_FAILURE,
    TerminationType.PROCESS_FAILURE,
)
NEVER_STARTED = TerminationType.NEVER_STARTED
DEFAULT_DAYS = 7
MAX_DAYS = 366
# A merchant is flagged as falling when its success rate dropped by this many
# points against the previous period, with at least this many finished jobs
# in both, so one unlucky job at a quiet merchant raises no alarm.
FALLING_POINTS = 15
FALLING_MIN_JOBS = 10


class Median(Aggregate):
    """PostgreSQL's exact median: percentile_cont(0.5) over the group."""

    function = "percentile_cont"
    name = "Median"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = DurationField()


@dataclass
class MerchantRow:
    merchant_site_id: int
    name: str
    host: str
    jobs: int = 0  # created in the range, NEVER_STARTED excluded
    never_started: int = 0
    in_progress: int = 0  # not finished yet
    by_type: dict[str, int] = field(default_factory=dict)
    other_types: int = 0  # termination types CardSavr may add later
    by_status: list[tuple[str, int]] = field(default_factory=list)
    needed_input: int = 0
    median_to_success: timedelta | None = None
    median_to_first_prompt: timedelta | None = None
    # The same merchant over the equally long period just before.
    previous_billable: int = 0
    previous_rated: int = 0

    @property
    def rated(self) -> int:
        return sum(self.by_type.get(kind, 0) for kind in RATED_TYPES)

    @property
    def success_rate(self) -> float | None:
        rated = self.rated
        if not rated:
            return None
        return self.by_type.get(TerminationType.BILLABLE, 0) / rated

    @property
    def needed_input_share(self) -> float | None:
        if not self.jobs:
            return None
        return self.needed_input / self.jobs

    @property
    def previous_success_rate(self) -> float | None:
        if not self.previous_rated:
            return None
        return self.previous_billable / self.previous_rated

    @property
    def change_in_points(self) -> int | None:
        """Percentage points gained (+) or lost (-) since the previous period."""
        now, before = self.success_rate, self.previous_success_rate
        if now is None or before is None:
            return None
        return round((now - before) * 100)

    @property
    def falling(self) -> bool:
        """A drop worth a look: big enough, on enough jobs to mean something."""
        change = self.change_in_points
        return (
            change is not None
            and change <= -FALLING_POINTS
            and min(self.rated, self.previous_rated) >= FALLING_MIN_JOBS
        )

    @property
    def median_to_success_text(self) -> str:
        return duration_text(self.median_to_success)

    @property
    def median_to_first_prompt_text(self) -> str:
        return duration_text(self.median_to_first_prompt)


def duration_text(value: timedelta | None) -> str:
    """A duration as an operator reads it: "45 s", "3 min 52 s", "2 h 5 min"."""
    if value is None:
        return "—"
    seconds = round(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@dataclass
class DayRow:
    day: date
    by_type: dict[str, int]
    in_progress: int
    never_started: int

    @property
    def total(self) -> int:
        return sum(self.by_type.values()) + self.in_progress


@dataclass
class Report:
    date_from: date
    date_to: date
    merchant_site: MerchantSite | None
    rows: list[MerchantRow]
    days: list[DayRow]
    median_method: str

    @property
    def falling(self) -> list[MerchantRow]:
        return [row for row in self.rows if row.falling]

    @property
    def totals(self) -> MerchantRow:
        total = MerchantRow(0, "All merchant sites", "")
        for row in self.rows:
            total.jobs += row.jobs
            total.never_started += row.never_started
            total.in_progress += row.in_progress
            total.other_types += row.other_types
            total.needed_input += row.needed_input
            for kind, count in row.by_type.items():
                total.by_type[kind] = total.by_type.get(kind, 0) + count
        return total


def default_range(today: date | None = None) -> tuple[date, date]:
    today = today or timezone.localdate()
    return today - timedelta(days=DEFAULT_DAYS - 1), today


def _bounds(date_from: date, date_to: date) -> tuple[datetime, datetime]:
    tz = timezone.get_current_timezone()
    start = datetime.combine(date_from, time.min, tzinfo=tz)
    end = datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=tz)
    return start, end


def _jobs_in_range(
    date_from: date, date_to: date, merchant_site: MerchantSite | None
) -> QuerySet[Job]:
    start, end = _bounds(date_from, date_to)
    jobs = Job.objects.filter(created_at__gte=start, created_at__lt=end)
    if merchant_site is not None:
        jobs = jobs.filter(merchant_site=merchant_site)
    # The model's default ordering would otherwise leak into GROUP BY.
    return jobs.order_by()


def _success_duration() -> ExpressionWrapper:
    # Both ends on CardSavr's clock when the job's CardSavr creation time is
    # known; the portal's own creation time otherwise.
    return ExpressionWrapper(
        F("completed_on") - Coalesce("cardsavr_created_on", "created_at"),
        output_field=DurationField(),
    )


def _first_prompt_duration() -> ExpressionWrapper:
    # Both ends on the portal's clock: opened_at is when the portal saw it.
    first_opened = (
        CredentialRequest.objects.filter(job=OuterRef("pk"))
        .order_by("opened_at")
        .values("opened_at")[:1]
    )
    return ExpressionWrapper(
        Subquery(first_opened) - F("created_at"), output_field=DurationField()
    )


def _success_filter() -> Q:
    return Q(termination_type=TerminationType.BILLABLE, completed_on__isnull=False)


def _medians_postgresql(jobs: QuerySet[Job]) -> dict[int, dict[str, Any]]:
    rows = (
        jobs.exclude(termination_type=NEVER_STARTED)
        .values("merchant_site_id")
        .annotate(
            to_success=Median(_success_duration(), filter=_success_filter()),
            to_first_prompt=Median(
                _first_prompt_duration(),
                filter=Q(Exists(CredentialRequest.objects.filter(job=OuterRef("pk")))),
            ),
        )
    )
    return {
        row["merchant_site_id"]: {
            "to_success": row["to_success"],
            "to_first_prompt": row["to_first_prompt"],
        }
        for row in rows
    }


def _window_median(jobs: QuerySet[Job], duration: ExpressionWrapper) -> dict[int, Any]:
    """Median per merchant site without an aggregate that computes it.

    Numbers each site's durations in order with a window function and fetches
    only the one or two middle rows of each site, so the rows read stay two per
    merchant site however many jobs there are. Used where the database has no
    percentile_cont (SQLite).
    """
    ranked = (
        jobs.annotate(duration=duration)
        .filter(duration__isnull=False)
        .annotate(
            position=Window(
                RowNumber(),
                partition_by=[F("merchant_site_id")],
                order_by=[F("duration").asc(), F("pk").asc()],
            ),
            size=Window(Count("pk"), partition_by=[F("merchant_site_id")]),
        )
        # For n rows the middle is (n + 1) / 2 when n is odd, and the pair
        # n / 2 and n / 2 + 1 when n is even.
        .filter(position__gte=F("size") / 2.0, position__lte=F("size") / 2.0 + 1)
        .values_list("merchant_site_id", "duration")
    )
    middles: dict[int, list[timedelta]] = defaultdict(list)
    for merchant_site_id, value in ranked:
        middles[merchant_site_id].append(value)
    return {
        merchant_site_id: sum(values, timedelta()) / len(values)
        for merchant_site_id, values in middles.items()
    }


def _medians_windowed(jobs: QuerySet[Job]) -> dict[int, dict[str, Any]]:
    started = jobs.exclude(termination_type=NEVER_STARTED)
    to_success = _window_median(started.filter(_success_filter()), _success_duration())
    to_first_prompt = _window_median(started, _first_prompt_duration())
    medians: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"to_success": None, "to_first_prompt": None}
    )
    for merchant_site_id, value in to_success.items():
        medians[merchant_site_id]["to_success"] = value
    for merchant_site_id, value in to_first_prompt.items():
        medians[merchant_site_id]["to_first_prompt"] = value
    return medians


def placement_report(
    date_from: date, date_to: date, merchant_site: MerchantSite | None = None
) -> Report:
    """Build the report for jobs created from date_from to date_to inclusive."""
    jobs = _jobs_in_range(date_from, date_to, merchant_site)
    started = ~Q(termination_type=NEVER_STARTED)
    known_types = [*RATED_TYPES, NEVER_STARTED, ""]
    has_request = Exists(CredentialRequest.objects.filter(job=OuterRef("pk")))

    # Counts per merchant site in one grouped query.
    counts = (
        jobs.values("merchant_site_id", "merchant_site__name", "merchant_site__host")
        .annotate(
            jobs=Count("pk", filter=started),
            never_started=Count("pk", filter=Q(termination_type=NEVER_STARTED)),
            in_progress=Count("pk", filter=Q(termination_type="")),
            other_types=Count("pk", filter=~Q(termination_type__in=known_types)),
            needed_input=Count("pk", filter=started & Q(has_request)),
            **{
                f"type_{kind}": Count("pk", filter=Q(termination_type=kind))
                for kind in RATED_TYPES
            },
        )
        .order_by("merchant_site__name", "merchant_site_id")
    )
    rows = {
        row["merchant_site_id"]: MerchantRow(
            merchant_site_id=row["merchant_site_id"],
            name=row["merchant_site__name"],
            host=row["merchant_site__host"],
            jobs=row["jobs"],
            never_started=row["never_started"],
            in_progress=row["in_progress"],
            other_types=row["other_types"],
            needed_input=row["needed_input"],
            by_type={kind: row[f"type_{kind}"] for kind in RATED_TYPES},
        )
        for row in counts
    }

    # Final statuses as CardSavr named them, any value included.
    statuses = (
        jobs.exclude(termination_type="")
        .values("merchant_site_id", "status")
        .annotate(count=Count("pk"))
        .order_by("merchant_site_id", "-count", "status")
    )
    for row in statuses:
        rows[row["merchant_site_id"]].by_status.append((row["status"], row["count"]))

    if connection.vendor == "postgresql":
        medians, method = _medians_postgresql(jobs), "percentile_cont"
    else:
        medians, method = _medians_windowed(jobs), "window"
    for merchant_site_id, values in medians.items():
        if merchant_site_id in rows:
            rows[merchant_site_id].median_to_success = values["to_success"]
            rows[merchant_site_id].median_to_first_prompt = values["to_first_prompt"]

    _add_previous_period(rows, date_from, date_to, merchant_site)
    return Report(
        date_from=date_from,
        date_to=date_to,
        merchant_site=merchant_site,
        rows=list(rows.values()),
        days=_days(jobs, date_from, date_to),
        median_method=method,
    )


def _add_previous_period(
    rows: dict[int, MerchantRow],
    date_from: date,
    date_to: date,
    merchant_site: MerchantSite | None,
) -> None:
    length = date_to - date_from + timedelta(days=1)
    before = _jobs_in_range(
        date_from - length, date_from - timedelta(days=1), merchant_site
    )
    previous = (
        before.filter(merchant_site_id__in=list(rows))
        .values("merchant_site_id")
        .annotate(
            billable=Count("pk", filter=Q(termination_type=TerminationType.BILLABLE)),
            rated=Count("pk", filter=Q(termination_type__in=RATED_TYPES)),
        )
    )
    for row in previous:
        rows[row["merchant_site_id"]].previous_billable = row["billable"]
        rows[row["merchant_site_id"]].previous_rated = row["rated"]


def _days(jobs: QuerySet[Job], date_from: date, date_to: date) -> list[DayRow]:
    per_day = (
        jobs.annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(
            in_progress=Count("pk", filter=Q(termination_type="")),
            never_started=Count("pk", filter=Q(termination_type=NEVER_STARTED)),
            **{
                f"type_{kind}": Count("pk", filter=Q(termination_type=kind))
                for kind in RATED_TYPES
            },
        )
        .order_by("day")
    )
    found = {row["day"]: row for row in per_day}
    days = []
    day = date_from
    while day <= date_to:
        row = found.get(day, {})
        days.append(
            DayRow(
                day=day,
                by_type={kind: row.get(f"type_{kind}", 0) for kind in RATED_TYPES},
                in_progress=row.get("in_progress", 0),
                never_started=row.get("never_started", 0),
            )
        )
        day += timedelta(days=1)
    return days


# Chart geometry, in SVG user units; the template only draws what is computed.
BAR_CHART_WIDTH = 720
BAR_LABEL_WIDTH = 220
BAR_HEIGHT = 22
BAR_GAP = 8
DAY_CHART_HEIGHT = 220
DAY_CHART_PADDING = 30
COLOURS = {
    TerminationType.BILLABLE: "#2e7d32",
    TerminationType.USER_DATA_FAILURE: "#f9a825",
    TerminationType.SITE_INTERACTION_FAILURE: "#c62828",
    TerminationType.PROCESS_FAILURE: "#6a1b9a",
    "": "#90a4ae",
}
TYPE_LABELS = {
    TerminationType.BILLABLE: "Success",
    TerminationType.USER_DATA_FAILURE: "User data failure",
    TerminationType.SITE_INTERACTION_FAILURE: "Site failure",
    TerminationType.PROCESS_FAILURE: "Process failure",
    "": "Not finished",
}


def success_rate_bars(report: Report) -> dict[str, Any]:
    """Horizontal bars, one per merchant site with a rate, labelled in text."""
    plot_width = BAR_CHART_WIDTH - BAR_LABEL_WIDTH - 60
    bars = []
    for index, row in enumerate(r for r in report.rows if r.success_rate is not None):
        rate = row.success_rate or 0.0
        bars.append(
            {
                "label": row.name,
                "y": index * (BAR_HEIGHT + BAR_GAP),
                "text_y": index * (BAR_HEIGHT + BAR_GAP) + BAR_HEIGHT * 0.7,
                "width": round(plot_width * rate, 1),
                "value_x": BAR_LABEL_WIDTH + round(plot_width * rate, 1) + 6,
                "value": f"{rate:.0%} of {row.rated}"
                + (f", down {-row.change_in_points} pts" if row.falling else ""),
                "falling": row.falling,
            }
        )
    return {
        "width": BAR_CHART_WIDTH,
        "height": max(len(bars), 1) * (BAR_HEIGHT + BAR_GAP),
        "label_width": BAR_LABEL_WIDTH,
        "label_x": BAR_LABEL_WIDTH - 8,
        "bar_height": BAR_HEIGHT,
        "colour": COLOURS[TerminationType.BILLABLE],
        "falling_colour": COLOURS[TerminationType.SITE_INTERACTION_FAILURE],
        "bars": bars,
    }


def outcome_day_bars(report: Report) -> dict[str, Any]:
    """Stacked bars per day: each outcome a segment, its count written on it."""
    kinds = [*RATED_TYPES, ""]
    peak = max((day.total for day in report.days), default=0) or 1
    slot = (BAR_CHART_WIDTH - DAY_CHART_PADDING) / max(len(report.days), 1)
    bar_width = max(slot * 0.7, 2)
    plot_height = DAY_CHART_HEIGHT - 2 * DAY_CHART_PADDING
    columns = []
    for index, day in enumerate(report.days):
        x = DAY_CHART_PADDING + index * slot
        top = DAY_CHART_HEIGHT - DAY_CHART_PADDING
        segments = []
        for kind in kinds:
            count = day.in_progress if kind == "" else day.by_type[kind]
            if not count:
                continue
            height = plot_height * count / peak
            top -= height
            segments.append(
                {
                    "kind": TYPE_LABELS[kind],
                    "count": count,
                    "y": round(top, 1),
                    "height": round(height, 1),
                    "colour": COLOURS[kind],
                    # Numbers go inside a segment only when they fit.
                    "show_count": height >= 12 and bar_width >= 14,
                    "text_y": round(top + height / 2 + 4, 1),
                }
            )
        columns.append(
            {
                "day": day.day,
                "x": round(x, 1),
                "centre": round(x + bar_width / 2, 1),
                "width": round(bar_width, 1),
                "total": day.total,
                "total_y": round(top - 4, 1),
                "segments": segments,
                # Label every day for a week, fewer for longer ranges.
                "show_label": len(report.days) <= 14
                or index % max(len(report.days) // 10, 1) == 0,
            }
        )
    legend = [
        {"label": TYPE_LABELS[kind], "colour": COLOURS[kind], "x": 10 + i * 140}
        for i, kind in enumerate(kinds)
    ]
    return {
        "width": BAR_CHART_WIDTH,
        "height": DAY_CHART_HEIGHT + 30,
        "axis_y": DAY_CHART_HEIGHT - DAY_CHART_PADDING,
        "label_y": DAY_CHART_HEIGHT - DAY_CHART_PADDING + 14,
        "legend_y": DAY_CHART_HEIGHT + 10,
        "peak": peak,
        "columns": columns,
        "legend": legend,
    }


CSV_HEADER = [
    "merchant_site_id",
    "merchant_site",
    "host",
    "jobs",
    "never_started",
    "in_progress",
    *[kind.value for kind in RATED_TYPES],
    "other_termination_types",
    "success_rate",
    "previous_success_rate",
    "needed_input_share",
    "median_seconds_to_success",
    "median_seconds_to_first_prompt",
    "final_statuses",
]


def _cell(value: Any) -> Any:
    # Spreadsheets run cells starting with these as formulas; merchant names
    # come from CardSavr, so they are defused.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _seconds(value: timedelta | None) -> str:
    return "" if value is None else f"{value.total_seconds():.1f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def report_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for row in report.rows:
        writer.writerow(
            [
                row.merchant_site_id,
                _cell(row.name),
                _cell(row.host),
                row.jobs,
                row.never_started,
                row.in_progress,
                *[row.by_type.get(kind, 0) for kind in RATED_TYPES],
                row.other_types,
                _ratio(row.success_rate),
                _ratio(row.previous_success_rate),
                _ratio(row.needed_input_share),
                _seconds(row.median_to_success),
                _seconds(row.median_to_first_prompt),
                _cell("; ".join(f"{status}={n}" for status, n in row.by_status)),
            ]
        )
    return out.getvalue()
