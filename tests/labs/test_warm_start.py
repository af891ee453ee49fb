"""What a run would do before its first step is done ahead of it: a training worker's pool child
loads torch and the model code while it waits for its run (labs.worker.child_warm_start; the
worker's main process never does, it forks the children), and `make run`'s setup keeps the
default lab's frozen hidden states and zero-shot baseline (manage.py warm_lab_cache)."""

import time
from pathlib import Path

import pytest
from django.core.management import call_command

from labs import worker
from tests.servers import celery_worker

pytestmark = pytest.mark.django_db(transaction=True)


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:  # a process that ended while we looked
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


def _has_torch(pid: int) -> bool:
    return "libtorch_cpu" in Path(f"/proc/{pid}/maps").read_text()


def test_a_training_workers_idle_child_has_torch_loaded_and_its_main_process_does_not(tmp_path):
    with celery_worker(tmp_path, queues="gpu", TUNELAB_WORKER_PRELOAD="true") as (process, _name):
        deadline = time.monotonic() + 90
        while "training imports ready" not in process.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "training imports ready" in process.log_path.read_text(), process.log_path.read_text()[-3000:]
        children = _children(process.pid)
        assert children and all(_has_torch(child) for child in children)
        assert not _has_torch(process.pid)


def test_a_worker_told_not_to_preload_leaves_its_children_without_torch(tmp_path):
    with celery_worker(tmp_path, queues="gpu", TUNELAB_WORKER_PRELOAD="false") as (process, _name):
        time.sleep(6)  # more than the imports take: they would have loaded by now
        children = _children(process.pid)
        assert children and not any(_has_torch(child) for child in children)
        assert "training imports ready" not in process.log_path.read_text()


def test_only_a_worker_that_consumes_the_training_queue_warms_its_children():
    assert worker.consumes_training_queue(["default", "gpu"])
    assert not worker.consumes_training_queue(["default", "export"])


def test_the_setup_keeps_the_cache_of_the_default_lab_exactly_as_a_launch_configures_it(monkeypatch):
    import mlcore.train
    from labs.catalog import load_catalog
    from labs.services import build_config
    from mlcore.config import TrainConfig
    from mlcore.data import load_bundled

    seen = []
    monkeypatch.setattr(mlcore.train, "keep_for_later_runs",
                        lambda config, dataset: seen.append((config, dataset)) or {"train": "computed"})
    monkeypatch.setattr("ops.management.commands.setup_site.load_base", lambda name: None)  # cached already
    call_command("setup_site")
    (config, dataset), = seen
    default_lab = load_catalog()[0]
    assert default_lab.slug == "sentiment-lora"
    assert config == TrainConfig.from_dict(build_config(default_lab.preset))  # what the launch form sends
    assert config.zero_shot and config.lora_top_blocks == 20
    assert dataset.train == load_bundled("reviews").train
