"""Typed results: lenient parsing, unknown fields and statuses kept."""

import json
from datetime import UTC, datetime

from cardsavr.client import build_query
from cardsavr.types import CredentialRequest, Job, MerchantSite, parse_timestamp
from tests.client.conftest import Reply, job_json

TFA_REQUEST = {
    "job_id": 11,
    "type": "tfa",
    "envelope_id": "2kRDNRFbPlf98X5S917d4w==",
    "message": {
        "status": "PENDING_TFA",
        "job_timeout": 769392,
        "status_message": "Enter the code we sent you.",
    },
    "account_link": [{"key_name": "tfa", "label": "Code", "secret": True}],
}


def test_unknown_job_fields_are_kept_in_raw():
    raw = job_json(11, brand_new_field={"x": 1})

    job = Job.from_json(raw)

    assert job.raw["brand_new_field"] == {"x": 1}


def test_unknown_status_is_kept_as_a_string():
    job = Job.from_json(job_json(11, status="QUANTUM_ENTANGLED"))

    assert job.status == "QUANTUM_ENTANGLED"


def test_job_timeout_is_milliseconds_left():
    job = Job.from_json(job_json(11, job_timeout=830000))

    assert job.job_timeout == 830000


def test_timestamps_are_parsed_as_aware_datetimes():
    job = Job.from_json(job_json(11, created_on="2026-12-03T15:00:00.123Z"))

    assert job.created_on == datetime(2026, 12, 3, 15, 0, 0, 123000, tzinfo=UTC)


def test_garbage_or_missing_timestamps_are_none():
    job = Job.from_json(job_json(11, created_on="yesterday-ish", started_on=None))

    assert job.created_on is None
    assert job.started_on is None
    assert job.completed_on is None


def test_naive_timestamp_is_taken_as_utc():
    assert parse_timestamp("2026-12-03T15:00:00") == datetime(
        2026, 12, 3, 15, tzinfo=UTC
    )


def test_merchant_site_id_comes_from_hydrated_account():
    job = Job.from_json(job_json(11, account={"id": 8, "merchant_site_id": 42}))

    assert job.merchant_site_id == 42


def test_merchant_site_id_is_none_without_account():
    assert Job.from_json(job_json(11)).merchant_site_id is None


def test_malformed_numbers_become_defaults():
    job = Job.from_json(
        job_json(11, percent_complete="lots", job_timeout="soon", card_id=True)
    )

    assert job.percent_complete == 0.0
    assert job.job_timeout is None
    assert job.card_id is None


def test_credential_request_fields_are_parsed():
    job = Job.from_json(job_json(11, credential_requests=[TFA_REQUEST]))

    (request,) = job.credential_requests
    assert request.envelope_id == "2kRDNRFbPlf98X5S917d4w=="
    assert request.type == "tfa"
    assert request.job_id == 11
    assert request.status == "PENDING_TFA"
    assert request.status_message == "Enter the code we sent you."
    assert request.job_timeout == 769392
    assert [(f.key_name, f.label, f.secret) for f in request.account_link] == [
        ("tfa", "Code", True)
    ]


def test_legacy_credential_request_with_string_message():
    request = CredentialRequest.from_json(
        {"type": "tfa_request", "job_id": "11", "envelope_id": "e", "message": "x"}
    )

    assert request.job_id == 11
    assert request.status is None
    assert request.account_link == ()


def test_credential_request_without_envelope_is_skipped():
    job = Job.from_json(job_json(11, credential_requests=[{"type": "tfa"}]))

    assert job.credential_requests == ()


def test_merchant_site_logo_prefers_widest_colour_image():
    site = MerchantSite.from_json(
        {
            "id": 1,
            "images": [
                {"url": "https://x/32.png", "width": 32},
                {"url": "https://x/256g.png", "width": 256, "grayscale": True},
                {"url": "https://x/128.png", "width": 128},
            ],
        }
    )

    assert site.logo_url == "https://x/128.png"


def test_merchant_site_without_images_has_empty_logo():
    assert MerchantSite.from_json({"id": 1}).logo_url == ""


def test_initial_account_link_filters_by_type():
    site = MerchantSite.from_json(
        {
            "id": 1,
            "account_link": [
                {"key_name": "username", "type": "initial_account_link"},
                {"key_name": "password", "type": "initial_account_link", "secret": 1},
                {"key_name": "tfa", "type": "tfa"},
            ],
        }
    )

    assert [f.key_name for f in site.initial_account_link] == ["username", "password"]
    assert site.initial_account_link[1].secret is True


def test_initial_account_link_is_everything_when_untyped():
    site = MerchantSite.from_json(
        {"id": 1, "account_link": [{"key_name": "email"}, {"key_name": "pin"}]}
    )

    assert [f.key_name for f in site.initial_account_link] == ["email", "pin"]


def test_tags_as_comma_string_are_split():
    assert MerchantSite.from_json({"id": 1, "tags": "prod, usa"}).tags == (
        "prod",
        "usa",
    )


async def test_paging_total_results_is_read_back(server, client):
    server.route(
        "GET",
        "/place_card_on_single_site_jobs",
        lambda received: Reply(
            200,
            [job_json(11), job_json(12)],
            {"x-cardsavr-paging": json.dumps({"page": 2, "total_results": 57})},
        ),
    )

    page = await client.list_jobs(cardholder_ids=[5], page=2, page_length=2)

    assert page.total_results == 57
    assert page.page == 2
    assert [job.id for job in page.items] == [11, 12]
    received = server.calls("GET", "/place_card_on_single_site_jobs")[0]
    assert json.loads(received.headers["x-cardsavr-paging"]) == {
        "page": 2,
        "page_length": 2,
    }


async def test_missing_paging_header_leaves_total_unknown(server, client):
    server.route("GET", "/merchant_sites", lambda received: Reply(200, []))

    page = await client.list_merchant_sites()

    assert page.total_results is None
    assert page.items == []


async def test_list_query_keeps_commas_unescaped(server, client):
    server.route("GET", "/place_card_on_single_site_jobs", lambda r: Reply(200, []))

    await client.list_jobs(ids=[1, 2, 3], status_exclude=["SUCCESSFUL", "CANCELLED"])

    received = server.calls("GET", "/place_card_on_single_site_jobs")[0]
    assert received.target == (
        "/place_card_on_single_site_jobs?ids=1,2,3&status_exclude=SUCCESSFUL,CANCELLED"
    )


async def test_merchant_site_filters_and_repeated_tag_groups(server, client):
    server.route("GET", "/merchant_sites", lambda r: Reply(200, [{"id": 1}]))

    await client.list_merchant_sites(
        ids=[1, 2],
        hosts=["a.com", "b.com"],
        tags=[["usa", "canada"], ["prod"]],
        name_starts_with="Best Buy",
    )

    received = server.calls("GET", "/merchant_sites")[0]
    assert received.query == [
        ("ids", "1,2"),
        ("hosts", "a.com,b.com"),
        ("name_starts_with", "Best Buy"),
        ("tags", "usa,canada"),
        ("tags", "prod"),
    ]
    paging = json.loads(received.headers["x-cardsavr-paging"])
    assert paging["sort"] == "name"


async def test_single_host_filter(server, client):
    server.route("GET", "/merchant_sites", lambda r: Reply(200, [{"id": 3}]))

    page = await client.list_merchant_sites(host="synthetic.example")

    assert server.calls("GET", "/merchant_sites")[0].query == [
        ("host", "synthetic.example")
    ]
    assert page.items[0].id == 3


async def test_job_with_unknown_fields_and_status_comes_back_from_the_api(
    server, client
):
    server.route(
        "GET",
        "/place_card_on_single_site_jobs/11",
        lambda r: Reply(200, job_json(11, status="NEW_THING", extra=[1, 2])),
    )

    job = await client.get_job(11)

    assert job.status == "NEW_THING"
    assert job.raw["extra"] == [1, 2]


def test_query_leaves_out_empty_filters_and_escapes_only_unsafe_characters():
    query = build_query(
        [("ids", []), ("host", None), ("hosts", ["a.com", "b.com"]), ("q", "a&b c")]
    )

    assert query == "hosts=a.com,b.com&q=a%26b%20c"


def test_odd_shapes_do_not_raise():
    job = Job.from_json(
        job_json(
            11,
            status=7,
            termination_type=[],
            credential_requests=5,
            account="not-an-object",
            status_message=None,
        )
    )

    assert job.status == "7"
    assert job.termination_type is None
    assert job.credential_requests == ()
    assert job.merchant_site_id is None
    assert job.status_message == ""
