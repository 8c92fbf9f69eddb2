import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest

from jobs import reports
from jobs.models import TerminationType
from tests.operators.conftest import make_cardholder, make_job, make_site

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
B = TerminationType.BILLABLE
UDF = TerminationType.USER_DATA_FAILURE
SIF = TerminationType.SITE_INTERACTION_FAILURE
PF = TerminationType.PROCESS_FAILURE
NS = TerminationType.NEVER_STARTED


@pytest.fixture
def known_jobs():
    """Netflix: 3 successes, 1 TFA failure, 2 never started, 1 running.

    Hulu: 1 site failure, 1 process failure. One Netflix job falls outside the
    range and must not be counted.
    """
    netflix, hulu = make_site("Netflix"), make_site("Hulu")
    ann = make_cardholder("ann")
    for minutes in (2, 4, 9):
        make_job(
            ann,
            netflix,
            created=DAY,
            status="SUCCESSFUL",
            termination_type=B,
            success_after=timedelta(minutes=minutes),
            prompt_after=timedelta(seconds=minutes * 10),
        )
    make_job(
        ann,
        netflix,
        created=DAY + timedelta(days=1),
        status="TOO_MANY_TFA_FAILURES",
        termination_type=UDF,
        prompt_after=timedelta(seconds=50),
    )
    make_job(ann, netflix, created=DAY, status="CANCELLED", termination_type=NS)
    make_job(
        ann,
        netflix,
        created=DAY,
        status="ABANDONED",
        termination_type=NS,
        prompt_after=timedelta(seconds=1),
    )
    make_job(ann, netflix, created=DAY, status="UPDATING")
    make_job(ann, hulu, created=DAY, status="UNEXPECTED_ERROR", termination_type=SIF)
    make_job(ann, hulu, created=DAY, status="INTERNAL_ERROR", termination_type=PF)
    make_job(
        ann,
        netflix,
        created=DAY - timedelta(days=30),
        status="SUCCESSFUL",
        termination_type=B,
        success_after=timedelta(minutes=1),
    )
    return netflix, hulu


def _report():
    return reports.placement_report(date(2026, 11, 1), date(2026, 11, 7))


def _row(report, name):
    return next(row for row in report.rows if row.name == name)


def test_success_rate_counts_only_the_four_rated_termination_types(known_jobs):
    netflix = _row(_report(), "Netflix")

    assert netflix.rated == 4
    assert netflix.success_rate == pytest.approx(3 / 4)


def test_never_started_jobs_are_counted_apart(known_jobs):
    netflix = _row(_report(), "Netflix")

    assert netflix.never_started == 2
    assert netflix.jobs == 5  # 3 successes, 1 failure, 1 running


def test_counts_by_termination_type_and_running(known_jobs):
    report = _report()
    netflix, hulu = _row(report, "Netflix"), _row(report, "Hulu")

    assert netflix.by_type == {B: 3, UDF: 1, SIF: 0, PF: 0}
    assert netflix.in_progress == 1
    assert hulu.by_type == {B: 0, UDF: 0, SIF: 1, PF: 1}
    assert hulu.success_rate == 0


def test_counts_by_final_status(known_jobs):
    netflix = _row(_report(), "Netflix")

    assert dict(netflix.by_status) == {
        "SUCCESSFUL": 3,
        "TOO_MANY_TFA_FAILURES": 1,
        "CANCELLED": 1,
        "ABANDONED": 1,
    }


def test_share_needing_input_leaves_never_started_out(known_jobs):
    netflix = _row(_report(), "Netflix")

    assert netflix.needed_input == 4
    assert netflix.needed_input_share == pytest.approx(4 / 5)


def test_median_time_to_success(known_jobs):
    assert _row(_report(), "Netflix").median_to_success == timedelta(minutes=4)


def test_median_time_to_first_prompt_of_an_even_count_is_the_middle_mean(
    known_jobs,
):
    # Prompts after 20, 40, 90 and 50 seconds; the abandoned job's is left out.
    netflix = _row(_report(), "Netflix")

    assert netflix.median_to_first_prompt == timedelta(seconds=45)


def test_jobs_outside_the_range_are_left_out(known_jobs):
    report = reports.placement_report(date(2026, 10, 1), date(2026, 10, 7))

    assert [(row.name, row.by_type[B]) for row in report.rows] == [("Netflix", 1)]


def test_report_for_one_merchant_site(known_jobs):
    _, hulu = known_jobs

    report = reports.placement_report(date(2026, 11, 1), date(2026, 11, 7), hulu)

    assert [row.name for row in report.rows] == ["Hulu"]


def test_outcomes_per_day_cover_every_day_of_the_range(known_jobs):
    days = _report().days

    assert [d.day for d in days] == [date(2026, 11, n) for n in range(1, 8)]
    third = days[2]
    assert (third.by_type[B], third.by_type[SIF], third.by_type[PF]) == (3, 1, 1)
    assert (third.in_progress, third.never_started) == (1, 2)
    assert days[3].by_type[UDF] == 1


def test_totals_add_up_across_merchant_sites(known_jobs):
    totals = _report().totals

    assert (totals.jobs, totals.never_started, totals.rated) == (7, 2, 6)
    assert totals.success_rate == pytest.approx(3 / 6)


def test_csv_holds_the_same_figures_as_the_table(known_jobs):
    report = _report()

    rows = list(csv.DictReader(io.StringIO(reports.report_csv(report))))

    netflix = next(row for row in rows if row["merchant_site"] == "Netflix")
    assert netflix["jobs"] == "5"
    assert netflix["never_started"] == "2"
    assert netflix["BILLABLE"] == "3"
    assert netflix["success_rate"] == "0.7500"
    assert netflix["median_seconds_to_success"] == "240.0"
    assert netflix["median_seconds_to_first_prompt"] == "45.0"
    assert len(rows) == len(report.rows)


def test_csv_defuses_spreadsheet_formulas_in_merchant_names(db):
    site = make_site("=HYPERLINK(1)", host="evil.example")
    make_job(make_cardholder("bob"), site, created=DAY, termination_type=B)

    text = reports.report_csv(_report())

    assert "'=HYPERLINK(1)" in text


def test_query_count_does_not_grow_with_jobs(
    known_jobs, django_assert_num_queries, django_assert_max_num_queries
):
    # Five on PostgreSQL (medians in the main aggregate), six elsewhere.
    with django_assert_max_num_queries(6) as few:
        _report()
    netflix, hulu = known_jobs
    extra = make_site("Disney")
    for n in range(30):
        make_job(
            make_cardholder(f"more{n}"),
            [netflix, hulu, extra][n % 3],
            created=DAY,
            termination_type=B,
            success_after=timedelta(minutes=n),
            prompt_after=timedelta(seconds=n),
        )

    with django_assert_num_queries(len(few.captured_queries)):
        _report()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(45.4, "45 s"), (232, "3 min 52 s"), (7500, "2 h 5 min")],
)
def test_durations_read_as_an_operator_would_say_them(seconds, text):
    assert reports.duration_text(timedelta(seconds=seconds)) == text


def _finished(site, cardholder, created, successes: int, failures: int) -> None:
    for n in range(successes + failures):
        make_job(
            cardholder,
            site,
            created=created,
            status="SUCCESSFUL" if n < successes else "TIMEOUT_TFA",
            termination_type=B if n < successes else UDF,
        )


def test_success_rate_is_compared_with_the_period_before(db):
    site, ann = make_site("Netflix"), make_cardholder("ann")
    _finished(site, ann, DAY, successes=5, failures=5)
    _finished(site, ann, DAY - timedelta(days=7), successes=9, failures=1)

    row = _row(_report(), "Netflix")

    assert (row.previous_billable, row.previous_rated) == (9, 10)
    assert row.change_in_points == -40
    assert row.falling is True


def test_a_drop_on_few_jobs_is_not_flagged_as_falling(db):
    site, ann = make_site("Netflix"), make_cardholder("ann")
    _finished(site, ann, DAY, successes=1, failures=2)
    _finished(site, ann, DAY - timedelta(days=7), successes=3, failures=0)

    row = _row(_report(), "Netflix")

    assert row.change_in_points == -67
    assert row.falling is False
