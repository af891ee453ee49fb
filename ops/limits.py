"""Counted limits kept in Redis: rate limits, login throttling and spend reservations.

One primitive for all of them: a weighted sliding window. A sorted set per key holds one member
per charge, scored by its time, named "<id>:<amount>"; one Lua script trims the entries older
than the window, sums what is left and, if the new charge fits under the limit, adds it, all
atomically, so two requests at once can never both take the last unit.

Redis rather than process memory: every web node and worker sees the same count, so N nodes
behind a proxy still allow the limit, not N times it. When Redis cannot be reached the callers
fail closed (LimiterUnavailable): an unlimited API, login form or LLM bill is worse than a
clear "try again shortly".
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import redis
from django.conf import settings

PREFIX = "tunelab:limit:"

# KEYS[1]: the key's sorted set. ARGV: now, window_s, limit, amount, member id, mode.
# mode "all": charge the whole amount or nothing; "some": charge what fits (0..amount);
# "force": charge regardless (a failure that already happened); "peek": charge nothing.
# Returns {charged, used_after, retry_after_s * 1000 (when nothing fits)}.
_LUA = """
local now, window, limit, amount = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local mode = ARGV[6]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local used = 0
for i = 1, #entries, 2 do
  used = used + tonumber(string.match(entries[i], ':(%d+)$'))
end
local charge = 0
if mode == 'force' then
  charge = amount
elseif mode == 'all' then
  if used + amount <= limit then charge = amount end
elseif mode == 'some' then
  charge = math.max(0, math.min(amount, limit - used))
end
if charge > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[5] .. ':' .. charge)
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
end
local retry = 0
local need = (mode == 'peek') and 1 or amount
if charge == 0 and used + need > limit then
  -- the oldest charges expire first: wait until enough of them have
  local freed = 0
  for i = 1, #entries, 2 do
    freed = freed + tonumber(string.match(entries[i], ':(%d+)$'))
    if used - freed + need <= limit then
      retry = math.ceil((tonumber(entries[i + 1]) + window - now) * 1000)
      break
    end
  end
  if retry == 0 then retry = math.ceil(window * 1000) end
end
return {charge, used + charge, retry}
"""


class LimiterUnavailable(Exception):
    """Redis could not be asked: the caller refuses the work (fail closed)."""


@dataclass(frozen=True)
class Charge:
    key: str
    member: str  # the entry's id, to adjust it later
    charged: int
    used: int  # in the window, this charge included
    limit: int
    retry_after_s: int  # when nothing was charged and the limit is reached: seconds to wait

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


_clients: dict[str, object] = {}  # by URL: tests point REDIS_URL at another server
_client_lock = threading.Lock()


def _redis():
    """One client per process and URL, created on first use (never at import)."""
    url = settings.REDIS_URL
    with _client_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
            client.tunelab_script = client.register_script(_LUA)
            _clients[url] = client
        return client


def _call(key: str, amount: int, limit: int, window_s: float, mode: str) -> Charge:
    now = time.time()
    member = uuid.uuid4().hex[:12]
    try:
        client = _redis()
        charged, used, retry_ms = client.tunelab_script(keys=[PREFIX + key], args=[now, window_s, limit, amount, member, mode])
    except Exception as exc:  # redis.RedisError, OSError, a bad URL: no count, so no work
        raise LimiterUnavailable(f"the limit counter (Redis) is unavailable: {type(exc).__name__}") from exc
    return Charge(key, member, int(charged), int(used), limit, max(1, -(-int(retry_ms) // 1000)) if retry_ms else 0)


def take(key: str, amount: int, *, limit: int, window_s: float) -> Charge:
    """Charge `amount` if all of it fits under `limit` in the window; else charge nothing."""
    return _call(key, amount, limit, window_s, "all")


def take_some(key: str, amount: int, *, limit: int, window_s: float) -> Charge:
    """Charge as much of `amount` as fits (a reservation that may be granted in part)."""
    return _call(key, amount, limit, window_s, "some")


def record(key: str, amount: int = 1, *, limit: int, window_s: float) -> Charge:
    """Count something that already happened (a failed login), over the limit or not."""
    return _call(key, amount, limit, window_s, "force")


def peek(key: str, *, limit: int, window_s: float) -> Charge:
    """The count so far; charged is 0 and retry_after_s > 0 when the limit is reached."""
    return _call(key, 1, limit, window_s, "peek")


def adjust(charge: Charge, actual: int) -> None:
    """Replace a reservation by what was really used (0 releases it), keeping its time."""
    if actual == charge.charged or charge.charged == 0:
        return
    try:
        client = _redis()
        name = PREFIX + charge.key
        old = f"{charge.member}:{charge.charged}"
        score = client.zscore(name, old)
        pipe = client.pipeline()
        pipe.zrem(name, old)
        if actual > 0 and score is not None:
            pipe.zadd(name, {f"{charge.member}:{actual}": score})
        pipe.execute()
    except Exception as exc:
        raise LimiterUnavailable(f"the limit counter (Redis) is unavailable: {type(exc).__name__}") from exc


def clear(key: str) -> None:
    """Forget a key's count (a successful login clears the account's failures)."""
    try:
        _redis().delete(PREFIX + key)
    except Exception as exc:
        raise LimiterUnavailable(f"the limit counter (Redis) is unavailable: {type(exc).__name__}") from exc


# --- slots: things held open (websockets), not spent ----------------------------------------

# KEYS[1]: the holder's sorted set (member -> last seen). ARGV: now, ttl_s, limit, member, mode.
# A member not refreshed within ttl_s is gone (its process died without releasing it).
_SLOT_LUA = """
local now, ttl, limit, member, mode = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
if mode == 'release' then
  redis.call('ZREM', KEYS[1], member)
  return 1
end
if mode == 'take' and redis.call('ZSCORE', KEYS[1], member) == false and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], now, member)
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000) + 1000)
return 1
"""


def _slot(key: str, member: str, *, limit: int, ttl_s: float, mode: str) -> bool:
    try:
        client = _redis()
        script = getattr(client, "tunelab_slot_script", None) or client.register_script(_SLOT_LUA)
        client.tunelab_slot_script = script
        return bool(script(keys=[PREFIX + key], args=[time.time(), ttl_s, limit, member, mode]))
    except Exception as exc:
        raise LimiterUnavailable(f"the limit counter (Redis) is unavailable: {type(exc).__name__}") from exc


def slot_take(key: str, member: str, *, limit: int, ttl_s: float) -> bool:
    """Hold one of `limit` slots under `key` as `member` (e.g. one open websocket of a learner);
    False when all are held. The holder refreshes it (slot_refresh) within ttl_s, or it lapses."""
    return _slot(key, member, limit=limit, ttl_s=ttl_s, mode="take")


def slot_refresh(key: str, member: str, *, ttl_s: float) -> None:
    _slot(key, member, limit=0, ttl_s=ttl_s, mode="refresh")


def slot_release(key: str, member: str) -> None:
    _slot(key, member, limit=0, ttl_s=1e9, mode="release")
