"""The server-rendered pages, with Django's test client (no JavaScript)."""

import re

import pytest
from django.test import Client
from django.utils import timezone

from jobs.models import JobEvent

from .factories import (
    CREDENTIALS_LINK,
    PASSWORD,
    PUSH_LINK,
    SECURITY_LINK,
    TFA_LINK,
    logged_in_client,
    make_cardholder,
    make_job,
    make_site,
)

pytestmark = pytest.mark.django_db

VALID_CARD = {
    "number": "4111 1111 1111 1111",
    "expiration_month": "4",
    "expiration_year": str(timezone.now().year + 2),
    "cvv": "123",
    "name_on_card": "Alice Example",
    "street": "1 Main St",
    "city": "Springfield",
    "state": "IL",
    "postal_code": "62701",
}


def html(response) -> str:
    return response.content.decode()


@pytest.mark.parametrize("url", ["/", "/card/", "/start/", "/jobs/1/"])
def test_pages_require_login(url):
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_login_with_a_wrong_password_says_what_went_wrong():
    make_cardholder("alice")
    response = Client().post(
        "/accounts/login/", {"username": "alice", "password": "wrong-password"}
    )
    assert response.status_code == 200
    assert "The username or password is not right" in html(response)


def test_login_leads_to_the_dashboard():
    make_cardholder("alice")
    response = Client().post(
        "/accounts/login/", {"username": "alice", "password": PASSWORD}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/"
    assert "My jobs" in html(response)


def test_header_shows_the_cardholders_name_and_a_logout_form():
    page = html(logged_in_client(make_cardholder("alice")).get("/"))
    assert 'class="account__name">Alice<' in page
    assert re.search(r'<form method="post" action="/accounts/logout/"', page)


def test_dashboard_shows_a_progress_bar_with_values():
    holder = make_cardholder("alice")
    make_job(holder, percent_complete=42.4)
    page = html(logged_in_client(holder).get("/"))
    assert 'role="progressbar"' in page
    assert 'aria-valuenow="42"' in page
    assert 'aria-valuemin="0" aria-valuemax="100"' in page
    assert "42% complete" in page


def test_dashboard_lists_open_prompts_first_by_time_left():
    holder = make_cardholder("alice")
    plain = make_job(holder, site=make_site("Plain"))
    later = make_job(
        holder, site=make_site("Later"), request_type="tfa", seconds_left=200
    )
    sooner = make_job(
        holder, site=make_site("Sooner"), request_type="tfa", seconds_left=90
    )
    page = html(logged_in_client(holder).get("/")).split("<template")[0]
    order = [
        int(i) for i in re.findall(r'<article class="job[^"]*" id="job-(\d+)"', page)
    ]
    assert order == [sooner.pk, later.pk, plain.pk]


def test_tfa_prompt_is_a_one_time_code_field_with_envelope_and_countdown():
    holder = make_cardholder("alice")
    job = make_job(holder, request_type="tfa", account_link=TFA_LINK)
    page = html(logged_in_client(holder).get("/"))
    envelope = job.credential_requests.get().envelope_id
    assert f'name="envelope_id" value="{envelope}"' in page
    field = re.search(r'<input id="f-\d+-tfa"[^>]*>', page, re.S).group(0)
    assert 'autocomplete="one-time-code"' in field
    assert 'inputmode="numeric"' in field
    assert 'type="text"' in field
    assert "Time left to answer" in page


def test_credentials_prompt_masks_the_password_with_a_show_toggle():
    holder = make_cardholder("alice")
    make_job(holder, request_type="initial_account_link", account_link=CREDENTIALS_LINK)
    page = html(logged_in_client(holder).get("/"))
    password = re.search(r'<input id="f-\d+-password"[^>]*>', page, re.S).group(0)
    username = re.search(r'<input id="f-\d+-username"[^>]*>', page, re.S).group(0)
    assert 'type="password"' in password
    assert 'type="text"' in username
    assert re.search(r'data-slot="reveal" aria-controls="f-\d+-password"', page)


def test_security_questions_are_labelled_by_the_question():
    holder = make_cardholder("alice")
    job = make_job(holder, request_type="security", account_link=SECURITY_LINK)
    page = html(logged_in_client(holder).get("/"))
    assert (
        f'<label for="f-{job.pk}-security_1" data-slot="field-label">Your first pet'
        in (page)
    )
    assert f'<label for="f-{job.pk}-security_2"' in page


def test_push_approval_shows_its_instruction_and_no_field():
    holder = make_cardholder("alice")
    job = make_job(holder, request_type="tfa_message", account_link=PUSH_LINK)
    page = html(logged_in_client(holder).get("/"))
    article = page[page.index(f'id="job-{job.pk}"') :]
    article = article[: article.index("</article>")]
    assert "Tap 54 in the Shop app" in article
    assert "Waiting for your approval" in article
    assert f'id="f-{job.pk}-tfa_message"' not in article


def test_prompt_near_its_deadline_shows_the_one_minute_warning():
    holder = make_cardholder("alice")
    make_job(holder, request_type="tfa", seconds_left=45)
    page = html(logged_in_client(holder).get("/"))
    warning = re.search(r'<p class="countdown__warning"[^>]*>', page).group(0)
    assert "hidden" not in warning
    assert 'aria-live="assertive"' in page


def test_finished_failure_shows_status_message_next_steps_and_try_again():
    holder = make_cardholder("alice")
    job = make_job(
        holder,
        status="TOO_MANY_LOGIN_FAILURES",
        status_message="The login details were wrong.",
        termination_type="USER_DATA_FAILURE",
        outcome="failed",
    )
    page = html(logged_in_client(holder).get("/"))
    assert "The login details were wrong." in page
    assert "Check your username and password" in page
    assert f'action="/jobs/{job.pk}/retry/" data-slot="retry-form">' in page
    assert ">Failed<" in page


def test_job_that_reached_updating_says_the_cardholder_may_leave():
    holder = make_cardholder("alice")
    make_job(holder, status="UPDATING", auth_percent_complete=100)
    page = html(logged_in_client(holder).get("/"))
    leave = re.search(r'<p class="job__leave"[^>]*>', page).group(0)
    assert "hidden" not in leave


def test_another_cardholders_job_page_is_404():
    bob_job = make_job(make_cardholder("bob"))
    client = logged_in_client(make_cardholder("alice"))
    assert client.get(f"/jobs/{bob_job.pk}/").status_code == 404


@pytest.mark.parametrize("action", ["reply", "cancel", "retry"])
def test_posting_to_another_cardholders_job_is_404(action):
    bob_job = make_job(make_cardholder("bob"), request_type="tfa")
    client = logged_in_client(make_cardholder("alice"))
    envelope = bob_job.credential_requests.get().envelope_id
    response = client.post(
        f"/jobs/{bob_job.pk}/{action}/", {"envelope_id": envelope, "tfa": "1234"}
    )
    assert response.status_code == 404


def test_another_cardholders_job_is_not_on_the_dashboard():
    make_job(make_cardholder("bob"), site=make_site("Bobs Shop"))
    page = html(logged_in_client(make_cardholder("alice")).get("/"))
    assert "Bobs Shop" not in page


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/jobs/{id}/reply/", {"envelope_id": "{env}", "tfa": "1234"}),
        ("/jobs/{id}/cancel/", {}),
        ("/jobs/{id}/retry/", {}),
        ("/card/", VALID_CARD),
        ("/start/", {"site": "1", "mode": "later"}),
        ("/accounts/logout/", {}),
    ],
)
def test_posts_without_a_csrf_token_are_refused(url, data):
    holder = make_cardholder("alice")
    job = make_job(holder, request_type="tfa")
    envelope = job.credential_requests.get().envelope_id
    client = logged_in_client(holder, enforce_csrf_checks=True)
    data = {k: v.replace("{env}", envelope) for k, v in data.items()}
    response = client.post(url.replace("{id}", str(job.pk)), data)
    assert response.status_code == 403


def test_card_form_errors_name_the_field_and_never_echo_number_or_cvv():
    client = logged_in_client(make_cardholder("alice", card=False))
    response = client.post(
        "/card/", {**VALID_CARD, "number": "4111 1111 1111 1112", "cvv": "98x"}
    )
    page = html(response)
    assert response.status_code == 400
    assert "Card number: The card number is not valid" in page
    assert "Security code (CVV): The security code (CVV) has 3 or 4 digits." in page
    assert "4111 1111 1111 1112" not in page
    assert "4111111111111112" not in page
    assert "98x" not in page
    assert 'aria-invalid="true"' in page


def test_card_form_refuses_an_expired_card():
    client = logged_in_client(make_cardholder("alice", card=False))
    year = timezone.now().year
    response = client.post(
        "/card/",
        {**VALID_CARD, "expiration_year": str(year), "expiration_month": "1"},
    )
    if timezone.now().month == 1:
        pytest.skip("January: month 1 of this year has not passed yet")
    assert "Expiry month: The expiry date is in the past" in html(response)


def test_card_form_keeps_the_non_secret_fields_after_an_error():
    client = logged_in_client(make_cardholder("alice", card=False))
    page = html(client.post("/card/", {**VALID_CARD, "cvv": ""}))
    assert 'value="Alice Example"' in page
    assert "Enter the security code (CVV)." in page


def test_card_page_shows_only_last_four_brand_and_expiry():
    holder = make_cardholder("alice")
    page = html(logged_in_client(holder).get("/card/"))
    card = holder.cards.get()
    assert f"Visa ending 4242</strong>, expires 04/{card.expiration_year}" in page


def test_start_without_a_card_sends_the_cardholder_to_the_card_page():
    client = logged_in_client(make_cardholder("alice", card=False))
    response = client.get("/start/", follow=True)
    assert response.redirect_chain[-1][0] == "/card/"
    assert "Add your card first" in html(response)


def test_start_filter_works_without_javascript():
    make_site("Amazon", host="amazon.com")
    make_site("Netflix", host="netflix.com")
    client = logged_in_client(make_cardholder("alice"))
    page = html(client.get("/start/", {"q": "netfl"}))
    assert "Netflix" in page
    assert "Amazon" not in page
    page = html(client.get("/start/", {"q": "amazon.c"}))
    assert "Amazon" in page


def test_start_shows_each_sites_initial_fields_and_the_start_now_choice():
    site = make_site(
        "Amazon",
        account_link=[
            {"key_name": "username", "label": "Email", "type": "initial_account_link"},
            {
                "key_name": "password",
                "label": "Password",
                "type": "initial_account_link",
                "secret": True,
            },
            {"key_name": "tfa", "label": "Code", "type": "tfa"},
        ],
    )
    page = html(logged_in_client(make_cardholder("alice")).get("/start/"))
    assert f'name="site-{site.pk}-username" type="text"' in page
    assert f'name="site-{site.pk}-password" type="password"' in page
    assert f'name="site-{site.pk}-tfa"' not in page
    assert "Start now, I'll sign in when asked" in page


def test_start_with_missing_credentials_names_the_site_and_field():
    site = make_site(
        "Amazon",
        account_link=[
            {"key_name": "username", "label": "Email", "type": "initial_account_link"}
        ],
    )
    client = logged_in_client(make_cardholder("alice"))
    response = client.post("/start/", {"site": str(site.pk), "mode": "now"})
    assert response.status_code == 400
    assert "Amazon: enter your email" in html(response)


def test_start_without_choosing_a_site_says_so():
    client = logged_in_client(make_cardholder("alice"))
    response = client.post("/start/", {"mode": "later"})
    assert "Choose at least one merchant site." in html(response)


def test_logo_is_served_with_its_type_and_long_cache():
    site = make_site(
        logo=b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        logo_content_type="image/svg+xml",
    )
    response = Client().get(f"/merchant-sites/{site.pk}/logo")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert response.content.startswith(b"<svg")
    assert "max-age=604800" in response["Cache-Control"]
    assert "sandbox" in response["Content-Security-Policy"]


def test_logo_is_revalidated_by_etag():
    site = make_site(logo=b"\x89PNG....", logo_content_type="image/png")
    first = Client().get(f"/merchant-sites/{site.pk}/logo")
    again = Client().get(
        f"/merchant-sites/{site.pk}/logo", HTTP_IF_NONE_MATCH=first["ETag"]
    )
    assert again.status_code == 304


def test_site_without_logo_is_404():
    site = make_site()
    assert Client().get(f"/merchant-sites/{site.pk}/logo").status_code == 404


def test_job_detail_shows_the_timeline_without_values():
    holder = make_cardholder("alice")
    job = make_job(holder, status="PENDING_TFA")
    JobEvent.objects.create(
        job=job,
        kind=JobEvent.Kind.PROMPT_ANSWERED,
        data={"fields": ["tfa"], "envelope_id": "secret-envelope"},
    )
    JobEvent.objects.create(
        job=job, kind=JobEvent.Kind.STATUS, status="UPDATING", status_message="Almost"
    )
    page = html(logged_in_client(holder).get(f"/jobs/{job.pk}/"))
    assert "Cardholder answered" in page
    assert "UPDATING" in page and "Almost" in page
    assert "secret-envelope" not in page


def test_reply_to_a_question_no_longer_open_changes_nothing_and_says_so():
    holder = make_cardholder("alice")
    job = make_job(holder, request_type="tfa")
    client = logged_in_client(holder)
    response = client.post(
        f"/jobs/{job.pk}/reply/", {"envelope_id": "other==", "tfa": "1234"}, follow=True
    )
    assert "already answered or has expired" in html(response)
    assert job.credential_requests.get().answered_at is None


def test_reply_missing_a_field_names_it_and_sends_nothing():
    holder = make_cardholder("alice")
    job = make_job(holder, request_type="security", account_link=SECURITY_LINK)
    envelope = job.credential_requests.get().envelope_id
    client = logged_in_client(holder)
    response = client.post(
        f"/jobs/{job.pk}/reply/",
        {"envelope_id": envelope, "security_1": "Max"},
        follow=True,
    )
    assert "Your mother&#x27;s maiden name?: Enter" in html(response)
    assert "Max" not in html(response)
    assert job.credential_requests.get().answered_at is None


def test_pages_carry_no_inline_script_or_style():
    holder = make_cardholder("alice")
    make_job(holder, request_type="tfa")
    for url in ["/", "/card/", "/start/", "/accounts/logout/"]:
        page = html(logged_in_client(holder).get(url))
        assert not re.search(
            r"<script(?![^>]*\bsrc=)",
            page.replace('<script id="client-texts" type="application/json">', ""),
        ), url
        assert " style=" not in page
        assert not re.search(r"\son[a-z]+=", page)


def test_dashboard_shows_the_upstream_banner_while_cardsavr_is_unreachable():
    from django.core.cache import cache

    from jobs import selectors

    client = logged_in_client(make_cardholder("alice"))
    banner = re.compile(
        r'<p class="banner banner--warning" id="upstream-banner"( hidden)?>'
    )
    assert banner.search(html(client.get("/"))).group(1) == " hidden"
    cache.set(
        selectors.UPSTREAM_STATE_KEY,
        {"reachable": False, "message": "", "since": None, "retry_in": 3.0},
    )
    try:
        page = html(client.get("/"))
    finally:
        cache.delete(selectors.UPSTREAM_STATE_KEY)
    assert banner.search(page).group(1) is None
    assert "CardSavr is not answering right now; we keep retrying." in page
