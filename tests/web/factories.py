"""Cardholders, sites and jobs written straight to the database."""

from __future__ import annotations

import itertools
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from jobs.models import Card, Cardholder, CredentialRequest, Job, MerchantSite

PASSWORD = "portal-test-pass-7"
_ids = itertools.count(1)

TFA_LINK = [{"key_name": "tfa", "label": "Code", "secret": True}]
CREDENTIALS_LINK = [
    {"key_name": "username", "label": "Email", "secret": False},
    {"key_name": "password", "label": "Password", "secret": True},
]
SECURITY_LINK = [
    {"key_name": "security_1", "label": "Your first pet's name?", "secret": True},
    {"key_name": "security_2", "label": "Your mother's maiden name?", "secret": True},
]
PUSH_LINK = [
    {"key_name": "tfa_message", "label": "Tap 54 in the Shop app", "secret": False}
]


def make_cardholder(username: str, *, card: bool = True) -> Cardholder:
    user = get_user_model().objects.create_user(
        username, password=PASSWORD, first_name=username.title()
    )
    number = next(_ids)
    holder = Cardholder.objects.create(
        user=user, cuid=f"cuid-{username}-{number}", cardsavr_id=80000 + number
    )
    if card:
        Card.objects.create(
            cardholder=holder,
            cardsavr_id=60000 + number,
            last4="4242",
            brand="Visa",
            expiration_month=4,
            expiration_year=timezone.now().year + 2,
        )
    return holder


def make_site(name: str | None = None, **fields) -> MerchantSite:
    number = next(_ids)
    return MerchantSite.objects.create(
        cardsavr_id=90000 + number,
        name=name or f"Shop {number}",
        host=fields.pop("host", f"shop{number}.example"),
        **fields,
    )


def make_job(
    cardholder: Cardholder,
    *,
    site: MerchantSite | None = None,
    request_type: str | None = None,
    account_link: list | None = None,
    seconds_left: int = 200,
    **fields,
) -> Job:
    number = next(_ids)
    values = {
        "status": "PENDING" if request_type else "UPDATING",
        "percent_complete": 40,
        "outcome": "needs_input" if request_type else "in_progress",
        "deadline": timezone.now() + timedelta(seconds=seconds_left),
    }
    values.update(fields)
    job = Job.objects.create(
        cardsavr_id=70000 + number,
        cardholder=cardholder,
        merchant_site=site or make_site(),
        **values,
    )
    if request_type:
        CredentialRequest.objects.create(
            job=job,
            envelope_id=f"env{number}==",
            type=request_type,
            account_link=account_link or TFA_LINK,
            opened_at=timezone.now(),
        )
    return job


def logged_in_client(cardholder: Cardholder, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(cardholder.user)
    return client
