"""The one way worker code talks to browsers: a group send on the channel layer.

Workers are synchronous; each call runs the async send in a fresh event loop through
async_to_sync, so the Redis pools opened for it are closed before the loop goes away.
A lost live message is harmless: every event is in the database first and the browser replays.
"""

import logging
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


async def _group_send(group: str, message: dict) -> None:
    layer = get_channel_layer()
    try:
        await layer.group_send(group, message)
    finally:
        close = getattr(layer, "close_pools", None)
        if close is not None:
            await close()


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
