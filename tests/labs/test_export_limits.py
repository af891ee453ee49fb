"""GGUF exports are metered: a learner may start EXPORTS_PER_DAY builds a day; a failed build is
not retried at once; a run whose base model cannot be exported (Qwen) is refused from its config
before anything is queued or loaded; builds and their cleanup go to their own `export` queue;
bundles expire and all of them stay within a disk budget."""

import json
import os
import time

import pytest

from labs import exports
from labs.models import Run
from tests.labs.conftest import TINY
from tests.labs.test_gguf_download import finished_run, panel_url, tiny_adapter  # noqa: F401 - the fixture


@pytest.fixture
def adapter(request):
    return request.getfixturevalue("tiny_adapter")  # test_gguf_download's, trained once per module


@pytest.fixture
def no_tasks_sent(monkeypatch):
    """What would go to the export queue; nothing runs (the build itself is tested elsewhere)."""
    from labs import tasks

    sent = []
    # The service sends the task by name (ops.queue), which goes through the registered task's apply_async.
    monkeypatch.setattr(tasks.export_gguf, "apply_async", lambda args=(), kwargs=None, **options: sent.append(tuple(args)))
    return sent


def post_quant(client, run, quant):
    return client.post(panel_url(run), {"quant": quant}, HTTP_HX_REQUEST="true")


def test_a_qwen_run_is_refused_before_anything_is_queued_or_loaded(owner_client, owner, adapter, no_tasks_sent,
                                                                    monkeypatch, django_capture_on_commit_callbacks):
    from mlcore import gguf_export, registry

    monkeypatch.setattr(registry, "load_base", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr(gguf_export, "merged_model", lambda *a, **k: pytest.fail("a model was merged"))
    run = finished_run(owner, adapter)
    Run.objects.filter(pk=run.pk).update(config={**run.config, "base_model": "qwen2.5-0.5b-instruct"})
    run.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        response = post_quant(owner_client, run, "q8_0")
    assert response.status_code == 400
    assert "cannot be exported" in response.content.decode() and "Qwen2.5-0.5B-Instruct" in response.content.decode()
    assert no_tasks_sent == [] and exports.gguf_export_state(run=run, quant="q8_0").state == "none"
    # A build already queued (before this check existed) fails the same way, without loading a model.
    state = exports.gguf_export_build(run_id=run.pk, quant="q8_0")
    assert state.state == "failed" and "llama-architecture" in state.message


def test_a_learner_may_start_a_few_exports_a_day(owner_client, owner, adapter, settings, no_tasks_sent,
                                                 django_capture_on_commit_callbacks):
    settings.EXPORTS_PER_DAY = 2
    run = finished_run(owner, adapter)
    with django_capture_on_commit_callbacks(execute=True):
        assert post_quant(owner_client, run, "q8_0").status_code == 200
        assert post_quant(owner_client, run, "q8_0").status_code == 200  # already queued: not a new build, not counted
        assert post_quant(owner_client, run, "q4_0").status_code == 200
        refused = post_quant(owner_client, run, "f16")
    assert refused.status_code == 429 and "You started 2 exports in the last 24 hours" in refused.content.decode()
    assert no_tasks_sent == [(run.pk, "q8_0"), (run.pk, "q4_0")]


def test_the_permission_lifts_the_export_limit_staff_alone_does_not(client, owner, adapter, settings, no_tasks_sent,
                                                                     django_user_model):
    from django.contrib.auth.models import Permission

    settings.EXPORTS_PER_DAY = 1
    operator = django_user_model.objects.create_user("operator", password="x", is_staff=True)
    operator.user_permissions.add(*Permission.objects.filter(codename__in=["view_all_runs"]))
    run = finished_run(owner, adapter)
    client.force_login(operator)
    assert post_quant(client, run, "q8_0").status_code == 200
    assert post_quant(client, run, "q4_0").status_code == 429
    operator.user_permissions.add(Permission.objects.get(codename="launch_without_limits"))
    client.force_login(django_user_model.objects.get(pk=operator.pk))
    assert post_quant(client, run, "q4_0").status_code == 200


def test_a_failed_build_waits_before_it_is_built_again(owner_client, owner, adapter, settings, no_tasks_sent):
    settings.EXPORT_RETRY_AFTER_S = 600
    run = finished_run(owner, adapter)
    exports._write_state(run, "q8_0", "failed", message="The export failed: out of memory")
    refused = post_quant(owner_client, run, "q8_0")
    assert refused.status_code == 429 and "it can be built again in 600 s" in refused.content.decode()
    saved = json.loads((exports.export_dir(run) / "q8_0.json").read_text())
    saved["updated"] -= 601
    (exports.export_dir(run) / "q8_0.json").write_text(json.dumps(saved))
    assert post_quant(owner_client, run, "q8_0").status_code == 200
    assert exports.gguf_export_state(run=run, quant="q8_0").state == "queued"


def test_exports_and_their_cleanup_have_their_own_queue_and_worker(settings):
    from config.celery import app
    from scripts.runstack import commands

    router = app.amqp.router
    for task in ("labs.tasks.export_gguf", "labs.tasks.clean_exports"):
        assert router.route({}, task)["queue"].name == "export"
    assert router.route({}, "labs.tasks.reap_runs")["queue"].name == "default"
    assert any(entry["task"] == "labs.tasks.clean_exports" for entry in settings.CELERY_BEAT_SCHEDULE.values())
    workers = {name: argv for name, (_, argv) in commands("python", settings.VAR_DIR).items()}
    assert workers["export"][workers["export"].index("-Q") + 1] == "export"
    assert "export" not in workers["default"][workers["default"].index("-Q") + 1]
    procfile = (settings.BASE_DIR / "Procfile").read_text()
    assert "export: python -m celery -A config worker -Q export -c 1" in procfile


def bundle(run_dir, name: str, size: int, age_s: float):
    folder = run_dir / "gguf"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"x" * size)
    built = time.time() - age_s
    os.utime(path, (built, built))
    return path


def test_the_cleanup_expires_old_bundles_then_keeps_the_disk_budget_oldest_first(settings):
    settings.EXPORT_KEEP_S, settings.EXPORT_DISK_BYTES = 3600, 2500
    root = settings.ARTIFACTS_DIR
    expired = bundle(root / "run-1", "tunelab-run-1-q8_0.zip", 100, age_s=7200)
    oldest = bundle(root / "run-2", "tunelab-run-2-q8_0.zip", 1000, age_s=600)
    middle = bundle(root / "run-3", "tunelab-run-3-q4_0.zip", 1000, age_s=300)
    newest = bundle(root / "run-3", "tunelab-run-3-f16.zip", 1000, age_s=10)
    assert exports.exports_clean() == {"removed": 2, "kept_bytes": 2000}
    assert not expired.exists() and not oldest.exists() and middle.exists() and newest.exists()


def test_a_finished_build_makes_room_for_itself_within_the_disk_budget(owner, adapter, settings):
    """The bundle just built is measured against the budget: older bundles go, never it."""
    run = finished_run(owner, adapter)
    root = settings.ARTIFACTS_DIR
    older = [bundle(root / f"run-{900 + i}", f"tunelab-run-{900 + i}-q8_0.zip", 6_000_000, age_s=600 - i) for i in range(3)]
    settings.EXPORT_DISK_BYTES = 18_000_000
    state = exports.gguf_export_build(run_id=run.pk, quant="q4_0")
    assert state.state == "ready", state.message
    built = exports.bundle_path(run, "q4_0").stat().st_size
    assert 0 < built < 6_000_000  # the tiny model (~5 MB): the expected removals below are exact
    kept = [path.exists() for path in older]
    assert kept == [False, True, True]  # 18 MB + the new bundle > 18 MB: the oldest went, and only it
    assert sum(p.stat().st_size for p in root.glob("run-*/gguf/*.zip")) <= settings.EXPORT_DISK_BYTES


def test_a_bundle_larger_than_the_whole_budget_is_kept_once_built(settings):
    settings.EXPORT_DISK_BYTES = 500
    root = settings.ARTIFACTS_DIR
    other = bundle(root / "run-7", "tunelab-run-7-q8_0.zip", 300, age_s=60)
    new = bundle(root / "run-8", "tunelab-run-8-f16.zip", 1000, age_s=1)
    assert exports.exports_clean(keep=new) == {"removed": 1, "kept_bytes": 1000}
    assert new.exists() and not other.exists()


def test_a_removed_bundle_is_offered_again(owner, adapter, settings):
    run = finished_run(owner, adapter)
    exports._write_state(run, "q8_0", "ready", progress=1.0)
    path = bundle(run.artifact_dir, f"{exports.bundle_name(run, 'q8_0')}.zip", 10, age_s=10 * 86_400)
    assert exports.gguf_export_state(run=run, quant="q8_0").state == "ready"
    exports.exports_clean()
    assert not path.exists() and exports.gguf_export_state(run=run, quant="q8_0").state == "none"


def test_tiny_is_exportable_from_its_config_alone():
    from mlcore.gguf_export import check_exportable

    check_exportable(TINY["base_model"])  # no error: llama, shipped as GGUF (the default model's file)
