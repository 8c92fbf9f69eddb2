"""Management commands against the sandbox, and the poller's loop."""

from __future__ import annotations

import asyncio

import pytest
from django.core.management import CommandError, call_command

from cardsavr.client import CardSavrClient
from jobs.models import Card, Cardholder, MerchantSite
from jobs.poller import Poller

pytestmark = pytest.mark.django_db(transaction=True)


def test_create_cardholder_with_demo_card_keeps_only_last4(portal_on_sandbox):
    call_command(
        "create_cardholder", "frank", "--password", "a-long-pass-frank-3", "--demo-card"
    )

    cardholder = Cardholder.objects.get(user__username="frank")
    card = Card.objects.get(cardholder=cardholder)
    assert cardholder.cardsavr_id is not None
    assert (card.last4, card.brand) == ("1111", "Visa")
    assert cardholder.user.check_password("a-long-pass-frank-3")


def test_create_cardholder_refuses_a_weak_password(portal_on_sandbox):
    with pytest.raises(CommandError, match="password"):
        call_command("create_cardholder", "gina", "--password", "short")

    assert not Cardholder.objects.exists()


def test_syncmerchants_stores_sites_and_their_logos(portal_on_sandbox):
    call_command("syncmerchants")

    sites = MerchantSite.objects.all()
    assert sites.count() > 1
    assert all(site.logo_content_type.startswith("image/") for site in sites)
    assert all(site.logo for site in sites)


def test_syncmerchants_fetches_each_logo_once(portal_on_sandbox, monkeypatch):
    fetched: list[str] = []
    original = CardSavrClient.fetch_bytes

    async def counting_fetch(self, url):
        fetched.append(url)
        return await original(self, url)

    monkeypatch.setattr(CardSavrClient, "fetch_bytes", counting_fetch)
    call_command("syncmerchants")
    first_run = len(fetched)

    call_command("syncmerchants")

    assert first_run == MerchantSite.objects.count()
    assert len(fetched) == first_run


async def test_poller_loop_ends_after_the_tick_under_way_when_stopped(
    portal_on_sandbox,
):
    poller = Poller(interval=0.05)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)

    await asyncio.wait_for(poller.run(stop), timeout=10)

    assert poller.ticks >= 1
