"""Body envelopes, request signatures and response verification."""

import json

import httpx
import pytest

from cardsavr import crypto
from cardsavr.client import CardSavrClient
from cardsavr.errors import ProtocolError, ServerError
from cardsavr.types import JobSpec
from tests.client.conftest import APP_NAME, Reply, compact, job_json, make_config

SAFE_KEY = "MBNL8Chib96EYdXNt3+etblMg2RAHUYM1d7ScSd8nf8="


def echo_cardholder(received):
    return Reply(201, {"id": 5, **received.body})


@pytest.mark.parametrize("scheme", [crypto.CBC, crypto.GCM])
async def test_request_body_round_trips_in_configured_scheme(server, sleeps, scheme):
    server.route("POST", "/cardholders", echo_cardholder)
    client = CardSavrClient(
        make_config(encryption=scheme), transport=server.transport()
    )

    cardholder = await client.create_cardholder(cuid="c-1", first_name="Ada")
    await client.close()

    received = server.calls("POST", "/cardholders")[0]
    assert received.scheme == scheme
    assert received.body == {
        "cuid": "c-1",
        "type": "persistent_creds",
        "first_name": "Ada",
    }
    assert cardholder == {"id": 5, **received.body}


async def test_request_body_is_sent_as_compact_encrypted_body_wrapper(server, client):
    server.route("POST", "/cardholders", echo_cardholder)

    await client.create_cardholder(cuid="c-1")

    received = server.calls("POST", "/cardholders")[0]
    wrapper = json.loads(received.content)
    assert list(wrapper) == ["encrypted_body"]
    assert received.content == compact(wrapper).encode()
    assert received.headers["content-type"] == "application/json"


async def test_cardholder_creation_names_the_financial_institution(server, sleeps):
    server.route("POST", "/cardholders", echo_cardholder)
    client = CardSavrClient(
        make_config(financial_institution="acme"), transport=server.transport()
    )

    await client.create_cardholder(cuid="c-1")
    await client.close()

    received = server.calls("POST", "/cardholders")[0]
    assert received.headers["x-cardsavr-financial-institution"] == "acme"


async def test_safe_key_header_is_an_envelope_under_the_session_key(server, client):
    server.route("POST", "/cardholders", echo_cardholder)

    await client.create_cardholder(cuid="c-1", safe_key=SAFE_KEY)

    received = server.calls("POST", "/cardholders")[0]
    header = received.headers["x-cardsavr-cardholder-safe-key"]
    assert SAFE_KEY not in header
    assert received.safe_key == SAFE_KEY


async def test_card_response_never_returns_pan_or_cvv(server, client):
    server.route(
        "POST",
        "/cardsavr_cards",
        lambda received: Reply(201, {"id": 6, "last_4": "1111", **received.body}),
    )

    card = await client.create_card(
        cardholder_id=5,
        pan="4111111111111111",
        cvv="123",
        expiration_month="12",
        expiration_year="30",
        name_on_card="Ada Lovelace",
    )

    assert server.calls("POST", "/cardsavr_cards")[0].body["pan"] == "4111111111111111"
    assert card["last_4"] == "1111"
    assert "pan" not in card
    assert "cvv" not in card


async def test_unsigned_response_is_accepted(server, client):
    server.route(
        "GET",
        "/merchant_sites/1",
        lambda received: Reply(200, {"id": 1, "name": "S"}, sign=False),
    )

    site = await client.get_merchant_site(1)

    assert site.id == 1


async def test_plain_json_response_is_accepted(server, client):
    server.route(
        "GET",
        "/merchant_sites/1",
        lambda received: Reply(200, {"id": 1, "name": "S"}, encrypt=False),
    )

    site = await client.get_merchant_site(1)

    assert site.name == "S"


async def test_bad_response_signature_is_a_protocol_error(server, client):
    server.route("GET", "/merchant_sites/1", lambda received: Reply(200, {"id": 1}))
    server.tamper_response_signature = True

    with pytest.raises(ProtocolError, match="signature"):
        await client.get_merchant_site(1)


async def test_response_signed_by_another_app_is_a_protocol_error(server, client):
    def other_app(received):
        response = server.answer(
            received, Reply(200, {"id": 1}), server.session_key(received), crypto.CBC
        )
        response.headers["x-cardsavr-authorization"] = crypto.authorization_value(
            "someone_else"
        )
        return response

    server.route("GET", "/merchant_sites/1", other_app)

    with pytest.raises(ProtocolError, match="signature"):
        await client.get_merchant_site(1)


async def test_signature_over_reserialised_body_is_accepted(server, client):
    def pretty(received):
        key = server.session_key(received)
        wrapper = {"encrypted_body": crypto.encrypt('{"id":1}', key)}
        auth = crypto.authorization_value(APP_NAME)
        nonce = crypto.new_nonce()
        # Signed as JSON.stringify would print it, sent with spaces.
        signature = crypto.sign(key, received.target, auth, nonce, compact(wrapper))
        return httpx.Response(
            200,
            content=json.dumps(wrapper, indent=2).encode(),
            headers={
                "x-cardsavr-authorization": auth,
                "x-cardsavr-nonce": nonce,
                "x-cardsavr-signature": signature,
            },
        )

    server.route("GET", "/merchant_sites/1", pretty)

    site = await client.get_merchant_site(1)

    assert site.id == 1


async def test_login_response_is_verified_with_the_app_key(server, client):
    server.route("GET", "/merchant_sites/1", lambda received: Reply(200, {"id": 1}))
    server.tamper_response_signature = True

    with pytest.raises(ProtocolError):
        await client.get_merchant_site(1)

    # The tampered login answer was refused before any session call was made.
    assert server.calls("GET", "/merchant_sites/1") == []


async def test_garbage_body_is_a_protocol_error(server, client):
    server.route(
        "GET",
        "/merchant_sites/1",
        lambda received: httpx.Response(200, content=b"<html>oops</html>"),
    )

    with pytest.raises(ProtocolError):
        await client.get_merchant_site(1)


async def test_undecryptable_envelope_is_a_protocol_error(server, client):
    def wrong_key(received):
        other = crypto.b64e(bytes(32))
        return httpx.Response(
            200, json={"encrypted_body": crypto.encrypt('{"id":1}', other)}
        )

    server.route("GET", "/merchant_sites/1", wrong_key)

    with pytest.raises(ProtocolError):
        await client.get_merchant_site(1)


async def test_object_without_id_is_a_protocol_error(server, client):
    server.route("GET", "/merchant_sites/1", lambda received: Reply(200, {"name": "S"}))

    with pytest.raises(ProtocolError):
        await client.get_merchant_site(1)


async def test_job_creation_posts_plural_body_with_hydration(server, client):
    server.route(
        "POST",
        "/place_card_on_single_site_jobs",
        lambda received: Reply(201, [job_json(11), job_json(12)]),
    )

    jobs = await client.create_jobs(
        [
            JobSpec(5, 6, 1, {"username": "good_email", "password": "tfa"}),
            JobSpec(5, 6, 2),
        ]
    )

    received = server.calls("POST", "/place_card_on_single_site_jobs")[0]
    assert received.body == [
        {
            "status": "REQUESTED",
            "cardholder_id": 5,
            "card_id": 6,
            "account": {
                "cardholder_id": 5,
                "merchant_site_id": 1,
                "account_link": {"username": "good_email", "password": "tfa"},
            },
        },
        {
            "status": "REQUESTED",
            "cardholder_id": 5,
            "card_id": 6,
            "account": {"cardholder_id": 5, "merchant_site_id": 2},
        },
    ]
    assert json.loads(received.headers["x-cardsavr-hydration"]) == [
        "credential_requests",
        "account",
    ]
    assert [job.id for job in jobs] == [11, 12]


async def test_answer_sends_account_link_with_envelope_id(server, client):
    server.route(
        "PUT",
        "/place_card_on_single_site_jobs/11",
        lambda received: Reply(200, job_json(11, status="TFA_RECEIVED")),
    )

    job = await client.answer_credential_request(11, "env-1==", {"tfa": "1234"})

    received = server.calls("PUT", "/place_card_on_single_site_jobs/11")[0]
    assert received.body == {"account": {"account_link": {"tfa": "1234"}}}
    assert received.headers["x-cardsavr-envelope-id"] == "env-1=="
    assert job.status == "TFA_RECEIVED"


async def test_cancel_puts_cancel_requested(server, client):
    server.route(
        "PUT",
        "/place_card_on_single_site_jobs/11",
        lambda received: Reply(200, job_json(11, status="CANCEL_REQUESTED")),
    )

    job = await client.cancel_job(11)

    received = server.calls("PUT", "/place_card_on_single_site_jobs/11")[0]
    assert received.body == {"status": "CANCEL_REQUESTED"}
    assert job.status == "CANCEL_REQUESTED"


async def test_get_job_sends_hydration_header(server, client):
    server.route(
        "GET",
        "/place_card_on_single_site_jobs/11",
        lambda received: Reply(200, job_json(11)),
    )

    await client.get_job(11)

    received = server.calls("GET", "/place_card_on_single_site_jobs/11")[0]
    assert json.loads(received.headers["x-cardsavr-hydration"]) == [
        "credential_requests",
        "account",
    ]
    assert received.content == b""


async def test_messages_empty_body_is_an_empty_list(server, client):
    server.route("GET", "/messages/cardholders/5", lambda received: Reply(200, None))

    assert await client.get_cardholder_messages(5) == []


async def test_job_messages_are_returned_as_dicts(server, client):
    message = {"type": "job_status", "job_id": 11, "message": {"status": "AUTH"}}
    server.route(
        "GET",
        "/messages/place_card_on_single_site_jobs/11",
        lambda received: Reply(200, [message]),
    )

    assert await client.get_job_messages(11) == [message]


async def test_generic_request_reaches_endpoints_without_a_helper(server, client):
    server.route("PUT", "/session/refresh", lambda received: Reply(200, {"ok": 1}))

    answer = await client.request("PUT", "/session/refresh", body={})

    assert answer == {"ok": 1}
    assert server.calls("PUT", "/session/refresh")[0].body == {}


async def test_generic_request_does_not_retry_writes(server, client, sleeps):
    server.route("PUT", "/session/refresh", lambda received: Reply(503, None))

    with pytest.raises(ServerError):
        await client.request("PUT", "/session/refresh", body={})

    assert len(server.calls("PUT", "/session/refresh")) == 1


@pytest.mark.parametrize(
    ("client_scheme", "answer_scheme"),
    [(crypto.CBC, crypto.GCM), (crypto.GCM, crypto.CBC)],
)
async def test_answer_in_the_other_scheme_is_still_read(
    server, sleeps, client_scheme, answer_scheme
):
    def other_scheme(received):
        key = server.session_key(received)
        return server.answer(received, Reply(200, {"id": 1}), key, answer_scheme)

    server.route("GET", "/merchant_sites/1", other_scheme)
    client = CardSavrClient(
        make_config(encryption=client_scheme), transport=server.transport()
    )

    site = await client.get_merchant_site(1)
    await client.close()

    assert site.id == 1
    assert server.answered_schemes[-1] == answer_scheme
