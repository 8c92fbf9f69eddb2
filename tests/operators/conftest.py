import itertools
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from jobs.models import Cardholder, CredentialRequest, Job, MerchantSite

_ids = itertools.count(900_000)


def make_site(name: str, host: str = "") -> MerchantSite:
    return MerchantSite.objects.create(
        cardsavr_id=next(_ids),
        name=name,
        host=host or f"{name.lower()}.example",
        account_link=[
            {"key_name": "username", "label": "Email", "secret": False},
            {"key_name": "password", "label": "Password", "secret": True},
        ],
    )


def make_cardholder(username: str) -> Cardholder:
    user = User.objects.create_user(username=username)
    return Cardholder.objects.create(
        user=user, cardsavr_id=next(_ids), cuid=f"cuid-{username}"
    )


def make_job(
    cardholder: Cardholder,
    site: MerchantSite,
    *,
    created: datetime | None = None,
    status: str = "UPDATING",
    termination_type: str = "",
    success_after: timedelta | None = None,
    prompt_after: timedelta | None = None,
    status_message: str = "",
) -> Job:
    job = Job.objects.create(
        cardsavr_id=next(_ids),
        cardholder=cardholder,
        merchant_site=site,
        status=status,
        status_message=status_message,
        termination_type=termination_type,
    )
    created = created or timezone.now()
    completed = created + success_after if success_after is not None else None
    # created_at is auto_now_add; the report reads it, so tests set it.
    Job.objects.filter(pk=job.pk).update(
        created_at=created, cardsavr_created_on=created, completed_on=completed
    )
    if prompt_after is not None:
        CredentialRequest.objects.create(
            job=job,
            envelope_id=f"env-{job.cardsavr_id}",
            type="tfa",
            account_link=[{"key_name": "tfa", "label": "Code", "secret": True}],
            opened_at=created + prompt_after,
        )
    job.refresh_from_db()
    return job


@pytest.fixture
def operator(db) -> User:
    user = User.objects.create_user(username="olivia-operator", is_staff=True)
    user.groups.add(Group.objects.get(name="operators"))
    return user


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def superuser_client(client, db):
    # No password: hashing one is slow and force_login needs none.
    client.force_login(
        User.objects.create_superuser(username="sam-superuser", password=None)
    )
    return client
