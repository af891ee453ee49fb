import tempfile
from pathlib import Path

from scripts.redis_server import RedisServer, free_port


def test_healthz_reports_a_stopped_redis_as_down(client, settings, db):
    server = RedisServer(port=free_port(), data_dir=Path(tempfile.mkdtemp()), persist=False)
    server.start()
    settings.REDIS_URL = server.url
    server.stop()

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["celery"]["ok"] is False


def test_healthz_without_a_worker_is_down_even_with_redis_up(client, db):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["redis"]["ok"] is True
    assert body["checks"]["celery"] == {"ok": False, "detail": "no worker answered"}
