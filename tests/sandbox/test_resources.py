"""Cardholders, cards, accounts, merchant sites and jobs as CardSavr serves them."""

from __future__ import annotations

import json
import ssl

import httpx

HYDRATE_ALL = json.dumps(["credential_requests", "account", "card", "cardholder"])


async def _sites(client, query: str = "", paging: dict | None = None):
    headers = {"x-cardsavr-paging": json.dumps(paging)} if paging else None
    return await client.call("GET", f"/merchant_sites{query}", headers=headers)


async def test_merchant_sites_include_well_known_and_synthetic_sites(live_client):
    reply = await _sites(live_client, paging={"page_length": 100})

    names = {site["name"] for site in reply.body}
    assert {"Amazon", "Netflix", "Spotify", "Hulu", "Disney+", "Walmart"} <= names
    assert {"Target", "Uber", "DoorDash", "Apple"} <= names
    assert any("synthetic" in site["tags"] for site in reply.body)
    assert len(reply.body) >= 20


async def test_merchant_site_carries_logo_tags_and_account_link(live_client):
    reply = await live_client.call("GET", "/merchant_sites/1")

    site = reply.body
    assert site["images"][0]["url"].endswith(".svg")
    assert "/_sandbox/logos/" in site["images"][0]["url"]
    assert "synthetic" in site["tags"]
    initial = [f for f in site["account_link"] if f["type"] == "initial_account_link"]
    assert [f["key_name"] for f in initial] == ["username", "password"]
    assert [f["secret"] for f in initial] == [False, True]


async def test_logo_url_serves_an_svg_tile(live_client, sandbox):
    site = (await live_client.call("GET", "/merchant_sites/5")).body
    async with httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=sandbox.ca_file)
    ) as http:
        response = await http.get(site["images"][0]["url"])

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.text.startswith("<svg")


async def test_tags_are_or_within_a_parameter_and_and_across_repeats(live_client):
    either = await _sites(live_client, "?tags=canada,synthetic", {"page_length": 100})
    both = await _sites(live_client, "?tags=canada&tags=synthetic")

    either_tags = [set(s["tags"]) for s in either.body]
    assert all(t & {"canada", "synthetic"} for t in either_tags)
    assert any("synthetic" not in t for t in either_tags)
    assert both.body
    assert all({"canada", "synthetic"} <= set(s["tags"]) for s in both.body)
    assert len(both.body) < len(either.body)


async def test_site_filters_by_ids_host_and_name_prefix(live_client):
    by_ids = await _sites(live_client, "?ids=1,5")
    by_host = await _sites(live_client, "?host=netflix.com")
    by_hosts = await _sites(live_client, "?hosts=netflix.com,hulu.com")
    by_name = await _sites(live_client, "?name_starts_with=Synthetic")

    assert sorted(s["id"] for s in by_ids.body) == [1, 5]
    assert [s["name"] for s in by_host.body] == ["Netflix"]
    assert {s["name"] for s in by_hosts.body} == {"Netflix", "Hulu"}
    assert by_name.body
    assert all(s["name"].startswith("Synthetic") for s in by_name.body)


async def test_exclude_hosts_and_top_hosts(live_client):
    excluded = await _sites(
        live_client, "?exclude_hosts=amazon.com", {"page_length": 100}
    )
    topped = await _sites(
        live_client, "?top_hosts=walmart.com,hulu.com", {"page_length": 100}
    )

    assert "amazon.com" not in {s["host"] for s in excluded.body}
    assert [s["host"] for s in topped.body[:2]] == ["walmart.com", "hulu.com"]


async def test_unknown_merchant_site_filter_is_400_naming_it(live_client):
    reply = await _sites(live_client, "?bad_filter=1")

    assert reply.status == 400
    assert reply.body["_errors"][0]["property"] == "bad_filter"
    assert "bad_filter" in reply.body["_errors"][0]["message"]


async def test_site_zero_is_404(live_client):
    reply = await live_client.call("GET", "/merchant_sites/0")

    assert reply.status == 404
    assert reply.body["_errors"]


async def test_paging_header_in_and_total_results_out(live_client):
    reply = await _sites(live_client, "?tags=prod", {"page": 2, "page_length": 5})

    paging = json.loads(reply.headers["x-cardsavr-paging"])
    assert paging["page"] == 2
    assert paging["page_length"] == 5
    assert paging["total_results"] > 5
    assert len(reply.body) == 5


async def test_cardholder_create_is_201_and_put_upserts_by_cuid(live_client):
    created = await live_client.call(
        "POST",
        "/cardholders",
        {"cuid": "upsert-me-1", "first_name": "Ann", "type": "persistent_creds"},
    )
    upserted = await live_client.call(
        "PUT", "/cardholders", {"cuid": "upsert-me-1", "first_name": "Anne"}
    )

    assert created.status == 201
    assert created.body["type"] == "persistent_creds"
    assert upserted.status == 200
    assert upserted.body["id"] == created.body["id"]
    assert upserted.body["first_name"] == "Anne"


async def test_cardholder_with_bad_type_is_400_naming_type(live_client):
    reply = await live_client.call("POST", "/cardholders", {"type": "forever"})

    assert reply.status == 400
    assert reply.body["_errors"][0]["property"] == "type"


async def test_cardholder_webhook_url_must_be_http(live_client):
    reply = await live_client.call(
        "POST", "/cardholders", {"webhook_url": "ftp://example.com/hook"}
    )

    assert reply.status == 400
    assert reply.body["_errors"][0]["property"] == "webhook_url"


async def test_card_response_never_contains_pan_or_cvv(live_client):
    holder = await live_client.new_cardholder()
    card = await live_client.new_card(holder["id"])
    fetched = await live_client.call("GET", f"/cardsavr_cards/{card['id']}")

    for body in (card, fetched.body):
        assert "pan" not in body
        assert "cvv" not in body
        assert "4111111111111111" not in json.dumps(body)
        assert body["last_4"] == "1111"
        assert body["type"] == "VISA"
        assert (body["expiration_month"], body["expiration_year"]) == ("12", "30")


async def test_card_with_bad_pan_is_400_naming_pan(live_client):
    holder = await live_client.new_cardholder()
    reply = await live_client.call(
        "POST",
        "/cardsavr_cards",
        {
            "cardholder_id": holder["id"],
            "pan": "4111111111111112",
            "cvv": "123",
            "expiration_month": "12",
            "expiration_year": "30",
            "name_on_card": "X",
        },
    )

    assert reply.status == 400
    assert reply.body["_errors"][0]["property"] == "pan"
    assert "4111111111111112" not in reply.text


async def test_account_never_returns_its_credentials(live_client):
    holder = await live_client.new_cardholder()
    reply = await live_client.call(
        "POST",
        "/cardsavr_accounts",
        {
            "cardholder_id": holder["id"],
            "merchant_site_id": 1,
            "account_link": {"username": "good_email", "password": "secret-pw"},
        },
    )

    assert reply.status == 201
    assert "secret-pw" not in json.dumps(reply.body)
    assert reply.body["customer_key"] == f"1${holder['cuid']}"


async def test_plural_job_post_returns_an_array_with_hydration(live_client):
    holder = await live_client.new_cardholder()
    card = await live_client.new_card(holder["id"])
    jobs = [
        {
            "status": "REQUESTED",
            "cardholder_id": holder["id"],
            "card_id": card["id"],
            "account": {
                "merchant_site_id": site_id,
                "account_link": {"username": "good_email", "password": "no_tfa"},
            },
        }
        for site_id in (1, 5)
    ]
    reply = await live_client.call(
        "POST",
        "/place_card_on_single_site_jobs",
        jobs,
        {"x-cardsavr-hydration": HYDRATE_ALL},
    )

    assert reply.status == 201
    assert isinstance(reply.body, list)
    assert [j["merchant_site_id"] for j in reply.body] == [1, 5]
    first = reply.body[0]
    assert first["status"] == "REQUESTED"
    assert first["account"]["merchant_site_id"] == 1
    assert first["card"]["last_4"] == "1111"
    assert first["cardholder"]["id"] == holder["id"]
    assert first["credential_requests"] == []
    assert first["job_timeout"] > 0


async def test_job_post_with_a_bad_element_creates_nothing(live_client, sandbox):
    holder = await live_client.new_cardholder()
    card = await live_client.new_card(holder["id"])
    before = len(sandbox.engine.jobs)
    good = {
        "cardholder_id": holder["id"],
        "card_id": card["id"],
        "account": {"merchant_site_id": 1},
    }
    bad = {
        "cardholder_id": holder["id"],
        "card_id": card["id"],
        "account": {"merchant_site_id": 999},
    }

    reply = await live_client.call(
        "POST", "/place_card_on_single_site_jobs", [good, bad]
    )

    assert reply.status == 400
    assert reply.body["_errors"][0]["property"] == "merchant_site_id"
    assert reply.body["_errors"][0]["index"] == 1
    assert len(sandbox.engine.jobs) == before


async def test_job_with_nested_cardholder_card_and_account(live_client):
    reply = await live_client.call(
        "POST",
        "/place_card_on_single_site_jobs",
        {
            "status": "REQUESTED",
            "cardholder": {"cuid": "nested-holder-1", "first_name": "Nia"},
            "card": {
                "pan": "5555555555554444",
                "cvv": "321",
                "expiration_month": "01",
                "expiration_year": "31",
                "name_on_card": "Nia N",
            },
            "account": {"merchant_site_id": 6},
        },
        {"x-cardsavr-hydration": HYDRATE_ALL},
    )

    assert reply.status == 201
    assert reply.body["cardholder"]["cuid"] == "nested-holder-1"
    assert reply.body["card"]["type"] == "MASTERCARD"
    assert reply.body["account"]["merchant_site_id"] == 6


async def test_unknown_hydration_is_400_naming_it(live_client):
    reply = await live_client.call(
        "GET",
        "/place_card_on_single_site_jobs?ids=1",
        headers={"x-cardsavr-hydration": '["everything"]'},
    )

    assert reply.status == 400
    assert reply.body["_errors"][0]["property"] == "everything"


async def test_unknown_job_is_404(live_client):
    reply = await live_client.call("GET", "/place_card_on_single_site_jobs/999999")

    assert reply.status == 404


async def test_job_list_filters_by_ids_cardholder_and_status(live_client):
    holder = await live_client.new_cardholder()
    first = await live_client.start_job(
        {"username": "good_email", "password": "tfa"}, cardholder=holder
    )
    second = await live_client.start_job(None, site_id=5, cardholder=holder)
    other = await live_client.start_job(None)
    base = "/place_card_on_single_site_jobs"

    by_ids = await live_client.call("GET", f"{base}?ids={first['id']},{other['id']}")
    by_holder = await live_client.call("GET", f"{base}?cardholder_ids={holder['id']}")
    pending = await live_client.call(
        "GET", f"{base}?cardholder_ids={holder['id']}&status_include=PENDING_NEWCREDS"
    )
    not_pending = await live_client.call(
        "GET", f"{base}?cardholder_ids={holder['id']}&status_exclude=PENDING_NEWCREDS"
    )

    assert sorted(j["id"] for j in by_ids.body) == sorted([first["id"], other["id"]])
    assert sorted(j["id"] for j in by_holder.body) == [first["id"], second["id"]]
    assert [j["id"] for j in pending.body] == [second["id"]]
    assert [j["id"] for j in not_pending.body] == [first["id"]]
    assert json.loads(by_holder.headers["x-cardsavr-paging"])["total_results"] == 2


async def test_unknown_job_filter_is_400_naming_it(live_client):
    reply = await live_client.call("GET", "/place_card_on_single_site_jobs?colour=red")

    assert reply.status == 400
    assert reply.body["_errors"][0]["property"] == "colour"


async def test_list_of_a_thousand_ids_returns_each_known_job(live_client):
    holder = await live_client.new_cardholder()
    job = await live_client.start_job(None, cardholder=holder)
    ids = ",".join(str(i) for i in range(job["id"] - 999, job["id"] + 1))

    reply = await live_client.call(
        "GET",
        f"/place_card_on_single_site_jobs?ids={ids}",
        headers={"x-cardsavr-paging": '{"page_length": 1000}'},
    )

    assert reply.status == 200
    assert job["id"] in [j["id"] for j in reply.body]


async def test_cardholders_can_be_found_by_cuid(live_client):
    holder = await live_client.new_cardholder(cuid="find-me-by-cuid")

    reply = await live_client.call("GET", "/cardholders?cuid=find-me-by-cuid")

    assert [h["id"] for h in reply.body] == [holder["id"]]


async def test_plural_put_cancels_every_unfinished_job_of_a_cardholder(live_client):
    holder = await live_client.new_cardholder()
    first = await live_client.start_job(None, site_id=13, cardholder=holder)
    second = await live_client.start_job(None, site_id=14, cardholder=holder)
    other = await live_client.start_job(None, site_id=13)

    reply = await live_client.call(
        "PUT",
        f"/place_card_on_single_site_jobs?cardholder_ids={holder['id']}",
        {"status": "CANCEL_REQUESTED"},
    )
    untouched = await live_client.job(other["id"])

    assert sorted(j["id"] for j in reply.body) == sorted([first["id"], second["id"]])
    assert {j["status"] for j in reply.body} == {"CANCEL_REQUESTED"}
    assert untouched["status"] == "PENDING_NEWCREDS"


async def test_plural_put_without_a_filter_is_refused(live_client):
    reply = await live_client.call(
        "PUT", "/place_card_on_single_site_jobs", {"status": "CANCEL_REQUESTED"}
    )

    assert reply.status == 400


async def test_nested_job_with_a_bad_card_creates_no_cardholder(live_client, sandbox):
    before = len(sandbox.engine.cardholders)
    reply = await live_client.call(
        "POST",
        "/place_card_on_single_site_jobs",
        {
            "cardholder": {"cuid": "never-created-1"},
            "card": {
                "pan": "1234",
                "expiration_month": "01",
                "expiration_year": "31",
                "name_on_card": "No One",
            },
            "account": {"merchant_site_id": 1},
        },
    )

    assert reply.status == 400
    assert reply.body["_errors"][0]["property"] == "pan"
    assert len(sandbox.engine.cardholders) == before
