"""The portal's settings, as the benchmarks run them.

Everything is the product's own configuration (read from the environment as
usual; the harness points DATABASE_URL at a throw-away database). Three
things differ: DEBUG is off as in production, logging is kept to warnings so
that thousands of "socket opened" lines stay out of the measurement, and
BENCH_NAIVE_LAYER=1 swaps in Channels' stock in-memory layer, the naive push
path the product is compared with.
"""

import os

from cardsavr_portal.settings import *  # noqa: F403
from cardsavr_portal.settings import CHANNEL_LAYERS, LOGGING

# Measured as deployed: DEBUG off (Django then keeps no query log).
DEBUG = False
LOGGING["root"]["level"] = "WARNING"

if os.environ.get("BENCH_NAIVE_LAYER") == "1":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": dict(CHANNEL_LAYERS["default"].get("CONFIG", {})),
        }
    }
