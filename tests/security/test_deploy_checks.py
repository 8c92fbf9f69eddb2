"""Production settings pass Django's deployment checklist and the project's checks."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

from channels.layers import InMemoryChannelLayer
from django.core.checks import run_checks
from django.test import override_settings

from cardsavr_portal import checks

ROOT = Path(__file__).resolve().parents[2]


def production_environment(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "CARDSAVR_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="cardsavr_portal.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        DJANGO_ALLOWED_HOSTS="portal.example.com",
        DJANGO_CSRF_TRUSTED_ORIGINS="https://portal.example.com",
        DATABASE_URL="postgres://portal@db.internal:5432/portal",
        REDIS_URL="redis://redis.internal:6379/0",
        CARDSAVR_API_URL="https://api.example.cardsavr.io/",
        CARDSAVR_APP_KEY=secrets.token_urlsafe(32),
        CARDSAVR_PASSWORD=secrets.token_urlsafe(24),
    )
    env.update(extra)
    return env


def run_deploy_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_deploy_check_is_clean_with_production_settings():
    result = run_deploy_check(production_environment())
    assert result.returncode == 0, result.stdout + result.stderr


def test_deploy_check_fails_when_allowed_hosts_is_a_wildcard():
    result = run_deploy_check(production_environment(DJANGO_ALLOWED_HOSTS="*"))
    assert result.returncode != 0
    assert "portal.E001" in result.stderr


def test_production_settings_refuse_to_start_without_a_secret_key():
    env = production_environment()
    del env["DJANGO_SECRET_KEY"]
    result = run_deploy_check(env)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def errors_with_id(check_id: str) -> list:
    return [m for m in run_checks() if m.id == check_id]


@override_settings(ALLOWED_HOSTS=["portal.example.com", "*"])
def test_wildcard_allowed_hosts_is_an_error():
    assert errors_with_id("portal.E001")


@override_settings(CARDSAVR_API_URL="http://api.example.cardsavr.io/")
def test_cardsavr_url_without_https_is_an_error():
    assert errors_with_id("portal.E002")


@override_settings(
    REDIS_URL="redis://127.0.0.1:6379/0",
    CHANNEL_LAYERS={"default": {"BACKEND": checks.IN_MEMORY_LAYER}},
)
def test_in_memory_channel_layer_with_redis_url_is_an_error():
    assert errors_with_id("portal.E003")


class ProcessLocalLayer(InMemoryChannelLayer):
    """Any subclass of the in-memory layer lives in one process just the same."""


@override_settings(
    REDIS_URL="redis://127.0.0.1:6379/0",
    CHANNEL_LAYERS={
        "default": {"BACKEND": f"{__name__}.ProcessLocalLayer"},
    },
)
def test_subclass_of_the_in_memory_layer_with_redis_url_is_an_error():
    assert errors_with_id("portal.E003")


@override_settings(
    REDIS_URL="redis://127.0.0.1:6379/0",
    CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
)
def test_local_memory_cache_with_redis_url_is_an_error():
    assert errors_with_id("portal.E004")


@override_settings(
    WEBSOCKET_TIMEOUT=7200,
    CHANNEL_LAYERS={
        "default": {"BACKEND": checks.IN_MEMORY_LAYER, "CONFIG": {"group_expiry": 3600}}
    },
)
def test_group_expiry_shorter_than_websocket_timeout_is_an_error():
    assert errors_with_id("portal.E006")


def test_development_settings_raise_no_project_errors():
    assert [m for m in run_checks() if m.id.startswith("portal.")] == []


def test_daphne_older_than_4_2_2_is_an_error(monkeypatch):
    monkeypatch.setattr(checks, "version", lambda name: "4.2.1")
    messages = checks.check_daphne_version(None)
    assert [m.id for m in messages] == ["portal.E007"]


def test_installed_daphne_passes_the_version_check():
    assert checks.check_daphne_version(None) == []
