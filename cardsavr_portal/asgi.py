import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cardsavr_portal.settings")

# Allocations between collections of the youngest generation (Python's
# default is 700).
GC_YOUNG_THRESHOLD = 10_000

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from cardsavr_portal.websocket_auth import WebsocketAuthMiddleware  # noqa: E402
from jobs.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            WebsocketAuthMiddleware(URLRouter(websocket_urlpatterns))
        ),
    }
)

# A full collection walks every object the process holds; with a thousand
# sockets open it stopped the event loop, and every push, for about 110 ms.
# What is loaded by now lives as long as the process, so the collector can
# leave it alone (frozen), and a larger first generation lets a poll tick's
# short-lived objects die by reference count before a collection promotes
# them: together, fewer and shorter pauses (docs/benchmarks.md).
gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
gc.freeze()
