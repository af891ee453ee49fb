"""GGUF downloads of a run ("Download for llama.cpp / Ollama"): request, build, state.

No database rows: an export is a file derived from the run's adapter (read from the artifact
store, labs.storage), kept in the building host's own folder, <artifact_dir>/gguf/:
- tunelab-run-<pk>-<quant>.zip   the bundle (GGUF + Modelfile + README), present = ready;
- <quant>.json                   the job's state: queued / running (with progress) / failed.
Both are written to a temporary name and renamed, so a reader never sees half a file, and a
failed export leaves only its state file saying why.

Metered (each build merges a whole model, minutes of CPU, and leaves ~100-500 MB): a learner may
start EXPORTS_PER_DAY builds per 24 h; a failed build may start again only EXPORT_RETRY_AFTER_S
later; a run whose base model cannot be exported is refused from its config before anything is
queued or loaded; builds run on their own `export` queue; bundles are deleted EXPORT_KEEP_S after
they were built, and the oldest first whenever all of a host's pass EXPORT_DISK_BYTES (hourly, and
as each build ends, so a new bundle never leaves the host over the budget).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from labs import storage
from labs.access import is_unlimited
from labs.models import Run
from mlcore import gguf_export
from mlcore.prompt import PromptFormat
from mlcore.registry import load_tokenizer
from ops import limits, queue

log = logging.getLogger(__name__)

STALE_AFTER_S = 15 * 60  # a queued/running state this old lost its worker: offer the build again
PROGRESS_EVERY_S = 0.5  # state-file writes while building, at most this often
# How many labels each keeps: labs.presenters.GGUF_AGREEMENT (measured; the panel shows it).
QUANT_LABELS = {
    "q8_0": "q8_0 · 8.5 bits (default)",
    "q4_0": "q4_0 · 4.5 bits, smallest",
    "f16": "f16 · 16 bits, exact",
    "q4_k_m": "Q4_K_M · llama.cpp K-quant",
}


@dataclass(frozen=True)
class ExportState:
    quant: str
    state: str  # "none" | "queued" | "running" | "ready" | "failed"
    progress: float = 0.0
    message: str = ""
    size: int = 0
    updated: float = 0.0  # unix time of the state's last write (a failure's: when it failed)

    @property
    def in_progress(self) -> bool:
        return self.state in ("queued", "running")

    @property
    def label(self) -> str:
        return QUANT_LABELS.get(self.quant, self.quant)


def export_dir(run: Run) -> Path:
    return Path(run.artifact_dir) / "gguf"


def bundle_name(run: Run, quant: str) -> str:
    return f"tunelab-run-{run.pk}-{quant}"


def bundle_path(run: Run, quant: str) -> Path:
    return export_dir(run) / f"{bundle_name(run, quant)}.zip"


def _state_path(run: Run, quant: str) -> Path:
    return export_dir(run) / f"{quant}.json"


def _write_state(run: Run, quant: str, state: str, *, progress: float = 0.0, message: str = "") -> None:
    folder = export_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{quant}.", suffix=".json", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump({"state": state, "progress": round(progress, 3), "message": message, "updated": time.time()}, f)
    os.replace(tmp, _state_path(run, quant))


def gguf_export_state(*, run: Run, quant: str) -> ExportState:
    """Where the export of `run` at `quant` stands (a lost job reads as failed)."""
    bundle = bundle_path(run, quant)
    if bundle.exists():
        return ExportState(quant, "ready", 1.0, size=bundle.stat().st_size)
    try:
        saved = json.loads(_state_path(run, quant).read_text())
    except (OSError, ValueError):
        return ExportState(quant, "none")
    if saved["state"] in ("queued", "running") and time.time() - saved["updated"] > STALE_AFTER_S:
        return ExportState(quant, "failed", message="The export stopped (its worker went away). Build it again.",
                           updated=saved["updated"])
    if saved["state"] == "ready":  # the bundle was removed since
        return ExportState(quant, "none")
    return ExportState(quant, saved["state"], saved["progress"], saved["message"], updated=saved["updated"])


class ExportRefused(Exception):
    """The build is not started; the message says why and what to do. `status`: the HTTP status."""

    def __init__(self, message: str, status: int = 429):
        super().__init__(message)
        self.status = status


def gguf_export_request(*, run: Run, quant: str, user) -> ExportState:
    """Start building the bundle on the export queue, unless it is ready or already building.

    Raises mlcore.gguf_export.ExportError for a quant this server cannot make, ExportRefused for
    a base model it cannot export, a failed build asked for again too soon, or a learner past
    their builds for the day (`user`, who asks, is charged; labs.launch_without_limits: never).
    """
    gguf_export.check_quant(quant)
    current = gguf_export_state(run=run, quant=quant)
    if current.state == "ready" or current.in_progress:
        return current
    try:
        gguf_export.check_exportable(run.config["base_model"])
    except gguf_export.ExportError as exc:
        raise ExportRefused(f"This run cannot be exported: {exc}.", status=400) from None
    wait = current.updated + settings.EXPORT_RETRY_AFTER_S - time.time() if current.state == "failed" else 0
    if wait > 0:
        raise ExportRefused(f"This export failed {time.time() - current.updated:.0f} s ago; it can be built again in "
                            f"{wait:.0f} s (a failed build is not retried at once).")
    if not is_unlimited(user):
        _charge_export(user)
    _write_state(run, quant, "queued", message="Waiting for a worker…")
    transaction.on_commit(lambda: queue.enqueue("labs.tasks.export_gguf", run.pk, quant))  # by name: labs.tasks imports us
    return gguf_export_state(run=run, quant=quant)


def _charge_export(user) -> None:
    limit = settings.EXPORTS_PER_DAY
    try:
        charge = limits.take(f"exports:user:{user.pk}", 1, limit=limit, window_s=86_400)
    except limits.LimiterUnavailable:
        raise ExportRefused("The export counter is unavailable right now, so no export starts: try again in a minute.",
                            status=503) from None
    if not charge.charged:
        raise ExportRefused(f"You started {limit} exports in the last 24 hours, the limit (TUNELAB_EXPORTS_PER_DAY): "
                            f"the next can start in {charge.retry_after_s / 3600:.1f} h. A bundle you built is kept "
                            f"{settings.EXPORT_KEEP_S // 86_400} days: download it again meanwhile.")


def exports_clean(*, now: float | None = None, keep: Path | None = None) -> dict:
    """Delete this host's bundles built more than EXPORT_KEEP_S ago, then the oldest until the
    rest fit EXPORT_DISK_BYTES, and build folders a killed build left. Its state file then reads
    "none": the panel offers the build again. `keep`: a bundle just built, never removed here
    (the budget is then over only if that one bundle alone is larger than it)."""
    now = now or time.time()
    root = Path(settings.ARTIFACTS_DIR)
    bundles = sorted((path.stat().st_mtime, path.stat().st_size, path) for path in root.glob("run-*/gguf/*.zip"))
    total = sum(size for _, size, _ in bundles)
    removed = 0
    for built, size, path in bundles:  # oldest first
        if keep is not None and path == keep:
            continue
        if now - built > settings.EXPORT_KEEP_S or total > settings.EXPORT_DISK_BYTES:
            path.unlink(missing_ok=True)
            total, removed = total - size, removed + 1
    for leftover in root.glob("run-*/gguf/.build-*"):
        if now - leftover.stat().st_mtime > STALE_AFTER_S:
            shutil.rmtree(leftover, ignore_errors=True)
    return {"removed": removed, "kept_bytes": total}


def gguf_export_build(*, run_id: int, quant: str) -> ExportState:
    """In the worker: merge, quantize, bundle. Any failure ends as a 'failed' state with the reason."""
    from mlcore.classify import read_labels  # mlcore.classify imports torch: only when a model runs

    run = Run.objects.get(pk=run_id)
    if not run.has_adapter:
        return gguf_export_state(run=run, quant=quant)
    if bundle_path(run, quant).exists():  # a redelivered task: the work is done
        return gguf_export_state(run=run, quant=quant)
    report = _progress_writer(run, quant)
    report(0.0, "Starting…")
    try:
        exports_clean()  # expired bundles go before the build needs the disk
        gguf_export.check_exportable(run.config["base_model"])  # before any weights load
        adapter = storage.adapter_dir(run)
        if adapter is None:
            raise gguf_export.ExportError("the run's adapter files are missing from the artifact store")
        folder = export_dir(run)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".build-", dir=folder) as tmp:
            name = bundle_name(run, quant)
            result = gguf_export.export_merged(adapter, Path(tmp) / f"{name}.gguf", quant=quant, progress=report)
            report(0.97, "Zipping with the Modelfile and README…")
            labels = read_labels(adapter)
            gguf_export.write_bundle(bundle_path(run, quant), result.path, labels=labels, model_name=name,
                                     tokenizer=load_tokenizer(run.config["base_model"]),
                                     prompt=PromptFormat.for_adapter(adapter, labels))
        # Now that its size is known: the oldest other bundles go until the budget holds again.
        exports_clean(keep=bundle_path(run, quant))
        _write_state(run, quant, "ready", progress=1.0)
    except Exception as exc:  # noqa: BLE001 - every failure must reach the page, not only ours
        log.exception("GGUF export of run %s at %s failed", run_id, quant)
        reason = str(exc) if isinstance(exc, gguf_export.ExportError) else f"{type(exc).__name__}: {exc}"
        _write_state(run, quant, "failed", message=f"The export failed: {reason}")
    return gguf_export_state(run=run, quant=quant)


def _progress_writer(run: Run, quant: str):
    last = [0.0]

    def report(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            _write_state(run, quant, "running", progress=fraction, message=message)

    return report


def gguf_panel(run: Run, *, error: str = "", selected: str = "") -> dict:
    """Template context of the download panel (labs/_gguf_export.html)."""
    quants = gguf_export.available_quants()
    states = [gguf_export_state(run=run, quant=q) for q in quants]
    return {
        "choices": [(q, QUANT_LABELS.get(q, q)) for q in quants],
        # A poll keeps the choice being built selected, rather than jumping back to the default.
        "selected": selected or next((s.quant for s in states if s.in_progress), gguf_export.DEFAULT_QUANT),
        "exports": [s for s in states if s.state != "none"],
        "any_active": any(s.in_progress for s in states),
        "k_quants_missing": gguf_export.k_quant_tool() is None,
        "error": error,
    }
