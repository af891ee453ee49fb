"""A run's files for every host: the adapter and the resumable checkpoint, behind one interface.

A worker trains in its own folder (settings.ARTIFACTS_DIR/run-<pk>/, its own disk) and stores
what other hosts need: the checkpoint each time mlcore writes one, the adapter (with its config,
labels, prompt, metrics and test predictions) before the run is marked succeeded. Any host, the
web host serving or exporting it, another worker resuming or continuing it, reads them back by
materialising them into ARTIFACTS_DIR/cache/run-<pk>/<kind>-<version>/. That folder is written
under a temporary name and renamed, and named by the content's hash: a reader never sees half a
set, a changed adapter is a new folder (and a new key in the serving cache), and the whole cache
can be deleted at any time.

Where the bytes live (settings.ARTIFACT_STORAGE):
- "database", the default: chunks of CHUNK_BYTES in the database itself (ArtifactChunk rows).
  It works wherever DATABASE_URL reaches, with nothing else to run or mount; an adapter is a few
  MB, a checkpoint two to three times that.
- a Django storage class (STORAGES["artifacts"], e.g. django-storages' S3 backend): the bytes go
  to the bucket, and the database keeps only the manifest.
Either way the manifest (names, sizes, sha256) and which set is current are database rows. A
set is written first, then made current in one short transaction that checks that the writer
still holds the run (its attempt): a worker that lost its run cannot replace the files of the
attempt that took it over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import storages
from django.db import transaction

from labs.models import ArtifactChunk, ArtifactSet, Run

log = logging.getLogger(__name__)

ADAPTER, CHECKPOINT = ArtifactSet.Kind.ADAPTER, ArtifactSet.Kind.CHECKPOINT
CHUNK_BYTES = 4 * 1024 * 1024  # per database row: large enough to be few, small enough to stream
# What other hosts need of a trained adapter folder (serving, export, download, continuing it,
# the results); the worker's scratch beside them (checkpoint/, gguf/) stays where it is.
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "train_config.json", "labels.json",
                 "prompt.json", "metrics.json", "test_predictions.jsonl")
# Another version's cache folder is removed once it is this old (a process may still be reading it).
STALE_CACHE_S = 600


class StaleAttempt(Exception):
    """The run is no longer running the attempt that wrote these files: they were not stored."""


class ArtifactMissing(Exception):
    """A stored file is gone or does not match its manifest (a bucket emptied by hand)."""


# --- writing (the worker) -------------------------------------------------------------------


def artifacts_store(*, run_id: int, kind: str, folder, names=None, attempt: int | None = None) -> ArtifactSet:
    """Store `folder`'s files (all, recursively; or those of `names` that exist) as the run's
    current `kind`, replacing the previous set. attempt: the run's attempt the writer works
    for; the set becomes current only while the run is running that attempt (None: no check)."""
    folder = Path(folder)
    files = sorted(n for n in names if (folder / n).is_file()) if names is not None else sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    manifest = {name: {"sha256": _sha256(folder / name), "size": (folder / name).stat().st_size} for name in files}
    version = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    current = current_set(run_id, kind)
    if current is not None and current.version == version:
        return current  # stored already (a redelivered or repeated save)
    backend = "database" if settings.ARTIFACT_STORAGE == "database" else "storage"
    new = ArtifactSet.objects.create(run_id=run_id, kind=kind, version=version, manifest=manifest, backend=backend,
                                     attempt=attempt or 0)
    try:
        for name in files:
            _put(new, name, folder / name)
        if backend == "storage":
            ArtifactSet.objects.filter(pk=new.pk).update(manifest=new.manifest)  # with each file's key
        with transaction.atomic():
            # The row lock orders this with a take-over (which bumps attempts): one of them wins.
            holds = Run.objects.select_for_update().filter(pk=run_id, attempts=attempt, status=Run.Status.RUNNING)
            if attempt is not None and not holds.exists():
                raise StaleAttempt(f"run {run_id} is no longer running attempt {attempt}: its {kind} was not stored")
            ArtifactSet.objects.filter(pk=new.pk).update(complete=True)
    except BaseException:
        _drop([new])
        raise
    # The replaced set, and any a writer that died left half-written.
    _drop(list(ArtifactSet.objects.filter(run_id=run_id, kind=kind).exclude(pk=new.pk)))
    log.info("run %s: stored %s %s (%d files, %d bytes)", run_id, kind, version[:12], len(files), new.size)
    return new


def artifacts_delete(*, run_id: int, kind: str) -> None:
    """Forget the run's `kind` (a finished run's checkpoint). Local caches go stale on their own."""
    _drop(list(ArtifactSet.objects.filter(run_id=run_id, kind=kind)))


def _put(artifact_set: ArtifactSet, name: str, path: Path) -> None:
    with open(path, "rb") as f:
        if artifact_set.backend == "storage":
            key = _storage().save(f"runs/run-{artifact_set.run_id}/{artifact_set.kind}/{artifact_set.pk}/{name}", File(f))
            artifact_set.manifest[name]["key"] = key  # the storage may have altered the name
            return
        index = 0
        while True:
            data = f.read(CHUNK_BYTES)
            ArtifactChunk.objects.create(artifact_set=artifact_set, name=name, index=index, data=data)
            index += 1
            if len(data) < CHUNK_BYTES:
                break


def _drop(sets: list[ArtifactSet]) -> None:
    for artifact_set in sets:
        if artifact_set.backend == "storage":
            for entry in artifact_set.manifest.values():
                if "key" in entry:
                    _storage().delete(entry["key"])
    ArtifactSet.objects.filter(pk__in=[s.pk for s in sets]).delete()  # chunks go with them (cascade)


def _storage():
    return storages["artifacts"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- reading (any host) ---------------------------------------------------------------------


def current_set(run_id: int, kind: str) -> ArtifactSet | None:
    """The run's current set of `kind` (the newest complete one), or None."""
    return ArtifactSet.objects.filter(run_id=run_id, kind=kind, complete=True).order_by("-pk").first()


def cache_dir(artifact_set: ArtifactSet) -> Path:
    return settings.ARTIFACTS_DIR / "cache" / f"run-{artifact_set.run_id}" / f"{artifact_set.kind}-{artifact_set.version[:20]}"


def materialise(artifact_set: ArtifactSet) -> Path:
    """The set's files in this host's cache, fetched from the store on first use."""
    target = cache_dir(artifact_set)
    if not target.is_dir():
        _fetch(artifact_set, target)
        _prune(target)
    return target


def restore_into(artifact_set: ArtifactSet, folder) -> None:
    """Replace `folder` by the set's files (a worker resuming a checkpoint into its own folder)."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    _fetch(artifact_set, folder)


def _fetch(artifact_set: ArtifactSet, target: Path) -> None:
    """Write the files beside `target` under a temporary name, check them, rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, entry in artifact_set.manifest.items():
            dest = tmp / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as out:
                _get(artifact_set, name, entry, out)
            if dest.stat().st_size != entry["size"] or _sha256(dest) != entry["sha256"]:
                raise ArtifactMissing(f"{name} of run {artifact_set.run_id}'s {artifact_set.kind} does not match "
                                      "its manifest")
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not "another process materialised it first"
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _get(artifact_set: ArtifactSet, name: str, entry: dict, out) -> None:
    if artifact_set.backend == "storage":
        try:
            with _storage().open(entry["key"], "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
        except (FileNotFoundError, KeyError) as exc:
            raise ArtifactMissing(f"{name} of run {artifact_set.run_id}'s {artifact_set.kind} is missing "
                                  "from the artifact storage") from exc
        return
    # One row at a time: a 40 MB checkpoint never sits in memory whole.
    chunks = ArtifactChunk.objects.filter(artifact_set=artifact_set, name=name)
    for index in chunks.order_by("index").values_list("index", flat=True):
        out.write(bytes(chunks.values_list("data", flat=True).get(index=index)))


def _prune(keep: Path) -> None:
    """Other versions of the same kind in this run's cache folder, once nobody can still be
    loading them; and temporary folders a killed process left."""
    kind = keep.name.split("-")[0]
    cutoff = time.time() - STALE_CACHE_S
    for path in keep.parent.iterdir():
        try:
            old = path != keep and path.name.lstrip(".").startswith(kind + "-") and path.stat().st_mtime < cutoff
        except OSError:  # removed meanwhile by another process
            continue
        if old:
            shutil.rmtree(path, ignore_errors=True)


# --- a run's adapter ------------------------------------------------------------------------


def adapter_set(run: Run) -> ArtifactSet | None:
    """The run's stored adapter, or None. An adapter that an earlier version of tunelab left
    only in this host's folder (before the store existed) is stored on first use."""
    found = current_set(run.pk, ADAPTER)
    if found is None and run.has_adapter and (Path(run.artifact_dir) / "adapter_config.json").is_file():
        found = artifacts_store(run_id=run.pk, kind=ADAPTER, folder=run.artifact_dir, names=ADAPTER_FILES)
    return found


def adapter_dir(run: Run) -> Path | None:
    """A local folder with the run's adapter files (from this host's cache), or None."""
    found = adapter_set(run)
    return materialise(found) if found is not None else None

