"""Status codes and `_errors` bodies become the client's exception family."""

import httpx
import pytest

from cardsavr.errors import (
    CardSavrError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    ValidationError,
)
from cardsavr.types import JobSpec
from tests.client.conftest import Reply, job_json

FILTER_ERROR = {
    "_errors": [
        {
            "name": "Invalid Filter",
            "message": "Property: bad_filter is not a valid filter",
            "property": "bad_filter",
        }
    ]
}


async def test_400_names_the_property(server, client):
    server.route("GET", "/merchant_sites", lambda received: Reply(400, FILTER_ERROR))

    with pytest.raises(ValidationError) as caught:
        await client.list_merchant_sites(host="x")

    error = caught.value
    assert error.status == 400
    assert error.property == "bad_filter"
    assert error.errors == FILTER_ERROR["_errors"]
    assert "Invalid Filter" in str(error)
    assert "bad_filter" in str(error)


async def test_plain_json_error_body_is_read(server, client):
    server.route(
        "GET",
        "/merchant_sites",
        lambda received: Reply(400, FILTER_ERROR, encrypt=False, sign=False),
    )

    with pytest.raises(ValidationError) as caught:
        await client.list_merchant_sites()

    assert caught.value.property == "bad_filter"


async def test_string_error_elements_are_kept_as_messages(server, client):
    server.route(
        "GET",
        "/place_card_on_single_site_jobs/11",
        lambda received: Reply(400, {"_errors": ["Invalid hydration: foo"]}),
    )

    with pytest.raises(ValidationError) as caught:
        await client.get_job(11, hydrate=("foo",))

    assert caught.value.errors == [{"message": "Invalid hydration: foo"}]
    assert caught.value.property is None


async def test_property_name_form_is_understood(server, client):
    body = {"_errors": [{"name": "Missing", "property_name": "card_id"}]}
    server.route(
        "POST",
        "/place_card_on_single_site_jobs",
        lambda received: Reply(400, body),
    )

    with pytest.raises(ValidationError) as caught:
        await client.create_job(JobSpec(5, 6, 1))

    assert caught.value.property == "card_id"


async def test_403_is_permission_denied(server, client):
    server.route(
        "GET",
        "/cardholders/5",
        lambda received: Reply(403, {"_errors": [{"name": "Forbidden"}]}),
    )

    with pytest.raises(PermissionDeniedError):
        await client.get_cardholder(5)


async def test_404_is_not_found(server, client):
    server.route(
        "GET",
        "/merchant_sites/0",
        lambda received: Reply(404, {"_errors": [{"name": "Not Found"}]}),
    )

    with pytest.raises(NotFoundError) as caught:
        await client.get_merchant_site(0)

    assert caught.value.status == 404


async def test_html_5xx_page_is_a_server_error_not_a_protocol_error(
    server, client, sleeps
):
    server.route(
        "GET",
        "/merchant_sites/1",
        lambda received: httpx.Response(502, content=b"<html>Bad gateway</html>"),
    )

    with pytest.raises(ServerError) as caught:
        await client.get_merchant_site(1)

    assert caught.value.status == 502


async def test_other_4xx_is_the_base_error(server, client):
    server.route(
        "PUT",
        "/place_card_on_single_site_jobs/11",
        lambda received: Reply(409, {"_errors": [{"name": "Conflict"}]}),
    )

    with pytest.raises(CardSavrError) as caught:
        await client.answer_credential_request(11, "env", {"tfa": "1"})

    assert type(caught.value) is CardSavrError
    assert caught.value.status == 409


async def test_2xx_body_with_errors_is_a_validation_error(server, client):
    server.route(
        "POST",
        "/cardsavr_accounts",
        lambda received: Reply(
            200, {"_errors": [{"name": "Bad", "property": "merchant_site_id"}]}
        ),
    )

    with pytest.raises(ValidationError) as caught:
        await client.create_account(cardholder_id=5, merchant_site_id=999)

    assert caught.value.property == "merchant_site_id"


async def test_plural_post_partial_failure_keeps_created_jobs(server, client):
    refused = {"_errors": [{"name": "Invalid", "property": "card_id"}]}
    server.route(
        "POST",
        "/place_card_on_single_site_jobs",
        lambda received: Reply(201, [job_json(11), refused]),
    )

    with pytest.raises(ValidationError) as caught:
        await client.create_jobs([JobSpec(5, 6, 1), JobSpec(5, 0, 2)])

    assert caught.value.property == "card_id"
    assert [job.id for job in caught.value.created_jobs] == [11]


async def test_error_message_carries_path_without_query_values(server, client):
    server.route("GET", "/merchant_sites", lambda received: Reply(400, FILTER_ERROR))

    with pytest.raises(ValidationError) as caught:
        await client.list_merchant_sites(name_starts_with="Secretive")

    message = str(caught.value)
    assert message.startswith("GET /merchant_sites answered 400")
    assert "Secretive" not in message
    assert "not a valid filter" not in message
