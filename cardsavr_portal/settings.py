"""Settings for the CardSavr cardholder portal.

Everything comes from the environment (django-environ). The defaults run the
embedded mode: SQLite, the in-memory channel layer and the local sandbox. With
DJANGO_DEBUG=false nothing secret has a default and the process refuses to start
without it.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=True)

# Development defaults exist only for the embedded mode; they are public values
# that match the sandbox and must never reach production.
_DEV_DEFAULTS = {
    "DJANGO_SECRET_KEY": "dev-only-insecure-secret-key-do-not-use-in-production",
    "CARDSAVR_APP_KEY": "VeY9uD0w3zRdrlmIPxnU/l+Vr8w2bbV26E6DxajFu+A=",
    "CARDSAVR_PASSWORD": "sandbox-agent-password",
}


def _secret(name: str) -> str:
    if DEBUG:
        return env.str(name, default=_DEV_DEFAULTS[name])
    return env.str(name)


SECRET_KEY = _secret("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.list(
    "DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "jobs",
    # Registers the project's system checks (cardsavr_portal/checks.py).
    "cardsavr_portal.checks.PortalChecksConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy and Cache-Control: no-store (5.2 has no CSP).
    "cardsavr_portal.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "cardsavr_portal.urls"
ASGI_APPLICATION = "cardsavr_portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db(
        "DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"
    ),
}
# On PostgreSQL, opening a connection costs more than the query: measured on
# two cores, 125 websockets opening at once took 21 s with a connection per
# request (past daphne's 5 s handshake budget) and under 4 s with pooled
# connections. Persistent connections (CONN_MAX_AGE) leak under ASGI, where
# every request runs in a thread of its own, so each process keeps a pool
# instead (psycopg_pool); DJANGO_DB_POOL_MAX bounds the connections of one
# process.
_IS_SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
if not _IS_SQLITE and env.bool("DJANGO_DB_POOL", default=True):
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault(
        "pool",
        {
            "min_size": 1,
            "max_size": env.int("DJANGO_DB_POOL_MAX", 20),
            # A request waits this long for a free connection, then fails.
            "timeout": env.float("DJANGO_DB_POOL_TIMEOUT", 10.0),
        },
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DJANGO_CONN_MAX_AGE", 0))
# With the pool this checks each connection before handing it out, so a
# database restart costs no request an error.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded mode runs web, poller and sandbox in one process; a busy
    # timeout keeps concurrent writers from failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
    # WAL lets pages read while the poller writes and commits with one fsync
    # instead of several (about 0.13 ms instead of 0.5 ms here). synchronous
    # stays FULL: a reply's "sending" claim must survive a power loss, or the
    # same answer could be sent to CardSavr twice. (The poller's mirror writes
    # relax it for their own transactions: jobs/tracking.py.)
    DATABASES["default"]["OPTIONS"].setdefault(
        "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")

# Channel layer sizing, chosen on purpose. Delivery is at most once by design:
# every push carries the job's version and every (re)connect gets a snapshot
# from the database, so a dropped or expired message costs a browser nothing
# more than a late update. What these numbers protect is the server:
# - capacity: messages queued per websocket channel. A page that stops reading
#   (a laptop lid closed) holds at most this many; after that pushes to it are
#   dropped instead of piling up in Redis or stalling a poller's group_send.
#   It must still exceed the largest burst a live page gets: every job of a
#   cardholder who updated their card at hundreds of merchants changing in the
#   same poll tick. A drop there would leave a job stale until the next push.
# - expiry: seconds a queued message may wait. A push older than this is stale
#   anyway; the next snapshot or version repairs the page.
# - group_expiry: must outlive the longest websocket, or an open socket quietly
#   stops receiving its group's pushes. daphne closes sockets after
#   WEBSOCKET_TIMEOUT (pass the same value to --websocket_timeout); the page
#   reconnects and re-joins its groups. The project checks enforce the order.
WEBSOCKET_TIMEOUT = env.int("DAPHNE_WEBSOCKET_TIMEOUT", 3600)
_LAYER_CONFIG = {
    "capacity": env.int("CHANNEL_LAYER_CAPACITY", 500),
    "expiry": env.int("CHANNEL_LAYER_EXPIRY", 30),
    "group_expiry": env.int("CHANNEL_LAYER_GROUP_EXPIRY", WEBSOCKET_TIMEOUT * 2),
}

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": env.str("CHANNEL_LAYER_PREFIX", "asgi"),
                **_LAYER_CONFIG,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", ""),
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            # Channels' in-memory layer with costs per push instead of per
            # open socket (see jobs/layers.py and docs/benchmarks.md).
            "BACKEND": "jobs.layers.LocalChannelLayer",
            "CONFIG": _LAYER_CONFIG,
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Limits on guessing and replaying, as (attempts, window in seconds); counted
# in the cache (Redis when scaled, so shared by every process).
RATELIMIT_LOGIN_PER_USERNAME = (
    env.int("RATELIMIT_LOGIN_PER_USERNAME", 5),
    env.int("RATELIMIT_LOGIN_WINDOW", 900),
)
RATELIMIT_LOGIN_PER_ADDRESS = (
    env.int("RATELIMIT_LOGIN_PER_ADDRESS", 50),
    env.int("RATELIMIT_LOGIN_WINDOW", 900),
)
RATELIMIT_REPLIES_PER_CARDHOLDER = (
    env.int("RATELIMIT_REPLIES_PER_CARDHOLDER", 20),
    env.int("RATELIMIT_REPLIES_WINDOW", 600),
)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))

# Requests and forms stay small: nothing a cardholder sends is large.
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 200

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# CardSavr connection. The defaults point at the local sandbox.
CARDSAVR_API_URL = env.str("CARDSAVR_API_URL", default="https://127.0.0.1:8100/")
CARDSAVR_APP_NAME = env.str("CARDSAVR_APP_NAME", default="portal_sandbox_app")
CARDSAVR_APP_KEY = _secret("CARDSAVR_APP_KEY")
CARDSAVR_USERNAME = env.str("CARDSAVR_USERNAME", default="portal_agent")
CARDSAVR_PASSWORD = _secret("CARDSAVR_PASSWORD")
CARDSAVR_CA_FILE = env.str("CARDSAVR_CA_FILE", default=str(VAR_DIR / "sandbox-ca.pem"))
CARDSAVR_ENCRYPTION = env.str("CARDSAVR_ENCRYPTION", default="cbc")
CARDSAVR_FINANCIAL_INSTITUTION = env.str(
    "CARDSAVR_FINANCIAL_INSTITUTION", default="default"
)
CARDSAVR_TIMEOUT = env.float("CARDSAVR_TIMEOUT", default=10.0)
CARDSAVR_WEBHOOK_URL = env.str("CARDSAVR_WEBHOOK_URL", default="")
CARDSAVR_PREVIOUS_APP_KEYS = env.list("CARDSAVR_PREVIOUS_APP_KEYS", default=[])
# Where the sandbox sends session_complete webhooks for cardholders this portal
# creates; empty means no webhook_url is set on the cardholder.
CARDSAVR_CARDHOLDER_WEBHOOK_URL = env.str("CARDSAVR_CARDHOLDER_WEBHOOK_URL", default="")

POLL_INTERVAL = env.float("POLL_INTERVAL", default=2.0)

LOG_LEVEL = env.str("DJANGO_LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact": {"()": "cardsavr_portal.logging.RedactSecretsFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
