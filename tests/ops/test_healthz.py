"""/healthz: public status only, details for staff, answered from a result a few seconds old."""

import tempfile
from pathlib import Path

import pytest

from ops.health import clear_cache
from scripts.redis_server import RedisServer, free_port


@pytest.fixture(autouse=True)
def fresh_health_cache(settings):
    settings.HEALTHZ_CACHE_S = 0  # each test decides whether it wants caching
    clear_cache()
    yield
    clear_cache()


def test_healthz_reports_a_stopped_redis_as_down(client, settings, staff_user):
    server = RedisServer(port=free_port(), data_dir=Path(tempfile.mkdtemp()), persist=False)
    server.start()
    settings.REDIS_URL = server.url
    server.stop()
    client.force_login(staff_user)

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["celery"]["ok"] is False


def test_healthz_without_a_worker_is_down_even_with_redis_up(client, staff_user):
    client.force_login(staff_user)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["celery"] == {"ok": False, "detail": "no worker answered"}


def test_the_public_sees_the_status_only(client, owner):
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json() == {"status": "down"}
    client.force_login(owner)  # a learner is not staff: still no hosts or worker names
    assert client.get("/healthz").json() == {"status": "down"}


def test_the_result_is_cached_for_a_few_seconds(client, settings, staff_user):
    client.force_login(staff_user)
    settings.HEALTHZ_CACHE_S = 30
    assert client.get("/healthz").json()["checks"]["redis"]["ok"] is True
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # Redis "goes away"
    cached = client.get("/healthz").json()
    assert cached["checks"]["redis"]["ok"] is True  # the first request's answer: nothing was asked again
    settings.HEALTHZ_CACHE_S = 0  # once the result is old, the next request sees the change
    assert client.get("/healthz").json()["checks"]["redis"]["ok"] is False
