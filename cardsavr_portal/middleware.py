"""Response headers that Django 5.2 does not set by itself.

Django's SecurityMiddleware and XFrameOptionsMiddleware already send nosniff,
Referrer-Policy, Cross-Origin-Opener-Policy, HSTS and X-Frame-Options from
settings. This adds a strict Content-Security-Policy (5.2 has none built in)
and keeps pages and API answers out of every cache: prompt pages show what
CardSavr asked a cardholder, and a shared or back-button cache must not.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers

# No inline script or style anywhere: every script and stylesheet is a file
# under /static/, logos are served by the portal itself, and the only other
# connection a page makes is its own websocket.
_POLICY = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self' {websocket}",
    "frame-ancestors 'none'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
)

PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=()"


def content_security_policy(request: HttpRequest) -> str:
    """Return the policy for this request, allowing its own websocket origin."""
    scheme = "wss" if request.is_secure() else "ws"
    try:
        websocket = f"{scheme}://{request.get_host()}"
    except DisallowedHost:
        # The 400 answer for a foreign Host gets no websocket at all.
        websocket = ""
    return "; ".join(_POLICY).format(websocket=websocket).replace(" ;", ";")


class SecurityHeadersMiddleware:
    # Both modes, so that under ASGI an async view's request is not carried to
    # a worker thread and back just for these headers.
    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.static_prefix = settings.STATIC_URL or "/static/"
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self.add_headers(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return self.add_headers(request, await self.get_response(request))

    def add_headers(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = content_security_policy(request)
        response.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        # Static files and logos may be cached; a view that chose its own
        # Cache-Control (a logo with max-age) keeps it. Everything else is a
        # page or an API answer about someone's jobs.
        if not request.path.startswith(self.static_prefix) and (
            "Cache-Control" not in response
        ):
            add_never_cache_headers(response)
        return response
