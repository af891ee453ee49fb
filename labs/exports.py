"""GGUF downloads of a run ("Download for llama.cpp / Ollama"): request, build, state.

No database rows: an export is a file derived from the run's adapter (read from the artifact
store, labs.storage), kept in the building host's own folder, <artifact_dir>/gguf/:
- tunelab-run-<pk>-<quant>.zip   the bundle (GGUF + Modelfile + README), present = ready;
- <quant>.json                   the job's state: queued / running (with progress) / failed.
Both are written to a temporary name and renamed, so a reader never sees half a file, and a
failed export leaves only its state file saying why.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from labs import storage
from labs.models import Run
from mlcore import gguf_export
from mlcore.prompt import PromptFormat

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
        return ExportState(quant, "failed", message="The export stopped (its worker went away). Build it again.")
    if saved["state"] == "ready":  # the bundle was removed since
        return ExportState(quant, "none")
    return ExportState(quant, saved["state"], saved["progress"], saved["message"])


def gguf_export_request(*, run: Run, quant: str) -> ExportState:
    """Start building the bundle on the default queue, unless it is ready or already building.

    Raises mlcore.gguf_export.ExportError for a quant this server cannot make.
    """
    from labs import tasks

    gguf_export.check_quant(quant)
    current = gguf_export_state(run=run, quant=quant)
    if current.state == "ready" or current.in_progress:
        return current
    _write_state(run, quant, "queued", message="Waiting for a worker…")
    transaction.on_commit(lambda: tasks.export_gguf.delay(run.pk, quant))
    return gguf_export_state(run=run, quant=quant)


def gguf_export_build(*, run_id: int, quant: str) -> ExportState:
    """In the worker: merge, quantize, bundle. Any failure ends as a 'failed' state with the reason."""
    from mlcore.classify import read_labels
    from mlcore.registry import load_tokenizer

    run = Run.objects.get(pk=run_id)
    if not run.has_adapter:
        return gguf_export_state(run=run, quant=quant)
    if bundle_path(run, quant).exists():  # a redelivered task: the work is done
        return gguf_export_state(run=run, quant=quant)
    report = _progress_writer(run, quant)
    report(0.0, "Starting…")
    try:
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
