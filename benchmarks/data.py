"""Bulk fixtures in the benchmark's own database: logins, sessions, jobs.

Rows are written with bulk_create so that setting up 10,000 cardholders takes
seconds; none of this is a code path being measured.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone
from django.utils.crypto import get_random_string

from jobs.models import Cardholder, Job, MerchantSite

BACKEND = "django.contrib.auth.backends.ModelBackend"
BENCH_LOGO = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    b'<rect width="32" height="32" fill="#246"/></svg>'
)


def check_database_is_ours(workdir: str) -> None:
    name = str(settings.DATABASES["default"]["NAME"])
    if not name.startswith(workdir):
        raise RuntimeError(f"refusing to run against {name}: not a benchmark database")


def cardholders(
    prefix: str, count: int, first_cardsavr_id: int = 1
) -> list[Cardholder]:
    """Create `count` logins, each with a cardholder."""
    users = User.objects.bulk_create(
        User(username=f"{prefix}{i}", password="!bench") for i in range(count)
    )
    return Cardholder.objects.bulk_create(
        Cardholder(user=user, cuid=f"{prefix}{i}", cardsavr_id=first_cardsavr_id + i)
        for i, user in enumerate(users)
    )


def sessions(holders: list[Cardholder]) -> list[str]:
    """One signed-in session per cardholder; returns the session keys."""
    store = SessionStore()
    expire = timezone.now() + timedelta(days=1)
    rows = []
    for holder in holders:
        user = holder.user
        key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
        data = {
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: BACKEND,
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        }
        rows.append(
            Session(
                session_key=key, session_data=store.encode(data), expire_date=expire
            )
        )
    Session.objects.bulk_create(rows, batch_size=2000)
    return [row.session_key for row in rows]


def merchant_site(cardsavr_id: int = 1) -> MerchantSite:
    # With a logo, as the sites syncmerchants stores: every payload names it.
    site, _ = MerchantSite.objects.get_or_create(
        cardsavr_id=cardsavr_id,
        defaults={
            "name": "Bench Merchant",
            "host": "bench.example.com",
            "logo": BENCH_LOGO,
            "logo_content_type": "image/svg+xml",
        },
    )
    return site


def jobs(
    holders: list[Cardholder], cardsavr_ids: list[int], site: MerchantSite
) -> list[Job]:
    """One portal job per (cardholder, CardSavr job id), as the portal mirrors it."""
    now = timezone.now()
    return Job.objects.bulk_create(
        (
            Job(
                cardsavr_id=cardsavr_id,
                cardholder=holder,
                merchant_site=site,
                status="REQUESTED",
                last_synced_at=now,
            )
            for holder, cardsavr_id in zip(holders, cardsavr_ids, strict=True)
        ),
        batch_size=2000,
    )


def wipe_jobs() -> None:
    Job.objects.all().delete()


def sample_payload(job_id: int, cardholder_id: int) -> dict:
    """A job frame of the contract's shape and a realistic size (about 600 B)."""
    return {
        "id": job_id,
        "merchant_site": {
            "id": 1,
            "name": "Bench Merchant",
            "host": "bench.example.com",
            "logo": f"/merchant-sites/1/logo/?c={cardholder_id}",
        },
        "status": "PENDING_TFA",
        "status_message": "Enter the code we sent to your phone.",
        "percent_complete": 42.0,
        "auth_percent_complete": 80.0,
        "termination_type": None,
        "outcome": "needs_input",
        "deadline": "2026-12-03T16:05:00+00:00",
        "seconds_left": 240,
        "version": 1,
        "credential_request": {
            "envelope_id": f"env-{job_id:08d}-bench",
            "type": "tfa_request",
            "account_link": [
                {"key_name": "tfa", "label": "One-time code", "secret": True}
            ],
            "status_message": "Enter the code we sent to your phone.",
        },
    }
