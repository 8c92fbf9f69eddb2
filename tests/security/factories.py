"""Two cardholders with a job each, straight in the database."""

from __future__ import annotations

import itertools

from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from jobs.models import Cardholder, CredentialRequest, Job, MerchantSite

_ids = itertools.count(1)


def make_cardholder(username: str) -> Cardholder:
    user = get_user_model().objects.create_user(username, password="unused-pass-1")
    number = next(_ids)
    return Cardholder.objects.create(
        user=user, cuid=f"cuid-{username}", cardsavr_id=80000 + number
    )


def make_site() -> MerchantSite:
    number = next(_ids)
    return MerchantSite.objects.get_or_create(
        cardsavr_id=90000 + number,
        defaults={"name": f"Shop {number}", "host": f"shop{number}.example"},
    )[0]


def make_job(cardholder: Cardholder, *, envelope_id: str | None = None) -> Job:
    number = next(_ids)
    job = Job.objects.create(
        cardsavr_id=70000 + number,
        cardholder=cardholder,
        merchant_site=make_site(),
        status="PENDING_TFA" if envelope_id else "UPDATING",
    )
    if envelope_id:
        CredentialRequest.objects.create(
            job=job,
            envelope_id=envelope_id,
            type="tfa",
            account_link=[{"key_name": "tfa", "label": "Code", "secret": True}],
            opened_at=timezone.now(),
        )
    return job


def session_cookie(cardholder: Cardholder) -> str:
    client = Client()
    client.force_login(cardholder.user)
    return client.cookies["sessionid"].value
