import csv
import io
import re
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from jobs import reports
from jobs.models import TerminationType
from tests.operators.conftest import make_cardholder, make_job, make_site

pytestmark = pytest.mark.django_db

URL = "/admin/jobs/report/"


@pytest.fixture
def this_week():
    netflix, hulu = make_site("Netflix"), make_site("Hulu")
    ann = make_cardholder("ann")
    now = timezone.now() - timedelta(hours=1)
    for _ in range(3):
        make_job(
            ann,
            netflix,
            created=now,
            status="SUCCESSFUL",
            termination_type=TerminationType.BILLABLE,
            success_after=timedelta(minutes=3),
        )
    make_job(
        ann,
        netflix,
        created=now,
        status="TIMEOUT_TFA",
        termination_type=TerminationType.USER_DATA_FAILURE,
    )
    make_job(
        ann,
        netflix,
        created=now,
        status="CANCELLED",
        termination_type=TerminationType.NEVER_STARTED,
    )
    make_job(
        ann,
        hulu,
        created=now,
        status="UNEXPECTED_ERROR",
        termination_type=TerminationType.SITE_INTERACTION_FAILURE,
    )
    return netflix, hulu


def test_report_is_wired_into_the_admin():
    assert reverse("admin:jobs_report") == URL


def test_operator_sees_success_rates_for_this_week(operator_client, this_week):
    response = operator_client.get(URL)

    assert response.status_code == HTTPStatus.OK
    rows = {row.name: row for row in response.context["report"].rows}
    assert rows["Netflix"].success_rate == pytest.approx(0.75)
    assert rows["Netflix"].never_started == 1
    text = response.content.decode()
    assert "75% of 4" in text  # the bar's text label
    assert "Hulu" in text


def test_report_charts_are_inline_svg_without_script_or_style(
    operator_client, this_week
):
    response = operator_client.get(URL)

    text = response.content.decode()
    main = text[text.index('<div id="content-main">') :]
    assert main.count('<svg role="img"') == 2
    assert "<script" not in main
    assert "style=" not in main
    assert not re.search(r"<script(?![^>]*\bsrc=)", text)


def test_report_opens_on_the_last_seven_days(operator_client):
    today = timezone.localdate()

    response = operator_client.get(URL)

    report = response.context["report"]
    assert (report.date_from, report.date_to) == (today - timedelta(days=6), today)
    assert f'value="{today.isoformat()}"' in response.content.decode()


def test_report_for_one_merchant_site(operator_client, this_week):
    _, hulu = this_week

    response = operator_client.get(URL, {"merchant_site": hulu.pk})

    assert [row.name for row in response.context["report"].rows] == ["Hulu"]


def test_csv_download_matches_the_page(operator_client, this_week):
    page = operator_client.get(URL)

    response = operator_client.get(URL, {"format": "csv"})

    assert response.status_code == HTTPStatus.OK
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    assert response.content.decode() == reports.report_csv(page.context["report"])
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert {row["merchant_site"]: row["success_rate"] for row in rows} == {
        "Hulu": "0.0000",
        "Netflix": "0.7500",
    }


def test_reversed_dates_are_refused_with_a_clear_error(operator_client, this_week):
    response = operator_client.get(
        URL, {"date_from": "2026-11-09", "date_to": "2026-11-01"}
    )

    assert response.status_code == HTTPStatus.OK
    assert "The start date is after the end date." in response.content.decode()


def test_a_range_over_a_year_is_refused(operator_client):
    response = operator_client.get(
        URL, {"date_from": "2024-01-01", "date_to": "2026-01-01"}
    )

    assert "Choose a range of at most 366 days." in response.content.decode()
    report = response.context["report"]
    assert (report.date_to - report.date_from).days == 6


def test_csv_with_bad_dates_is_a_bad_request(operator_client):
    response = operator_client.get(URL, {"format": "csv", "date_from": "yesterday"})

    assert response.status_code == HTTPStatus.BAD_REQUEST


def test_staff_without_view_permission_is_refused(client):
    client.force_login(User.objects.create_user("stan", is_staff=True))

    response = client.get(URL)

    assert response.status_code == HTTPStatus.FORBIDDEN


def test_anonymous_visitor_is_sent_to_the_admin_login(client):
    response = client.get(URL)

    assert response.status_code == HTTPStatus.FOUND
    assert reverse("admin:login") in response["Location"]


def test_admin_index_links_to_the_report(operator_client):
    response = operator_client.get(reverse("admin:index"))

    assert f'href="{URL}"' in response.content.decode()


def test_merchant_site_list_links_to_its_report(operator_client, this_week):
    netflix, _ = this_week

    response = operator_client.get(reverse("admin:jobs_merchantsite_changelist"))

    assert f"{URL}?merchant_site={netflix.pk}" in response.content.decode()


def test_falling_merchant_is_called_out_in_words(operator_client, this_week):
    netflix, _ = this_week
    ann = netflix.jobs.first().cardholder
    for _ in range(12):
        make_job(
            ann,
            netflix,
            created=timezone.now() - timedelta(days=9),
            status="SUCCESSFUL",
            termination_type=TerminationType.BILLABLE,
        )
    for _ in range(8):
        make_job(
            ann,
            netflix,
            created=timezone.now() - timedelta(hours=2),
            status="TIMEOUT_TFA",
            termination_type=TerminationType.USER_DATA_FAILURE,
        )

    response = operator_client.get(URL)

    text = response.content.decode()
    assert "Falling: Netflix succeeded in 25% of 12 finished jobs" in text
    assert "down 75 points from 100%" in text
