"""labs.storage: a run's files stored once for every host, local folders as caches.

The database backend (the default) and Django's storage API (here FileSystemStorage standing in
for an object store: the same calls django-storages' S3 backend answers) both round-trip files
byte for byte, replace a set as a whole, refuse a writer that lost its run, and notice a file
that went missing from the bucket."""

from pathlib import Path

import pytest

from labs import storage
from labs.models import ArtifactChunk, ArtifactSet, Run
from tests.labs.conftest import make_run


@pytest.fixture
def folder(tmp_path) -> Path:
    out = tmp_path / "work"
    (out / "nested").mkdir(parents=True)
    (out / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 40)  # 10,240 bytes
    (out / "adapter_config.json").write_text('{"r": 8}')
    (out / "nested" / "trainer_state.pt").write_bytes(b"state")
    (out / "empty.txt").write_bytes(b"")
    return out


@pytest.fixture
def object_store(settings, tmp_path):
    settings.ARTIFACT_STORAGE = "django.core.files.storage.FileSystemStorage"
    settings.STORAGES = {**settings.STORAGES, "artifacts": {
        "BACKEND": settings.ARTIFACT_STORAGE, "OPTIONS": {"location": str(tmp_path / "bucket")}}}
    return tmp_path / "bucket"


def files_of(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_stored_set_comes_back_byte_for_byte_in_chunks_and_as_a_whole(owner, folder, monkeypatch, settings):
    monkeypatch.setattr(storage, "CHUNK_BYTES", 4096)
    run = make_run(owner, status=Run.Status.RUNNING)
    stored = storage.artifacts_store(run_id=run.pk, kind=storage.CHECKPOINT, folder=folder)
    assert ArtifactSet.objects.get(pk=stored.pk).complete
    parts = ArtifactChunk.objects.filter(artifact_set=stored, name="adapter_model.safetensors").count()
    assert parts == 3  # 10,240 bytes in 4,096-byte rows
    copy = storage.materialise(storage.current_set(run.pk, storage.CHECKPOINT))
    assert files_of(copy) == files_of(folder)
    assert copy.parent.parent == settings.ARTIFACTS_DIR / "cache"  # this host's cache, not the work folder


def test_a_new_version_replaces_the_old_one_and_gets_its_own_cache_folder(owner, folder):
    run = make_run(owner, status=Run.Status.RUNNING)
    first = storage.artifacts_store(run_id=run.pk, kind=storage.ADAPTER, folder=folder, names=storage.ADAPTER_FILES)
    assert set(first.manifest) == {"adapter_model.safetensors", "adapter_config.json"}  # only adapter files, if present
    old_copy = storage.materialise(first)
    assert storage.artifacts_store(run_id=run.pk, kind=storage.ADAPTER, folder=folder,
                                   names=storage.ADAPTER_FILES).pk == first.pk  # the same content: nothing rewritten
    (folder / "adapter_config.json").write_text('{"r": 16}')
    second = storage.artifacts_store(run_id=run.pk, kind=storage.ADAPTER, folder=folder, names=storage.ADAPTER_FILES)
    assert second.version != first.version
    assert list(ArtifactSet.objects.filter(run=run).values_list("pk", flat=True)) == [second.pk]
    assert not ArtifactChunk.objects.filter(artifact_set_id=first.pk).exists()
    new_copy = storage.materialise(storage.current_set(run.pk, storage.ADAPTER))
    assert new_copy != old_copy and (new_copy / "adapter_config.json").read_text() == '{"r": 16}'


def test_a_writer_whose_run_was_taken_over_stores_nothing(owner, folder):
    run = make_run(owner, status=Run.Status.RUNNING, attempts=2)
    with pytest.raises(storage.StaleAttempt):
        storage.artifacts_store(run_id=run.pk, kind=storage.CHECKPOINT, folder=folder, attempt=1)
    assert not ArtifactSet.objects.exists() and not ArtifactChunk.objects.exists()
    storage.artifacts_store(run_id=run.pk, kind=storage.CHECKPOINT, folder=folder, attempt=2)
    assert storage.current_set(run.pk, storage.CHECKPOINT).attempt == 2


def test_a_checkpoint_is_restored_into_a_worker_folder_replacing_what_was_there(owner, folder, tmp_path):
    run = make_run(owner, status=Run.Status.RUNNING)
    stored = storage.artifacts_store(run_id=run.pk, kind=storage.CHECKPOINT, folder=folder)
    target = tmp_path / "other-host" / "checkpoint"
    target.mkdir(parents=True)
    (target / "stale.pt").write_bytes(b"another attempt's")
    storage.restore_into(stored, target)
    assert files_of(target) == files_of(folder)
    storage.artifacts_delete(run_id=run.pk, kind=storage.CHECKPOINT)
    assert storage.current_set(run.pk, storage.CHECKPOINT) is None


def test_an_object_store_holds_the_bytes_and_the_database_only_the_manifest(owner, folder, object_store):
    run = make_run(owner, status=Run.Status.RUNNING)
    stored = storage.artifacts_store(run_id=run.pk, kind=storage.CHECKPOINT, folder=folder)
    assert stored.backend == "storage" and not ArtifactChunk.objects.exists()
    keys = {entry["key"] for entry in storage.current_set(run.pk, storage.CHECKPOINT).manifest.values()}
    assert all((object_store / key).is_file() for key in keys) and len(keys) == 4
    assert files_of(storage.materialise(storage.current_set(run.pk, storage.CHECKPOINT))) == files_of(folder)
    storage.artifacts_delete(run_id=run.pk, kind=storage.CHECKPOINT)
    assert not any(p.is_file() for p in object_store.rglob("*"))


def test_a_file_gone_from_the_object_store_is_an_error_and_leaves_no_half_folder(owner, folder, object_store):
    run = make_run(owner, status=Run.Status.RUNNING)
    stored = storage.artifacts_store(run_id=run.pk, kind=storage.ADAPTER, folder=folder)
    (object_store / stored.manifest["adapter_config.json"]["key"]).unlink()
    with pytest.raises(storage.ArtifactMissing, match="adapter_config.json"):
        storage.materialise(stored)
    assert not storage.cache_dir(stored).exists() and not list(storage.cache_dir(stored).parent.iterdir())


def test_a_corrupted_chunk_is_caught_by_its_hash(owner, folder):
    run = make_run(owner, status=Run.Status.RUNNING)
    stored = storage.artifacts_store(run_id=run.pk, kind=storage.ADAPTER, folder=folder)
    ArtifactChunk.objects.filter(artifact_set=stored, name="adapter_config.json").update(data=b'{"r": 9}')
    with pytest.raises(storage.ArtifactMissing, match="does not match"):
        storage.materialise(stored)


def test_an_adapter_an_earlier_version_left_on_this_hosts_disk_is_stored_on_first_use(owner, folder):
    run = make_run(owner, status=Run.Status.SUCCEEDED)
    Path(run.artifact_dir).mkdir(parents=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (Path(run.artifact_dir) / name).write_bytes((folder / name).read_bytes())
    found = storage.adapter_dir(run)
    assert files_of(found) == {n: (folder / n).read_bytes() for n in ("adapter_config.json", "adapter_model.safetensors")}
    assert storage.current_set(run.pk, storage.ADAPTER).attempt == 0
    queued = make_run(owner)
    Path(queued.artifact_dir).mkdir(parents=True)
    (Path(queued.artifact_dir) / "adapter_config.json").write_text("{}")
    assert storage.adapter_dir(queued) is None  # not succeeded: whatever is on disk is no adapter of its


def test_the_serving_cache_key_follows_the_adapter_version(owner, folder, settings):
    from inference.services import target_for_run

    settings.LABS_ALLOW_TEST_MODEL = True
    run = make_run(owner, status=Run.Status.RUNNING)
    storage.artifacts_store(run_id=run.pk, kind=storage.ADAPTER, folder=folder, names=storage.ADAPTER_FILES)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED)
    first = target_for_run(owner, run.pk)
    assert (first.adapter_dir / "adapter_config.json").is_file()
    (folder / "adapter_config.json").write_text('{"r": 4}')
    storage.artifacts_store(run_id=run.pk, kind=storage.ADAPTER, folder=folder, names=storage.ADAPTER_FILES)
    second = target_for_run(owner, run.pk)
    assert second.cache_key != first.cache_key and second.adapter_dir != first.adapter_dir
