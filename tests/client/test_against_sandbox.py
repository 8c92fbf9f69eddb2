"""The client against the sandbox over a real HTTPS socket."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid

import httpx
import pytest

from cardsavr import crypto
from cardsavr.client import CardSavrClient
from cardsavr.config import ClientConfig
from cardsavr.errors import (
    AuthenticationError,
    ProtocolError,
    TransportError,
    UpstreamTimeoutError,
    ValidationError,
)
from cardsavr.types import Job, JobSpec, MerchantSite

PAN = "4111111111111111"
ADDRESS = {
    "address1": "1 Main St",
    "city": "Seattle",
    "subnational": "WA",
    "postal_code": "98101",
    "country": "USA",
    "is_primary": True,
}
# At the fixture's speed a whole job takes seconds; this only bounds a hang.
POLL_LIMIT_SECONDS = 30.0


class RecordingTransport(httpx.AsyncBaseTransport):
    """A real TLS transport that keeps a copy of every request it sends."""

    def __init__(self, ca_file: str) -> None:
        self.inner = httpx.AsyncHTTPTransport(
            verify=ssl.create_default_context(cafile=ca_file)
        )
        self.sent: list[tuple[str, str, dict[str, str], bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = await request.aread()
        self.sent.append(
            (request.method, str(request.url), dict(request.headers), content)
        )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def client_config(sandbox, encryption: str = "cbc") -> ClientConfig:
    config = sandbox.config
    return ClientConfig(
        api_url=sandbox.url,
        app_name=config.app_name,
        app_key=config.app_key,
        username=config.username,
        password=config.password,
        ca_file=sandbox.ca_file,
        encryption=encryption,
        timeout=10.0,
    )


async def standard_login_site(client: CardSavrClient) -> MerchantSite:
    page = await client.list_merchant_sites(tags=["synthetic"])
    for site in page.items:
        keys = [field.key_name for field in site.initial_account_link]
        if keys == ["username", "password"] and "standard" in site.host:
            return site
    raise AssertionError("the sandbox offers no standard synthetic login site")


async def wait_for(client: CardSavrClient, job_id: int, done) -> Job:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + POLL_LIMIT_SECONDS
    while True:
        job = await client.get_job(job_id)
        if done(job):
            return job
        if loop.time() > deadline:
            raise AssertionError(f"job {job_id} stuck in {job.status}")
        await asyncio.sleep(0.1)


async def run_tfa_flow(sandbox, encryption: str) -> None:
    transport = RecordingTransport(sandbox.ca_file)
    client = CardSavrClient(client_config(sandbox, encryption), transport=transport)
    try:
        site = await standard_login_site(client)
        cardholder = await client.create_cardholder(
            cuid=f"client-{uuid.uuid4().hex}",
            first_name="Ada",
            last_name="Lovelace",
            email="ada@example.com",
        )
        card = await client.create_card(
            cardholder_id=cardholder["id"],
            pan=PAN,
            cvv="123",
            expiration_month="12",
            expiration_year="30",
            name_on_card="Ada Lovelace",
            address=ADDRESS,
        )
        assert "pan" not in card
        account = await client.create_account(
            cardholder_id=cardholder["id"], merchant_site_id=site.id
        )
        assert account["merchant_site_id"] == site.id
        job = await client.create_job(
            JobSpec(
                cardholder_id=cardholder["id"],
                card_id=card["id"],
                merchant_site_id=site.id,
                account_link={"username": "good_email", "password": "tfa"},
            )
        )
        assert job.merchant_site_id == site.id

        pending = await wait_for(
            client,
            job.id,
            lambda j: j.termination_type is not None
            or any(r.type == "tfa" for r in j.credential_requests),
        )
        (request,) = pending.credential_requests
        assert [f.key_name for f in request.account_link] == ["tfa"]
        assert pending.status.startswith("PENDING")

        await client.answer_credential_request(
            job.id, request.envelope_id, {"tfa": "1234"}
        )
        finished = await wait_for(client, job.id, lambda j: j.termination_type)

        assert finished.status == "SUCCESSFUL"
        assert finished.termination_type == "BILLABLE"
        assert finished.completed_on is not None
        stats = sandbox.engine.stats()
        assert stats["credential_replies_per_envelope"][request.envelope_id] == 1
        envelopes = [
            json.loads(content)["encrypted_body"]
            for _method, _url, _headers, content in transport.sent
            if content
        ]
        assert {crypto.envelope_scheme(e) for e in envelopes} == {encryption}
    finally:
        await client.close()


async def test_full_tfa_flow_succeeds_with_cbc(sandbox):
    await run_tfa_flow(sandbox, crypto.CBC)


async def test_full_tfa_flow_succeeds_with_gcm(sandbox):
    await run_tfa_flow(sandbox, crypto.GCM)


async def test_jobs_list_by_cardholder_reads_paging_total(sandbox):
    client = CardSavrClient(client_config(sandbox))
    try:
        site = await standard_login_site(client)
        cardholder = await client.create_cardholder(cuid=f"client-{uuid.uuid4().hex}")
        card = await client.create_card(
            cardholder_id=cardholder["id"],
            pan=PAN,
            cvv="123",
            expiration_month="12",
            expiration_year="30",
            name_on_card="Ada Lovelace",
        )
        spec = JobSpec(cardholder["id"], card["id"], site.id)
        created = await client.create_jobs([spec, spec, spec])

        page = await client.list_jobs(cardholder_ids=[cardholder["id"]], page_length=2)

        assert page.total_results == 3
        assert len(page.items) == 2
        assert {job.id for job in page.items} <= {job.id for job in created}
    finally:
        await client.close()


async def test_tampered_request_signature_is_refused(sandbox):
    transport = RecordingTransport(sandbox.ca_file)
    client = CardSavrClient(client_config(sandbox), transport=transport)
    try:
        await client.list_merchant_sites(page_length=1)
        method, url, headers, content = transport.sent[-1]
        signature = crypto.b64d(headers["x-cardsavr-signature"])
        headers["x-cardsavr-signature"] = crypto.b64e(bytes([signature[0] ^ 1]))
        async with httpx.AsyncClient(
            verify=ssl.create_default_context(cafile=sandbox.ca_file)
        ) as raw:
            response = await raw.request(method, url, headers=headers, content=content)
    finally:
        await client.close()

    assert response.status_code == 401
    assert response.json()["_errors"][0]["name"]


async def test_request_replayed_after_session_end_is_refused(sandbox):
    transport = RecordingTransport(sandbox.ca_file)
    client = CardSavrClient(client_config(sandbox), transport=transport)
    await client.list_merchant_sites(page_length=1)
    method, url, headers, content = transport.sent[-1]
    await client.close()
    assert transport.sent[-1][1].endswith("/session/end")

    async with httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=sandbox.ca_file)
    ) as raw:
        response = await raw.request(method, url, headers=headers, content=content)

    assert response.status_code == 401
    assert response.json()["_errors"]


async def test_unknown_filter_is_refused_naming_the_property(sandbox):
    client = CardSavrClient(client_config(sandbox))
    try:
        with pytest.raises(ValidationError) as caught:
            await client.request("GET", "/merchant_sites", query=[("bad_filter", "1")])
    finally:
        await client.close()

    assert caught.value.status == 400
    assert caught.value.property == "bad_filter"
    assert caught.value.errors


async def test_wrong_agent_password_is_an_authentication_error(sandbox):
    config = client_config(sandbox)
    client = CardSavrClient(
        ClientConfig(**{**config.__dict__, "password": "wrong-password"})
    )
    try:
        with pytest.raises(AuthenticationError):
            await client.list_merchant_sites(page_length=1)
    finally:
        await client.close()


async def test_sandbox_faults_are_retried_for_reads(sandbox):
    client = CardSavrClient(client_config(sandbox))
    try:
        await client.list_merchant_sites(page_length=1)
        sandbox.engine.faults.add("503", count=1)

        page = await client.list_merchant_sites(page_length=1)
    finally:
        await client.close()

    assert len(page.items) == 1
    assert sandbox.engine.faults.active() == []


async def test_logo_is_fetched_over_tls(sandbox):
    client = CardSavrClient(client_config(sandbox))
    try:
        site = await standard_login_site(client)
        assert site.logo_url
        content, content_type = await client.fetch_bytes(site.logo_url)
    finally:
        await client.close()

    assert content_type == "image/svg+xml"
    assert content.lstrip().startswith(b"<svg")


async def test_sandbox_certificate_is_refused_without_its_ca_file(sandbox):
    config = client_config(sandbox)
    client = CardSavrClient(
        ClientConfig(**{**config.__dict__, "ca_file": None, "max_read_retries": 0})
    )
    try:
        with pytest.raises(TransportError):
            await client.list_merchant_sites(page_length=1)
    finally:
        await client.close()


async def test_dripping_sandbox_answer_hits_the_deadline(sandbox):
    config = client_config(sandbox)
    client = CardSavrClient(
        ClientConfig(**{**config.__dict__, "timeout": 1.0, "max_read_retries": 0})
    )
    try:
        await client.login()
        # Each byte-group arrives well inside httpx's read timeout; only the
        # overall deadline can stop the call.
        sandbox.engine.faults.add("drip", seconds=8.0, count=1)
        with pytest.raises(UpstreamTimeoutError):
            await asyncio.wait_for(client.list_merchant_sites(page_length=1), 20)
    finally:
        sandbox.engine.faults.clear()
        await client.close()


async def test_garbage_sandbox_answer_is_a_protocol_error(sandbox):
    client = CardSavrClient(client_config(sandbox))
    try:
        await client.login()
        sandbox.engine.faults.add("garbage", count=1)
        with pytest.raises(ProtocolError):
            await client.list_merchant_sites(page_length=1)
    finally:
        await client.close()
