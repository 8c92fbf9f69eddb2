"""No merchant credential, code or card number is kept or logged."""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import sync_to_async
from django.apps import apps

from jobs import services
from jobs.poller import Poller
from tests.portal.flows import CARD, finished, open_request_of_type, poll_until, site

pytestmark = pytest.mark.django_db(transaction=True)

CANARY_PAN = "4000056655665556"
CANARY_USERNAME = "canary-user-Xq3"
CANARY_PASSWORD = "canary-pass-Zq81"
CANARY_TFA = "canary-tfa-5521"
CANARY_PORTAL_PASSWORD = "canary-portal-Wm47"
CANARIES = (
    CANARY_PAN,
    CANARY_USERNAME,
    CANARY_PASSWORD,
    CANARY_TFA,
    CANARY_PORTAL_PASSWORD,
)
# The sandbox stands in for CardSavr, which does see the values.
OUTSIDE_THE_PORTAL = ("sandbox", "uvicorn")


def _every_row_as_text() -> str:
    return "\n".join(
        repr(list(model._default_manager.values())) for model in apps.get_models()
    )


async def test_a_full_flow_leaves_no_secret_in_the_database_or_the_logs(portal, caplog):
    caplog.set_level(logging.DEBUG)
    cardholder = await services.create_cardholder("erin", CANARY_PORTAL_PASSWORD)
    await services.add_card(cardholder, **{**CARD, "pan": CANARY_PAN, "cvv": "987"})
    await services.sync_merchant_sites()
    poller = Poller(interval=0.05)
    [job] = await services.start_jobs(
        cardholder,
        [(await site(), {"username": CANARY_USERNAME, "password": CANARY_PASSWORD})],
    )
    # The merchant refuses the unknown username and asks again.
    job, request = await poll_until(
        poller, job.pk, open_request_of_type("initial_account_link")
    )
    await services.submit_reply(
        cardholder,
        job.pk,
        request.envelope_id,
        {"username": "good_email", "password": "tfa"},
    )
    job, request = await poll_until(poller, job.pk, open_request_of_type("tfa"))
    # A wrong code first: the merchant asks for a new one.
    await services.submit_reply(
        cardholder, job.pk, request.envelope_id, {"tfa": CANARY_TFA}
    )
    first_envelope = request.envelope_id
    job, request = await poll_until(
        poller,
        job.pk,
        lambda job, open_request: open_request is not None
        and open_request.envelope_id != first_envelope,
    )
    await services.submit_reply(
        cardholder, job.pk, request.envelope_id, {"tfa": "1234"}
    )
    job, _ = await poll_until(poller, job.pk, finished)
    assert job.outcome == "success"

    rows = await sync_to_async(_every_row_as_text)()
    logged = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''}"
        for record in caplog.records
        if not record.name.startswith(OUTSIDE_THE_PORTAL)
    )
    for canary in CANARIES:
        assert canary not in rows, canary
        assert canary not in logged, canary
