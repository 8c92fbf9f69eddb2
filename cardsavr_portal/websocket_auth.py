"""Signs a websocket in from the session cookie its page was served with.

Channels' AuthMiddlewareStack does this too, but it also wraps `send` so that
an HTTP response can save a changed session, and so checks the session on
every frame the socket sends; with a poll tick pushing to a thousand sockets
that check was a fifth of the push's CPU (docs/benchmarks.md). A websocket
never changes its session, so this middleware reads it once, at connect, and
leaves `send` alone.
"""

from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie


class _SessionHolder:
    """What django.contrib.auth.get_user reads from a request."""

    def __init__(self, session) -> None:
        self.session = session


def session_key_from(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            return parse_cookie(value.decode("latin1")).get(
                settings.SESSION_COOKIE_NAME
            )
    return None


def session_user(session_key: str | None) -> AbstractBaseUser | AnonymousUser:
    """The user signed in by this session now, or AnonymousUser."""
    if not session_key:
        return AnonymousUser()
    store = import_module(settings.SESSION_ENGINE).SessionStore
    # Django's own check: the backend must still be configured and the
    # session's password hash must still match, or the session is flushed.
    return auth.get_user(_SessionHolder(store(session_key)))


class WebsocketAuthMiddleware:
    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        session_key = session_key_from(scope)
        user = await database_sync_to_async(session_user)(session_key)
        # The key stays in the scope so a consumer can check, before acting
        # for the user, that the session has not ended since (session_user).
        scope = {**scope, "user": user, "session_key": session_key}
        return await self.inner(scope, receive, send)
