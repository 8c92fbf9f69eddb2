"""System checks for configurations that Django's own checks cannot know about.

Each one names a setting that would quietly undo a protection: an Origin check
that lets everyone in, pushes that never leave the process, secrets sent
without TLS. They run with every `manage.py` command and in `check --deploy`.
"""

from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit

from channels.layers import InMemoryChannelLayer
from django.apps import AppConfig
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

# daphne 4.2.2 added frame and message size limits and stopped header
# smuggling into the ASGI scope (which could forge the websocket Origin).
MINIMUM_DAPHNE = (4, 2, 2)
IN_MEMORY_LAYER = "channels.layers.InMemoryChannelLayer"


class PortalChecksConfig(AppConfig):
    """Listed in INSTALLED_APPS so the checks below are registered at start-up."""

    name = "cardsavr_portal"
    label = "cardsavr_portal"
    verbose_name = "CardSavr portal configuration checks"


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


@register(Tags.security)
def check_allowed_hosts(app_configs, **kwargs) -> list:
    if "*" in settings.ALLOWED_HOSTS:
        return [
            Error(
                "ALLOWED_HOSTS contains '*'.",
                hint=(
                    "Channels checks websocket Origins against ALLOWED_HOSTS, and "
                    "'*' lets any web site open a cardholder's socket. List the "
                    "portal's host names in DJANGO_ALLOWED_HOSTS."
                ),
                id="portal.E001",
            )
        ]
    return []


@register(Tags.security)
def check_cardsavr_url(app_configs, **kwargs) -> list:
    if urlsplit(settings.CARDSAVR_API_URL).scheme != "https":
        return [
            Error(
                "CARDSAVR_API_URL does not use https.",
                hint=(
                    "Merchant passwords, TFA codes and card numbers travel to "
                    "CardSavr; set an https:// URL."
                ),
                id="portal.E002",
            )
        ]
    return []


def _layer() -> dict:
    return settings.CHANNEL_LAYERS.get("default", {})


def _layer_in_memory() -> bool:
    """Whether the default layer lives in one process (any in-memory kind)."""
    backend = _layer().get("BACKEND", "")
    try:
        return issubclass(import_string(backend), InMemoryChannelLayer)
    except ImportError:
        return backend == IN_MEMORY_LAYER


@register(Tags.compatibility)
def check_scaled_mode(app_configs, **kwargs) -> list:
    if not getattr(settings, "REDIS_URL", ""):
        return []
    problems = []
    if _layer_in_memory():
        problems.append(
            Error(
                "REDIS_URL is set but the channel layer is in memory.",
                hint=(
                    "Pollers and web processes are separate in the scaled mode; "
                    "an in-memory layer never carries a push between them. Use "
                    "channels_redis.core.RedisChannelLayer."
                ),
                id="portal.E003",
            )
        )
    cache_backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if "redis" not in cache_backend.lower():
        problems.append(
            Error(
                "REDIS_URL is set but the default cache is not Redis.",
                hint=(
                    "Rate limits and CardSavr's reachability live in the cache "
                    "and must be shared by every process."
                ),
                id="portal.E004",
            )
        )
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        problems.append(
            Warning(
                "REDIS_URL is set but the database is SQLite.",
                hint=(
                    "Several pollers need PostgreSQL to share leases "
                    "(select_for_update does nothing on SQLite). Set DATABASE_URL."
                ),
                id="portal.W005",
            )
        )
    return problems


@register(Tags.compatibility)
def check_group_expiry(app_configs, **kwargs) -> list:
    group_expiry = _layer().get("CONFIG", {}).get("group_expiry", 86400)
    websocket_timeout = getattr(settings, "WEBSOCKET_TIMEOUT", 0)
    if websocket_timeout and group_expiry <= websocket_timeout:
        return [
            Error(
                "The channel layer's group_expiry is not longer than "
                "WEBSOCKET_TIMEOUT.",
                hint=(
                    "A socket that outlives its group membership stays open but "
                    "stops receiving pushes. Keep CHANNEL_LAYER_GROUP_EXPIRY "
                    "above DAPHNE_WEBSOCKET_TIMEOUT (and pass the same value to "
                    "daphne --websocket_timeout)."
                ),
                id="portal.E006",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_daphne_version(app_configs, **kwargs) -> list:
    try:
        installed = version("daphne")
    except PackageNotFoundError:
        return []
    if _version_tuple(installed) < MINIMUM_DAPHNE:
        return [
            Error(
                f"daphne {installed} is older than 4.2.2.",
                hint=(
                    "Older daphne has no websocket size limit and lets header "
                    "smuggling forge the Origin. Upgrade daphne."
                ),
                id="portal.E007",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_production_layer(app_configs, **kwargs) -> list:
    if settings.DEBUG or not _layer_in_memory():
        return []
    return [
        Warning(
            "Production settings use the in-memory channel layer.",
            hint=(
                "That is the embedded mode: one process only, and every push is "
                "lost if a poller runs as its own process. Set REDIS_URL for "
                "anything beyond a single process."
            ),
            id="portal.W008",
        )
    ]
