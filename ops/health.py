"""Liveness of the parts the site needs: database, Redis, and at least one Celery worker."""

import redis
from django.conf import settings
from django.db import connection


def check_database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, "ok"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def check_redis() -> tuple[bool, str]:
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        client.close()
        return True, "ok"
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def check_workers() -> tuple[bool, str]:
    from config.celery import app

    try:
        replies = app.control.ping(timeout=1.0) or []
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
