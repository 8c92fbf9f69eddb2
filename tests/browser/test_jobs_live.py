"""The cardholder's journey in a real browser against the sandbox."""

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Long enough for several poller ticks and sandbox steps on a busy machine.
JOB_TIMEOUT = 20_000


def start_job(page, site: str, *, username: str = "", password: str = "") -> None:
    """Start one job at `site` from the start page, with or without sign-in."""
    page.get_by_label("Find a merchant by name or web address").fill(site)
    item = page.locator("li.site", has_text=site).first
    item.locator('input[name="site"]').check()
    if username:
        item.locator('input[name$="-username"]').fill(username)
        item.locator('input[name$="-password"]').fill(password)
        page.get_by_role("button", name="Start with my sign-in details").click()
    else:
        page.get_by_role("button", name="Start now, I'll sign in when asked").click()
    page.wait_for_url(re.compile(r"/$"))
    # Marks this document: a reload would lose it.
    page.evaluate("window.sameDocument = true")


def job_card(page, site: str):
    return page.locator("article.job", has_text=site).first


def expect_success(page, site: str) -> None:
    card = job_card(page, site)
    card.locator(".badge--success").wait_for(timeout=JOB_TIMEOUT)
    assert "Done: your card is saved here" in card.locator(".badge").inner_text()
    assert card.get_by_role("progressbar").get_attribute("aria-valuenow") == "100"


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.sameDocument === true")


def test_log_in_answer_a_code_and_see_success_without_reload(page, live, cardholder):
    page.goto(live.url + "/")
    page.get_by_label("Username").fill(cardholder.user.username)
    page.get_by_label("Password").fill(cardholder.test_password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(live.url + "/")
    page.locator('.connection[data-state="live"]').wait_for()
    page.goto(live.url + "/start/")
    start_job(page, "Amazon", username="good_email", password="tfa")

    code = page.get_by_label("Verification code")
    code.wait_for(timeout=JOB_TIMEOUT)
    assert code.get_attribute("autocomplete") == "one-time-code"
    assert code.get_attribute("inputmode") == "numeric"
    assert_not_reloaded(page)
    code.fill("1234")
    page.get_by_role("button", name="Send code").click()

    expect_success(page, "Amazon")
    assert_not_reloaded(page)
    assert page.script_errors == []


def test_wrong_sign_in_asks_again_and_the_new_details_succeed(logged_in):
    page = logged_in("/start/")
    start_job(page, "Netflix", username="someone_else", password="good_password")

    card = job_card(page, "Netflix")
    password = card.locator('input[name="password"]')
    password.wait_for(timeout=JOB_TIMEOUT)
    assert password.get_attribute("type") == "password"
    card.get_by_role("button", name="Show").click()
    assert password.get_attribute("type") == "text"
    assert card.get_by_role("button", name="Hide").get_attribute("aria-pressed") == (
        "true"
    )
    assert "Sign in to Netflix" in card.locator(".prompt__title").inner_text()

    card.locator('input[name="username"]').fill("good_email")
    password.fill("no_tfa")
    card.get_by_role("button", name="Send sign-in").click()
    expect_success(page, "Netflix")
    assert_not_reloaded(page)


def test_security_questions_are_answered_by_their_labels(logged_in):
    page = logged_in("/start/")
    start_job(page, "Spotify", username="good_email", password="security")

    first = page.get_by_label("What was the name of your first pet?")
    first.wait_for(timeout=JOB_TIMEOUT)
    first.fill("Max")
    page.get_by_label("What is your mother's maiden name?").fill("Smith")
    page.get_by_role("button", name="Send answers").click()
    expect_success(page, "Spotify")


def test_push_approval_shows_the_instruction_then_succeeds(logged_in):
    page = logged_in("/start/")
    # Signing in from the dashboard makes sure the page is live before the
    # push approval opens.
    start_job(page, "Hulu")
    card = job_card(page, "Hulu")
    card.locator('input[name="username"]').wait_for(timeout=JOB_TIMEOUT)
    # The portal answers a push approval by itself, so the prompt may be
    # short-lived: record what it showed as soon as it appears.
    page.evaluate(
        """() => {
          window.pushSeen = [];
          const jobs = document.getElementById("jobs");
          new MutationObserver(() => {
            for (const push of jobs.querySelectorAll('[data-slot="push"]')) {
              if (!push.hidden) window.pushSeen.push(push.innerText);
            }
          }).observe(jobs, {subtree: true, childList: true, attributes: true});
        }"""
    )
    card.locator('input[name="username"]').fill("good_email")
    card.locator('input[name="password"]').fill("tfa_message")
    card.get_by_role("button", name="Send sign-in").click()
    expect_success(page, "Hulu")
    seen = page.evaluate("window.pushSeen")
    assert any(re.search(r"Tap \d+ on your phone", text) for text in seen), seen
    assert any("Waiting for your approval" in text for text in seen)
    assert job_card(page, "Hulu").locator("input:not([type=hidden])").count() == 0


def test_cancel_ends_the_job_as_cancelled(logged_in):
    page = logged_in("/start/")
    start_job(page, "Walmart")
    card = job_card(page, "Walmart")
    card.locator('input[name="username"]').wait_for(timeout=JOB_TIMEOUT)
    card.get_by_role("button", name="Cancel this job").click()
    card = job_card(page, "Walmart")
    card.locator(".badge--cancelled").wait_for(timeout=JOB_TIMEOUT)
    assert "You cancelled this update" in card.inner_text()
    card.get_by_role("button", name="Try again").click()
    page.get_by_text("Started again at Walmart").wait_for()
    again = page.locator("article.job", has_text="Walmart").filter(
        has=page.locator('input[name="username"]')
    )
    again.first.wait_for(timeout=JOB_TIMEOUT)
    assert page.locator("article.job", has_text="Walmart").count() == 2


def test_upstream_banner_follows_cardsavr_reachability(logged_in, live):
    from asgiref.sync import sync_to_async

    from jobs import services

    page = logged_in("/")
    page.locator('.connection[data-state="live"]').wait_for()
    banner = page.locator("#upstream-banner")
    assert banner.is_hidden()
    set_state = sync_to_async(services.set_upstream_state)
    live.run(set_state(False, "CardSavr is not answering", 4.0))
    try:
        banner.wait_for(state="visible")
        assert "Your jobs are safe." in banner.inner_text()
    finally:
        live.run(set_state(True, "", None))
    banner.wait_for(state="hidden")


def test_prompt_near_its_deadline_warns_visibly_and_to_screen_readers(logged_in):
    # At the suite's sandbox speed a job's whole budget is a few seconds, so
    # every prompt opens inside its last minute.
    page = logged_in("/start/")
    start_job(page, "Target", username="good_email", password="tfa")
    card = job_card(page, "Target")
    warning = card.locator('[data-slot="countdown-warning"]')
    warning.wait_for(state="visible", timeout=JOB_TIMEOUT)
    assert "Less than a minute left" in warning.inner_text()
    assert re.fullmatch(
        r"\d+:\d\d", card.locator('[data-slot="countdown-value"]').inner_text()
    )
    page.wait_for_function(
        "document.getElementById('announce-assertive').textContent"
        ".includes('Less than a minute left to answer Target')"
    )


def test_an_update_to_the_open_question_keeps_what_is_being_typed(logged_in, live):
    from asgiref.sync import sync_to_async
    from django.db.models import F

    from jobs import services
    from jobs.models import Job

    page = logged_in("/start/")
    start_job(page, "Apple", username="good_email", password="tfa")
    code = page.get_by_label("Verification code")
    code.wait_for(timeout=JOB_TIMEOUT)
    code.fill("12")
    job_id = int(job_card(page, "Apple").get_attribute("data-job-id"))

    def touch() -> None:
        Job.objects.filter(pk=job_id).update(
            version=F("version") + 1, status_message="Still waiting for your code."
        )
        services.push_job(Job.objects.get(pk=job_id))

    live.run(sync_to_async(touch)())
    card = job_card(page, "Apple")
    card.get_by_text("Still waiting for your code.").wait_for()
    assert code.input_value() == "12"
    assert code.evaluate("element => element === document.activeElement")


def test_lost_connection_reconnects_and_catches_up(logged_in):
    sockets = []
    held = []
    refuse = {"on": False}

    def route(ws):
        if refuse["on"]:
            # Closed from the test below: a handler cannot wait on the browser.
            held.append(ws)
            return
        server = ws.connect_to_server()
        sent = []
        ws.on_message(lambda message: (sent.append(message), server.send(message)))
        sockets.append((ws, sent))

    page = logged_in("/start/")
    page.route_web_socket(re.compile(r"/ws/jobs/$"), route)
    start_job(page, "Uber", username="good_email", password="no_tfa")
    page.locator('.connection[data-state="live"]').wait_for()

    # The page loses its socket, and every new one fails while the job ends.
    refuse["on"] = True
    sockets[-1][0].close()
    page.locator(
        '.connection[data-state="offline"]', has_text="Live updates lost"
    ).wait_for()
    for _ in range(60):
        page.wait_for_timeout(50)
        while held:
            held.pop().close()
    assert job_card(page, "Uber").locator(".badge--success").count() == 0

    refuse["on"] = False
    while held:
        held.pop().close()
    expect_success(page, "Uber")
    assert page.locator(".connection").get_attribute("data-state") == "live"
    assert '{"type":"resync"}' in sockets[-1][1]
    assert_not_reloaded(page)


def answer_code(page, site: str) -> None:
    code = job_card(page, site).get_by_label("Verification code")
    code.wait_for(timeout=JOB_TIMEOUT)
    code.fill("1234")
    page.get_by_role("button", name="Send code").click()


def test_live_page_sends_its_answer_over_the_socket(logged_in):
    frames = []
    posts = []

    def route(ws):
        server = ws.connect_to_server()
        ws.on_message(lambda message: (frames.append(message), server.send(message)))

    page = logged_in("/start/")
    page.route_web_socket(re.compile(r"/ws/jobs/$"), route)
    page.on("request", lambda r: posts.append(r.url) if "/reply/" in r.url else None)
    start_job(page, "Amazon", username="good_email", password="tfa")
    page.locator('.connection[data-state="live"]').wait_for()

    answer_code(page, "Amazon")

    expect_success(page, "Amazon")
    assert [f for f in frames if '"type":"reply"' in f]
    assert posts == []


# A browser whose websockets never open (a proxy that refuses them, say): each
# one reports its close at once, and the page keeps trying in the background.
REFUSED_WEBSOCKET = """
window.WebSocket = class {
  static OPEN = 1;
  constructor() { this.readyState = 3; }
  addEventListener(type, listener) {
    if (type === "close") setTimeout(() => listener({ code: 1006 }), 0);
  }
  send() { throw new Error("not open"); }
  close() {}
};
"""


def test_page_without_its_socket_sends_the_answer_over_http(logged_in):
    posts = []
    page = logged_in("/start/")
    page.add_init_script(REFUSED_WEBSOCKET)
    page.on("request", lambda r: posts.append(r.url) if "/reply/" in r.url else None)
    start_job(page, "Amazon", username="good_email", password="tfa")
    code = job_card(page, "Amazon").get_by_label("Verification code")
    # Without live updates only a reload shows the question.
    for _ in range(40):
        if code.count():
            break
        page.wait_for_timeout(500)
        page.reload()
    assert page.locator(".connection").get_attribute("data-state") != "live"

    code.fill("1234")
    page.get_by_role("button", name="Send code").click()

    page.get_by_text("Sent. Waiting for the merchant").first.wait_for(timeout=10_000)
    assert [url for url in posts if "/api/jobs/" in url]
