from datetime import timedelta
from http import HTTPStatus

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.urls import reverse
from django.utils import timezone

from jobs.models import (
    Card,
    Cardholder,
    CredentialRequest,
    Job,
    JobEvent,
    MerchantSite,
    ReplyState,
    TerminationType,
    WebhookNotification,
)
from tests.operators.conftest import make_cardholder, make_job, make_site

pytestmark = pytest.mark.django_db

MODELS = [
    Cardholder,
    Card,
    MerchantSite,
    Job,
    CredentialRequest,
    JobEvent,
    WebhookNotification,
]


def changelist(model) -> str:
    return reverse(f"admin:jobs_{model._meta.model_name}_changelist")


def change(obj) -> str:
    return reverse(f"admin:jobs_{obj._meta.model_name}_change", args=[obj.pk])


@pytest.fixture
def failed_netflix_job() -> Job:
    ann = make_cardholder("ann")
    Card.objects.create(
        cardholder=ann,
        cardsavr_id=77,
        last4="1111",
        brand="Visa",
        expiration_month=12,
        expiration_year=2030,
    )
    job = make_job(
        ann,
        make_site("Netflix", host="netflix.com"),
        status="TOO_MANY_TFA_FAILURES",
        termination_type=TerminationType.USER_DATA_FAILURE,
        status_message="The code was wrong twice.",
        prompt_after=None,
    )
    CredentialRequest.objects.create(
        job=job,
        envelope_id="env-tfa-1",
        type="tfa",
        account_link=[{"key_name": "tfa", "label": "Code from your phone"}],
        opened_at=job.created_at,
        answered_at=job.created_at,
        reply_state=ReplyState.SENT,
        close_reason="answered",
        closed_at=job.created_at,
    )
    JobEvent.objects.create(
        job=job, kind=JobEvent.Kind.TERMINATED, status="TOO_MANY_TFA_FAILURES"
    )
    WebhookNotification.objects.create(
        nonce="1", body_sha256="a" * 64, cuid="cuid-ann", job_ids=[job.cardsavr_id]
    )
    return job


def test_operators_group_may_view_everything_and_act_but_change_nothing():
    group = Group.objects.get(name="operators")

    codenames = set(group.permissions.values_list("codename", flat=True))

    assert codenames == {
        *(f"view_{model._meta.model_name}" for model in MODELS),
        "act_on_job",
    }


def test_act_permission_is_named_for_what_it_allows():
    permission = Permission.objects.get(codename="act_on_job")

    assert permission.content_type.model_class() is Job
    assert permission.name == "Can cancel and refresh jobs at CardSavr"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.model_name)
def test_superuser_sees_every_changelist(superuser_client, failed_netflix_job, model):
    response = superuser_client.get(changelist(model))

    assert response.status_code == HTTPStatus.OK


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.model_name)
def test_operator_sees_every_changelist(operator_client, failed_netflix_job, model):
    response = operator_client.get(changelist(model))

    assert response.status_code == HTTPStatus.OK


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.model_name)
def test_every_change_page_opens(superuser_client, failed_netflix_job, model):
    obj = model.objects.first()

    response = superuser_client.get(change(obj))

    assert response.status_code == HTTPStatus.OK


@pytest.mark.parametrize("term", ["ann", "Netflix", "netflix.com", "cuid-ann"], ids=str)
def test_job_search_finds_the_job(superuser_client, failed_netflix_job, term):
    other = make_job(make_cardholder("zed"), make_site("Hulu"))

    response = superuser_client.get(changelist(Job), {"q": term})

    shown = list(response.context["cl"].result_list)
    assert shown == [failed_netflix_job]
    assert other not in shown


def test_job_search_needs_every_word_to_match(superuser_client, failed_netflix_job):
    make_job(make_cardholder("zed"), failed_netflix_job.merchant_site)
    make_job(failed_netflix_job.cardholder, make_site("Hulu"))

    response = superuser_client.get(changelist(Job), {"q": "ann netflix"})

    assert list(response.context["cl"].result_list) == [failed_netflix_job]


def test_job_search_by_cardsavr_job_id(superuser_client, failed_netflix_job):
    make_job(make_cardholder("zed"), make_site("Hulu"))

    response = superuser_client.get(
        changelist(Job), {"q": str(failed_netflix_job.cardsavr_id)}
    )

    assert list(response.context["cl"].result_list) == [failed_netflix_job]


@pytest.mark.parametrize(
    ("params", "found"),
    [
        ({"outcome__exact": "failed"}, False),
        ({"termination_type": "USER_DATA_FAILURE"}, True),
        ({"termination_type": "BILLABLE"}, False),
        ({"termination_type": "none"}, False),
        ({"termination_type": "other"}, False),
        ({"attention": "waiting"}, False),
        ({"attention": "stuck"}, False),
        ({"attention": "vanished"}, False),
        ({"status": "TOO_MANY_TFA_FAILURES"}, True),
        ({"status": "SUCCESSFUL"}, False),
        ({"created_at__gte": "2000-01-01 00:00:00+00:00"}, True),
    ],
    ids=lambda v: str(v),
)
def test_job_filters(superuser_client, failed_netflix_job, params, found):
    response = superuser_client.get(changelist(Job), params)

    assert response.status_code == HTTPStatus.OK
    assert (failed_netflix_job in response.context["cl"].result_list) is found


def test_date_hierarchy_drills_down_to_the_day(superuser_client, failed_netflix_job):
    created = failed_netflix_job.created_at

    response = superuser_client.get(
        changelist(Job),
        {
            "created_at__year": created.year,
            "created_at__month": created.month,
            "created_at__day": created.day,
        },
    )

    assert list(response.context["cl"].result_list) == [failed_netflix_job]


@pytest.mark.parametrize(
    ("model", "params"),
    [
        (CredentialRequest, {"type__exact": "tfa"}),
        (CredentialRequest, {"reply_state__exact": "sent"}),
        (CredentialRequest, {"close_reason__exact": "answered"}),
        (JobEvent, {"kind__exact": "terminated"}),
        (WebhookNotification, {"event__exact": "session_complete"}),
    ],
    ids=str,
)
def test_other_lists_filter(superuser_client, failed_netflix_job, model, params):
    response = superuser_client.get(changelist(model), params)

    assert response.status_code == HTTPStatus.OK
    assert len(response.context["cl"].result_list) == 1


def test_merchant_site_filter(superuser_client, failed_netflix_job):
    hulu_job = make_job(make_cardholder("zed"), make_site("Hulu"))

    response = superuser_client.get(
        changelist(Job), {"merchant_site__id__exact": hulu_job.merchant_site_id}
    )

    assert list(response.context["cl"].result_list) == [hulu_job]


def test_outcome_filter(superuser_client, failed_netflix_job):
    Job.objects.filter(pk=failed_netflix_job.pk).update(outcome="failed")

    response = superuser_client.get(changelist(Job), {"outcome__exact": "failed"})

    assert list(response.context["cl"].result_list) == [failed_netflix_job]


def test_waiting_filter_finds_a_job_with_an_open_question(superuser_client):
    job = make_job(
        make_cardholder("ann"),
        make_site("Netflix"),
        prompt_after=timedelta(seconds=3),
    )

    response = superuser_client.get(changelist(Job), {"attention": "waiting"})

    assert list(response.context["cl"].result_list) == [job]


def test_stuck_filter_finds_a_running_job_without_news(superuser_client):
    site, ann = make_site("Netflix"), make_cardholder("ann")
    quiet = make_job(ann, site, created=timezone.now() - timedelta(minutes=30))
    make_job(ann, site)
    make_job(
        ann,
        site,
        created=timezone.now() - timedelta(hours=1),
        status="SUCCESSFUL",
        termination_type=TerminationType.BILLABLE,
    )

    response = superuser_client.get(changelist(Job), {"attention": "stuck"})

    assert list(response.context["cl"].result_list) == [quiet]


def test_job_page_of_a_stuck_job_suggests_a_refresh(superuser_client):
    job = make_job(
        make_cardholder("ann"),
        make_site("Netflix"),
        created=timezone.now() - timedelta(minutes=30),
    )

    response = superuser_client.get(change(job))

    assert "No news from CardSavr for 30" in response.content.decode()


def test_job_list_answers_who_where_and_how_at_a_glance(
    superuser_client, failed_netflix_job
):
    response = superuser_client.get(changelist(Job))

    text = response.content.decode()
    for expected in ("ann", "Netflix", "TOO_MANY_TFA_FAILURES", "USER_DATA_FAILURE"):
        assert expected in text


def test_job_list_query_count_does_not_grow_with_jobs(
    superuser_client, failed_netflix_job, django_assert_max_num_queries
):
    superuser_client.get(changelist(Job))  # warm the session and content types
    with django_assert_max_num_queries(50) as few:
        superuser_client.get(changelist(Job))
    site = make_site("Hulu")
    for n in range(20):
        make_job(make_cardholder(f"many{n}"), site, prompt_after=None)

    with django_assert_max_num_queries(len(few.captured_queries)):
        superuser_client.get(changelist(Job))


def test_job_page_explains_why_it_failed(superuser_client, failed_netflix_job):
    response = superuser_client.get(change(failed_netflix_job))

    text = response.content.decode()
    assert "User data failure" in text
    assert "The verification code was wrong too many times." in text
    assert "The code was wrong twice." in text
    assert "Code from your phone (tfa)" in text
    assert "Accepted by CardSavr" in text


def test_operator_sees_the_questions_and_timeline(operator_client, failed_netflix_job):
    response = operator_client.get(change(failed_netflix_job))

    text = response.content.decode()
    assert "Code from your phone (tfa)" in text
    assert "Timeline" in text
    assert 'name="_save"' not in text


def test_job_page_is_titled_with_who_and_where(superuser_client, failed_netflix_job):
    response = superuser_client.get(change(failed_netflix_job))

    assert (
        f"CardSavr job {failed_netflix_job.cardsavr_id}: ann at Netflix"
        in response.content.decode()
    )


def test_unknown_job_page_redirects_with_a_message(superuser_client):
    response = superuser_client.get(
        reverse("admin:jobs_job_change", args=["not-a-number"]), follow=True
    )

    assert response.status_code == HTTPStatus.OK
    assert "exist" in " ".join(str(m) for m in response.context["messages"])


def test_job_page_shows_the_timeline(superuser_client, failed_netflix_job):
    response = superuser_client.get(change(failed_netflix_job))

    assert "Timeline" in response.content.decode()
    assert "Finished" in response.content.decode()


def test_nothing_can_be_added_by_hand(superuser_client):
    for model in MODELS:
        url = reverse(f"admin:jobs_{model._meta.model_name}_add")

        assert superuser_client.get(url).status_code == HTTPStatus.FORBIDDEN


def test_mirrored_fields_are_read_only_even_for_a_superuser(
    superuser_client, failed_netflix_job
):
    response = superuser_client.post(
        change(failed_netflix_job), {"status": "SUCCESSFUL", "_save": "Save"}
    )

    failed_netflix_job.refresh_from_db()
    assert response.status_code in (HTTPStatus.OK, HTTPStatus.FOUND)
    assert failed_netflix_job.status == "TOO_MANY_TFA_FAILURES"


def test_operator_cannot_change_mirrored_data(operator_client, failed_netflix_job):
    response = operator_client.post(
        change(failed_netflix_job), {"status": "SUCCESSFUL", "_save": "Save"}
    )

    failed_netflix_job.refresh_from_db()
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert failed_netflix_job.status == "TOO_MANY_TFA_FAILURES"


def test_operator_cannot_delete_mirrored_data(operator_client, failed_netflix_job):
    url = reverse("admin:jobs_job_delete", args=[failed_netflix_job.pk])

    response = operator_client.post(url, {"post": "yes"})

    assert response.status_code == HTTPStatus.FORBIDDEN
    assert Job.objects.filter(pk=failed_netflix_job.pk).exists()


def test_operator_is_offered_the_actions(operator_client, failed_netflix_job):
    response = operator_client.get(changelist(Job))

    actions = [
        name for name, _ in response.context["action_form"].fields["action"].choices
    ]
    assert "cancel_at_cardsavr" in actions
    assert "refresh_from_cardsavr" in actions
    assert "delete_selected" not in actions


def test_staff_without_act_permission_sees_no_actions(client, failed_netflix_job):
    viewer = User.objects.create_user("vic", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(viewer)

    response = client.get(changelist(Job))

    assert response.status_code == HTTPStatus.OK
    assert response.context["action_form"] is None or not [
        name
        for name, _ in response.context["action_form"].fields["action"].choices
        if name
    ]


def test_staff_without_act_permission_cannot_post_an_action(client, failed_netflix_job):
    viewer = User.objects.create_user("vic", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(viewer)

    client.post(
        changelist(Job),
        {"action": "cancel_at_cardsavr", "_selected_action": [failed_netflix_job.pk]},
    )

    assert not LogEntry.objects.exists()


def test_cancel_leaves_finished_jobs_alone_and_says_so(
    operator_client, failed_netflix_job
):
    response = operator_client.post(
        changelist(Job),
        {"action": "cancel_at_cardsavr", "_selected_action": [failed_netflix_job.pk]},
        follow=True,
    )

    text = " ".join(str(m) for m in response.context["messages"])
    assert "Already finished" in text
    assert str(failed_netflix_job.cardsavr_id) in text


def test_too_many_jobs_in_one_action_are_refused(operator_client):
    site, ann = make_site("Netflix"), make_cardholder("ann")
    jobs = [make_job(ann, site) for _ in range(51)]

    response = operator_client.post(
        changelist(Job),
        {"action": "cancel_at_cardsavr", "_selected_action": [j.pk for j in jobs]},
        follow=True,
    )

    text = " ".join(str(m) for m in response.context["messages"])
    assert "at most 50" in text
    assert not LogEntry.objects.exists()
