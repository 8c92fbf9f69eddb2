"""Fixtures for the portal backend: rows in the database and CardSavr jobs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import connections

from cardsavr import types as remote_types
from jobs import events, services
from jobs.cardsavr_client import close_clients
from jobs.models import Cardholder, Job, MerchantSite
from tests.portal.flows import CARD

LOGIN_FIELDS = [
    {
        "key_name": "username",
        "label": "Username",
        "type": "initial_account_link",
        "secret": False,
    },
    {
        "key_name": "password",
        "label": "Password",
        "type": "initial_account_link",
        "secret": True,
    },
    {"key_name": "tfa", "label": "Code", "type": "tfa", "secret": False},
]
TFA_FIELDS = [{"key_name": "tfa", "label": "Verification code", "secret": False}]
T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
_ids = itertools.count(30001)


def remote_job(
    cardsavr_id: int,
    *,
    status: str = "IN_PROGRESS",
    status_message: str = "Working on it.",
    termination_type: str | None = None,
    percent_complete: float = 10,
    auth_percent_complete: float = 0,
    job_timeout: int | None = 300_000,
    last_updated_on: datetime | None = T0,
    requests: list[dict[str, Any]] | None = None,
) -> remote_types.Job:
    """CardSavr's JSON for a job, parsed the way the client parses it."""
    raw: dict[str, Any] = {
        "id": cardsavr_id,
        "status": status,
        "status_message": status_message,
        "termination_type": termination_type,
        "percent_complete": percent_complete,
        "auth_percent_complete": auth_percent_complete,
        "job_timeout": job_timeout,
        "last_updated_on": last_updated_on.isoformat() if last_updated_on else None,
        "credential_requests": requests or [],
    }
    return remote_types.Job.from_json(raw)


def tfa_request(envelope_id: str, message: str = "Enter the code.") -> dict:
    return {
        "envelope_id": envelope_id,
        "type": "tfa",
        "message": {"status": "PENDING_TFA", "status_message": message},
        "account_link": TFA_FIELDS,
    }


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_cardholder(db, django_user_model):
    def make(username: str = "alice") -> Cardholder:
        # No password: hashing one costs a second; tests sign in with force_login.
        user = django_user_model.objects.create_user(username=username)
        return Cardholder.objects.create(
            user=user, cuid=f"cuid-{username}", cardsavr_id=next(_ids)
        )

    return make


@pytest.fixture
def cardholder(make_cardholder) -> Cardholder:
    return make_cardholder("alice")


@pytest.fixture
def site(db) -> MerchantSite:
    return MerchantSite.objects.create(
        cardsavr_id=1,
        name="Synthetic Sites",
        host="synthetic.example",
        account_link=LOGIN_FIELDS,
    )


@pytest.fixture
def make_job(site):
    def make(cardholder: Cardholder, **fields: Any) -> Job:
        values = {"status": "REQUESTED", "last_updated_on": T0 - timedelta(minutes=1)}
        values.update(fields)
        return Job.objects.create(
            cardsavr_id=next(_ids),
            cardholder=cardholder,
            merchant_site=site,
            **values,
        )

    return make


@pytest.fixture
def job(make_job, cardholder) -> Job:
    return make_job(cardholder)


class PushListener:
    """A channel in a cardholder's group, as a browser's socket would be."""

    def __init__(self, group: str) -> None:
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(group, self.channel)

    def messages(self) -> list[dict]:
        """Everything pushed so far (the in-memory layer of the test settings)."""
        queue = self.layer.channels.get(self.channel)
        received = []
        while queue is not None and not queue.empty():
            _, message = queue.get_nowait()
            received.append(message)
        return received


@pytest.fixture
def listen():
    def make(group: str) -> PushListener:
        return PushListener(group)

    return make


@pytest.fixture
def cardholder_pushes(listen, cardholder) -> PushListener:
    return listen(events.cardholder_group(cardholder.pk))


@pytest.fixture
async def portal(portal_on_sandbox):
    yield portal_on_sandbox
    await close_clients()
    # The ORM ran in sync_to_async's thread; its connection must not outlive
    # the test (PostgreSQL refuses to drop a test database still in use).
    await sync_to_async(connections.close_all)()


@pytest.fixture
async def wallet(portal):
    """A cardholder with a card, and the merchant sites synced."""
    cardholder = await services.create_cardholder("alice", "a-long-portal-pass-41")
    await services.add_card(cardholder, **CARD)
    await services.sync_merchant_sites()
    return cardholder
