"""Every page and API answer carries the strict policy and is never cached."""

import re

import pytest
from django.http import HttpResponse, JsonResponse
from django.test import RequestFactory, override_settings

from cardsavr_portal.middleware import SecurityHeadersMiddleware
from jobs.models import Card

from .factories import make_cardholder, make_job


def through_middleware(request, response):
    return SecurityHeadersMiddleware(lambda r: response)(request)


def test_policy_allows_only_the_portal_and_its_own_websocket():
    request = RequestFactory().get("/", HTTP_HOST="127.0.0.1")
    response = through_middleware(request, HttpResponse("page"))
    policy = response["Content-Security-Policy"]
    assert policy == (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self' ws://127.0.0.1; "
        "frame-ancestors 'none'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'"
    )


def test_policy_names_the_secure_websocket_on_https():
    request = RequestFactory().get("/", HTTP_HOST="127.0.0.1", secure=True)
    response = through_middleware(request, HttpResponse("page"))
    assert "connect-src 'self' wss://127.0.0.1;" in response["Content-Security-Policy"]


def test_policy_never_allows_inline_script_or_eval():
    request = RequestFactory().get("/", HTTP_HOST="127.0.0.1")
    policy = through_middleware(request, HttpResponse())["Content-Security-Policy"]
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy


@override_settings(ALLOWED_HOSTS=["127.0.0.1"])
def test_foreign_host_gets_a_policy_without_a_websocket():
    request = RequestFactory().get("/", HTTP_HOST="evil.example")
    policy = through_middleware(request, HttpResponse(status=400))[
        "Content-Security-Policy"
    ]
    assert "connect-src 'self';" in policy
    assert "evil.example" not in policy


def test_api_answers_are_not_stored_by_any_cache():
    request = RequestFactory().get("/api/jobs/", HTTP_HOST="127.0.0.1")
    response = through_middleware(request, JsonResponse({"jobs": []}))
    assert "no-store" in response["Cache-Control"]
    assert "private" in response["Cache-Control"]


def test_a_view_that_chose_its_own_caching_keeps_it():
    request = RequestFactory().get("/logos/1/", HTTP_HOST="127.0.0.1")
    logo = HttpResponse(b"<svg/>", content_type="image/svg+xml")
    logo["Cache-Control"] = "public, max-age=86400"
    response = through_middleware(request, logo)
    assert response["Cache-Control"] == "public, max-age=86400"


def test_static_files_are_left_cacheable():
    request = RequestFactory().get("/static/app.js", HTTP_HOST="127.0.0.1")
    response = through_middleware(request, HttpResponse("js"))
    assert "Cache-Control" not in response


def test_real_pages_carry_every_security_header(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "no-store" in response["Cache-Control"]


INLINE_SCRIPT = re.compile(
    r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.IGNORECASE
)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
INLINE_STYLE = re.compile(r"<style|\sstyle\s*=", re.IGNORECASE)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/card/", "/start/", "/accounts/login/"])
def test_pages_need_nothing_the_policy_forbids(client, path):
    holder = make_cardholder("alice")
    make_job(holder, envelope_id="cHJvbXB0LWVudmVsb3Bl")
    Card.objects.create(
        cardholder=holder,
        cardsavr_id=7777,
        last4="1111",
        expiration_month=12,
        expiration_year=2030,
    )
    if path != "/accounts/login/":
        client.force_login(holder.user)
    response = client.get(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert INLINE_SCRIPT.findall(html) == []
    assert INLINE_HANDLER.findall(html) == []
    assert INLINE_STYLE.findall(html) == []


async def test_async_requests_get_the_headers_without_leaving_the_event_loop():
    async def view(request):
        return JsonResponse({"ok": True})

    middleware = SecurityHeadersMiddleware(view)
    request = RequestFactory().get("/api/jobs/", HTTP_HOST="127.0.0.1")

    response = await middleware(request)

    assert "connect-src 'self' ws://127.0.0.1;" in response["Content-Security-Policy"]
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
async def test_api_answers_over_asgi_carry_the_policy(async_client):
    response = await async_client.get("/api/jobs/")

    assert response.status_code == 401
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
