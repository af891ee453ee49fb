"""Per-token API rate limit: a sliding one-minute window kept in Redis.

Redis rather than process memory: every web node sees the same count, so N nodes behind a
proxy still allow API_RATE_PER_MINUTE per token, not N times that. A sorted set per token holds
the timestamps of its requests in the last minute; one Lua script trims it, counts it and adds
the new request atomically, so two requests at once cannot both take the last slot. A refused
request is not recorded: a client that backs off is served again as soon as its oldest
request is a minute old.

If Redis is unreachable the API stays up (fail open) and the failure is logged: the limit
protects the CPU from a runaway script, it is not a security boundary.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

from django.conf import settings

logger = logging.getLogger(__name__)
WINDOW_S = 60.0

# KEYS[1] = the token's set; ARGV = now, window, limit, member. Returns {allowed, count, oldest}.
_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, tonumber(ARGV[1]) - tonumber(ARGV[2]))
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, count, oldest[2]}
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return {1, count + 1, false}
"""

_script = None
_script_lock = threading.Lock()


def _limit_script():
    """The registered script, on a client created on first use (never at import)."""
    global _script
    with _script_lock:
        if _script is None:
            import redis

            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
            _script = client.register_script(_LUA)
        return _script


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int  # when refused: seconds until a request is allowed again


def check(key: str, *, limit: int | None = None, now: float | None = None) -> Decision:
    """Count one request for `key` if it is within `limit` requests per minute."""
    limit = settings.API_RATE_PER_MINUTE if limit is None else limit
    now = time.time() if now is None else now
    try:
        allowed, count, oldest = _limit_script()(
            keys=[f"tunelab:ratelimit:{key}"], args=[now, WINDOW_S, limit, f"{now:.6f}-{uuid.uuid4().hex[:8]}"]
        )
    except Exception:  # redis.RedisError, OSError: fail open, loudly
        logger.warning("rate limit check failed; allowing the request", exc_info=True)
        return Decision(True, limit, limit, 0)
    if allowed:
        return Decision(True, limit, max(0, limit - int(count)), 0)
    retry = WINDOW_S - (now - float(oldest)) if oldest else WINDOW_S
    return Decision(False, limit, 0, max(1, int(retry + 0.999)))
