"""Rate limits on sign-in and on credential replies, kept in the cache."""

import logging

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from jobs import ratelimit

pytestmark = pytest.mark.usefixtures("one_ratelimit_window")


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def test_hits_under_the_limit_pass():
    limit = ratelimit.Limit("test", limit=3, window=60)
    assert [ratelimit.hit(limit, "a") for _ in range(3)] == [None, None, None]


def test_hit_over_the_limit_says_how_long_to_wait():
    limit = ratelimit.Limit("test", limit=2, window=60)
    ratelimit.hit(limit, "a")
    ratelimit.hit(limit, "a")
    wait = ratelimit.hit(limit, "a")
    assert wait is not None
    assert 1 <= wait <= 60


def test_limits_are_counted_per_identity():
    limit = ratelimit.Limit("test", limit=1, window=60)
    ratelimit.hit(limit, "a")
    assert ratelimit.hit(limit, "a") is not None
    assert ratelimit.hit(limit, "b") is None


def test_cache_keys_do_not_contain_the_identity():
    limit = ratelimit.Limit("test", limit=1, window=60)
    key, _ = ratelimit._key(limit, "alice@example.com", 1000.0)
    assert "alice" not in key


@override_settings(RATELIMIT_LOGIN_PER_USERNAME=(2, 900))
@pytest.mark.django_db
def test_login_is_refused_with_429_after_too_many_failures(client, settings):
    settings.ROOT_URLCONF = "tests.security.urls"
    get_user_model().objects.create_user("alice", password="right-password-1")
    for _ in range(2):
        response = client.post(
            "/accounts/login/", {"username": "alice", "password": "wrong-password"}
        )
        assert response.status_code == 200
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "wrong"}
    )
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "Too many failed sign-in attempts" in response.content.decode()


@override_settings(RATELIMIT_LOGIN_PER_USERNAME=(1, 900))
@pytest.mark.django_db
def test_login_over_the_limit_does_not_sign_in_even_with_the_right_password(
    client, settings
):
    settings.ROOT_URLCONF = "tests.security.urls"
    get_user_model().objects.create_user("alice", password="right-password-1")
    client.post("/accounts/login/", {"username": "alice", "password": "wrong-password"})
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "right-password-1"}
    )
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_successful_login_is_not_counted(client, settings):
    settings.ROOT_URLCONF = "tests.security.urls"
    get_user_model().objects.create_user("alice", password="right-password-1")
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "right-password-1"}
    )
    assert response.status_code == 302
    assert ratelimit.retry_after(ratelimit.login_user_limit(), "alice") is None


def reply_view(request):
    return HttpResponse("accepted", status=202)


class FakeUser:
    is_authenticated = True
    pk = 41


@override_settings(RATELIMIT_REPLIES_PER_CARDHOLDER=(2, 600))
def test_reply_decorator_answers_429_json_on_the_api_after_the_limit():
    view = ratelimit.rate_limit_replies(reply_view)
    statuses = []
    for _ in range(3):
        request = RequestFactory().post("/api/jobs/1/reply/")
        request.user = FakeUser()
        statuses.append(view(request))
    assert [r.status_code for r in statuses] == [202, 202, 429]
    assert statuses[-1]["Content-Type"] == "application/json"
    assert statuses[-1]["Retry-After"]


async def fake_auser():
    return FakeUser()


@override_settings(RATELIMIT_REPLIES_PER_CARDHOLDER=(1, 600))
async def test_reply_decorator_works_on_async_views():
    async def async_view(request):
        return HttpResponse("accepted", status=202)

    view = ratelimit.rate_limit_replies(async_view)
    statuses = []
    for _ in range(2):
        request = RequestFactory().post("/jobs/1/reply/")

        request.auser = fake_auser
        statuses.append((await view(request)).status_code)
    assert statuses == [202, 429]


@override_settings(
    CACHES={
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            # Nothing listens on port 1: every cache call fails at once.
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
)
def test_an_unreachable_cache_lets_attempts_through_and_logs_it(caplog):
    limit = ratelimit.Limit("test", limit=1, window=60)
    with caplog.at_level(logging.WARNING, logger="jobs.ratelimit"):
        assert ratelimit.hit(limit, "a") is None
        assert ratelimit.hit(limit, "a") is None
    assert "not checked" in caplog.text


@pytest.fixture
def prompted_job(db, settings):
    from .factories import make_cardholder, make_job

    # Nothing answers here: a reply that gets through fails fast upstream.
    settings.CARDSAVR_API_URL = "https://127.0.0.1:1/"
    settings.CARDSAVR_CA_FILE = ""  # no sandbox certificate needed to fail
    settings.CARDSAVR_TIMEOUT = 1.0
    holder = make_cardholder("dora")
    job = make_job(holder, envelope_id="ZW52ZWxvcGUtb25lLXR3bw==")
    return holder, job


@override_settings(RATELIMIT_REPLIES_PER_CARDHOLDER=(1, 600))
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "as_json"),
    [("/api/jobs/{}/reply/", True), ("/jobs/{}/reply/", False)],
    ids=["api", "page"],
)
def test_replies_over_the_limit_get_429_on_every_reply_path(
    client, prompted_job, path, as_json
):
    holder, job = prompted_job
    client.force_login(holder.user)
    body = {"envelope_id": "ZW52ZWxvcGUtb25lLXR3bw==", "tfa": "1234"}
    statuses = []
    for _ in range(2):
        if as_json:
            response = client.post(
                path.format(job.pk),
                data={"envelope_id": body["envelope_id"], "account_link": {"tfa": "1"}},
                content_type="application/json",
            )
        else:
            response = client.post(path.format(job.pk), data=body)
        statuses.append(response.status_code)
    assert statuses[0] != 429
    assert statuses[1] == 429
    assert response["Retry-After"]
