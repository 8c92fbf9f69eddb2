"""Rate limits kept in the Django cache, so every process shares them.

In the scaled mode the cache is Redis, so a limit holds across all daphne
processes; in the embedded mode there is one process and the local-memory
cache is enough. Counters are fixed windows: simple, one round trip, and a
burst at a window edge costs at most twice the limit, which is fine for
slowing down guessing.

Two limits protect cardholders:
- sign-in: failed attempts per username and per client address, so nobody can
  guess a portal password;
- replies: credential replies per cardholder, because CardSavr allows only
  one failed login and two failed TFA codes at the merchant, and a script
  replaying replies could lock the cardholder's merchant account.
"""

import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib import auth, messages
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    scope: str
    limit: int
    window: int  # seconds


def _limit(scope: str, setting: str, default: tuple[int, int]) -> Limit:
    count, window = getattr(settings, setting, default)
    return Limit(scope=scope, limit=int(count), window=int(window))


def login_user_limit() -> Limit:
    return _limit("login-user", "RATELIMIT_LOGIN_PER_USERNAME", (5, 900))


def login_address_limit() -> Limit:
    return _limit("login-addr", "RATELIMIT_LOGIN_PER_ADDRESS", (50, 900))


def reply_limit() -> Limit:
    return _limit("reply", "RATELIMIT_REPLIES_PER_CARDHOLDER", (20, 600))


def _key(limit: Limit, identity: str, now: float) -> tuple[str, float]:
    # Identities (usernames, addresses) are hashed so the cache never holds
    # them in clear; the window index makes old counters expire by themselves.
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()
    window_index = math.floor(now / limit.window)
    reset_at = (window_index + 1) * limit.window
    return f"ratelimit:{limit.scope}:{digest[:32]}:{window_index}", reset_at


def retry_after(limit: Limit, identity: str) -> int | None:
    """Seconds until `identity` may try again, or None while under the limit.

    Without the cache (Redis down) nothing is counted and nothing is refused:
    CardSavr still allows only one wrong login and two wrong codes per job,
    and refusing every sign-in and reply for the length of an outage would
    hurt more than a few uncounted attempts.
    """
    now = time.time()
    key, reset_at = _key(limit, identity, now)
    try:
        count = cache.get(key, 0)
    except Exception as exc:
        logger.warning("Rate limit %s not checked: %s", limit.scope, type(exc).__name__)
        return None
    if count >= limit.limit:
        return max(1, math.ceil(reset_at - now))
    return None


def record(limit: Limit, identity: str) -> int:
    """Count one attempt and return the count in the current window."""
    now = time.time()
    key, reset_at = _key(limit, identity, now)
    timeout = max(1, math.ceil(reset_at - now)) + 1
    try:
        cache.add(key, 0, timeout)
        try:
            return cache.incr(key)
        except ValueError:
            # The key expired between add and incr: this is the first
            # attempt of a new window.
            cache.add(key, 1, timeout)
            return 1
    except Exception as exc:
        logger.warning("Rate limit %s not counted: %s", limit.scope, type(exc).__name__)
        return 0


def hit(limit: Limit, identity: str) -> int | None:
    """Count one attempt; return seconds to wait when it is over the limit."""
    wait = retry_after(limit, identity)
    if wait is not None:
        return wait
    record(limit, identity)
    return None


def client_address(request: HttpRequest) -> str:
    # daphne fills REMOTE_ADDR from X-Forwarded-For only with --proxy-headers,
    # which the deployment guide enables behind our own proxy alone.
    return request.META.get("REMOTE_ADDR") or "unknown"


def _minutes(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


class RateLimitedLoginView(LoginView):
    """Django's login view, refusing to check passwords after too many failures.

    Failures are counted per username and per client address; a success does
    not reset them, so an attacker cannot interleave a known account to keep
    guessing another.
    """

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        username = request.POST.get(auth.get_user_model().USERNAME_FIELD, "")
        username = username.strip().lower()[:150]
        address = client_address(request)
        waits = [
            retry_after(login_user_limit(), username),
            retry_after(login_address_limit(), address),
        ]
        wait = max((w for w in waits if w is not None), default=None)
        if wait is not None:
            logger.warning("Sign-in refused by rate limit for %ss", wait)
            # The form is shown again unbound, so no password is checked
            # while the limit holds; the message says what happened.
            messages.error(
                request,
                "Too many failed sign-in attempts. "
                f"Wait {_minutes(wait)} and try again.",
            )
            form = self.form_class(request=request, initial={"username": username})
            response = self.render_to_response(self.get_context_data(form=form))
            response.status_code = 429
            response["Retry-After"] = str(wait)
            return response
        response = super().post(request, *args, **kwargs)
        if not request.user.is_authenticated:
            record(login_user_limit(), username)
            record(login_address_limit(), address)
        return response


def reply_retry_after(user_id: int) -> int | None:
    """Count one credential reply by this user (for views and the consumer).

    Returns the seconds to wait when the reply must be refused.
    """
    wait = hit(reply_limit(), f"user:{user_id}")
    if wait is not None:
        logger.warning("Reply refused by rate limit for user %s", user_id)
    return wait


def reply_rate_limited_message(wait: int) -> str:
    return (
        f"Too many answers sent in a short time. Wait {_minutes(wait)} and try again."
    )


def reply_rate_limited_response(request: HttpRequest, wait: int) -> HttpResponse:
    message = reply_rate_limited_message(wait)
    if request.path.startswith("/api/") or "json" in request.headers.get("Accept", ""):
        response: HttpResponse = JsonResponse(
            {"error": message, "field": None}, status=429
        )
    else:
        response = HttpResponse(message, status=429, content_type="text/plain")
    response["Retry-After"] = str(wait)
    return response


def rate_limit_replies(view: Callable) -> Callable:
    """Refuse a reply view with 429 once a cardholder sent too many replies.

    Apply it to every view that forwards a credential reply. Anonymous
    requests pass through untouched: the view's own login check answers them.
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if request.method == "POST" and request.user.is_authenticated:
            wait = reply_retry_after(request.user.pk)
            if wait is not None:
                return reply_rate_limited_response(request, wait)
        return view(request, *args, **kwargs)

    @functools.wraps(view)
    async def async_wrapper(request: HttpRequest, *args, **kwargs):
        if request.method == "POST":
            user = await request.auser()
            if user.is_authenticated:
                wait = await sync_to_async(reply_retry_after)(user.pk)
                if wait is not None:
                    return reply_rate_limited_response(request, wait)
        return await view(request, *args, **kwargs)

    return async_wrapper if iscoroutinefunction(view) else wrapper
