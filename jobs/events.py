"""The one place that names channel-layer groups and event types.

Consumers, services and tests import these names; none spells them itself.
"""

# Websocket message types sent to browsers.
SNAPSHOT = "jobs.snapshot"
JOB_UPDATED = "job.updated"
UPSTREAM_STATE = "upstream.state"
REPLY_RESULT = "reply.result"

# Websocket message types browsers send.
RESYNC = "resync"
REPLY = "reply"

# Channel-layer event types (dispatched to consumer methods by Channels).
JOB_CHANGED_EVENT = "job.changed"
UPSTREAM_CHANGED_EVENT = "upstream.changed"
SESSION_REVOKED_EVENT = "session.revoked"

# Everyone watching the portal: CardSavr reachability banners.
BROADCAST_GROUP = "portal.broadcast"


def cardholder_group(cardholder_id: int) -> str:
    return f"cardholder.{cardholder_id}"


def user_group(user_id: int) -> str:
    """Sockets of one login, closed when that user logs out."""
    return f"user.{user_id}"
