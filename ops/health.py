"""Liveness of the parts the site needs: database, Redis, and at least one Celery worker."""

import threading
import time

import redis
from django.conf import settings
from django.db import connection

from ops import queue


def check_database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, "ok"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def redis_answers(url: str) -> tuple[bool, str]:
    """Does the Redis server at `url` answer a ping within a second? (ok, "ok" or why not). The one
    check both /healthz (REDIS_URL) and a launch (the broker, labs.scheduling.queue_available) make."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
        return True, "ok"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def check_redis() -> tuple[bool, str]:
    return redis_answers(settings.REDIS_URL)


def check_workers() -> tuple[bool, str]:
    try:
        replies = queue.control().ping(timeout=1.0) or []
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if not replies:
        return False, "no worker answered"
    return True, f"{len(replies)} worker(s): " + ", ".join(sorted(name for reply in replies for name in reply))


def health_report() -> tuple[bool, dict]:
    database = check_database()
    redis_ok = check_redis()
    # Asking workers goes through Redis: without it the answer is already known.
    workers = check_workers() if redis_ok[0] else (False, "redis is down")
    checks = {"database": database, "redis": redis_ok, "celery": workers}
    healthy = all(ok for ok, _ in checks.values())
    return healthy, {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()}


_cached: tuple[float, bool, dict] | None = None
_cache_lock = threading.Lock()


def cached_health_report() -> tuple[bool, dict]:
    """health_report(), computed at most once per HEALTHZ_CACHE_S per process: asking the
    workers waits up to a second, and a load balancer (or anyone) may poll /healthz often.
    Concurrent callers wait for one computation instead of each pinging the workers."""
    global _cached
    with _cache_lock:
        if _cached is None or time.monotonic() - _cached[0] >= settings.HEALTHZ_CACHE_S:
            healthy, checks = health_report()
            _cached = (time.monotonic(), healthy, checks)
        return _cached[1], _cached[2]


def clear_cache() -> None:
    global _cached
    with _cache_lock:
        _cached = None
