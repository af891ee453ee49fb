"""The one way worker code talks to browsers: a group send on the channel layer.

Workers are synchronous; each call runs the async send in a fresh event loop through
async_to_sync, which closes that loop afterwards, and channels_redis closes the loop's Redis
connections as it closes. In a web process (a sync view cancelling a run) async_to_sync runs
the send on the server's own loop instead, where every open stream listens.
A lost live message is harmless: every event is in the database first and the browser replays.
"""

import logging
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


async def _group_send(group: str, message: dict) -> None:
    # Not layer.close_pools() after it: that closes the connections of every loop in the process,
    # and in a web process it cut every open stream's Redis connection (a cancel dropped them all).
    await get_channel_layer().group_send(group, message)


def broadcast(group: str, message: dict) -> bool:
    """Send `message` to `group`; returns False (and logs) instead of raising when Redis is away."""
    try:
        async_to_sync(_group_send)(group, message)
        return True
    except Exception:  # the DB row exists, so a failed notification must not fail the job
        log.warning("broadcast to %s failed", group, exc_info=True)
        return False


class Throttle:
    """Lets a call through at most every `interval` seconds (the last event is always forced)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = 0.0

    def ready(self, *, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            return True
        return False
