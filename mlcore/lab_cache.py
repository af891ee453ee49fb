"""What every run of a lab computes the same way, kept on disk and reused by the next run.

Two things in a default lab do not depend on what is trained, only on the base model, the prompt
and the data, yet cost a third of the lab's time on 2 cores:
- the zero-shot baseline: the base model without adapter on the test split (metrics, ~1 KB);
- the frozen blocks' hidden states (mlcore.upper): the hidden state entering the first trained
  block, per review of each split (the training reviews too: a one-epoch run computes each once).
Both are kept under var/cache/ (each host its own). A key is a hash of everything the result
depends on, taken from what the pass reads:
- the token ids of the shared prefix and of every row (so the prompt version, the template, the
  tokenizer, the cut length and, for the baseline, the gold labels are all in it);
- the base model's name, a fingerprint of its weights, their dtype, the device, the cut block;
- CACHE_VERSION, bumped whenever the code changes what these passes compute.
A file that cannot be read, or does not fit the rows, is ignored and written again. Files are
written aside and renamed (two runs finishing at once never leave half a file); hidden states are
pruned least recently used first beyond HIDDEN_CACHE_BYTES.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import contextmanager, suppress
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .paths import var_dir

log = logging.getLogger(__name__)

CACHE_VERSION = 1
HIDDEN_CACHE_BYTES = 2 * 1024**3  # the default lab's three splits take ~200 MB (SmolLM2-135M, float32)


_folder: Path | None = None  # kept_in()


def cache_dir() -> Path:
    return _folder or var_dir() / "cache"


@contextmanager
def kept_in(folder: Path):
    """Keep and read in `folder` meanwhile: a bench measures a first run with an empty one."""
    global _folder
    before, _folder = _folder, Path(folder)
    try:
        yield
    finally:
        _folder = before


def weights_fingerprint(model) -> list[float]:
    """Sum and sum of squares of each fixed weight (the LoRA tensors being trained left out):
    different weights under the same model name give different keys. One pass, ~0.2 s."""
    stats = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name and param.requires_grad:
                continue
            flat = param.detach().double()
            stats += [round(flat.sum().item(), 6), round((flat * flat).sum().item(), 6)]
    return stats


def key(kind: str, head: list, rows) -> str:
    """kind: "zero-shot" or "hidden"; head: the model-side facts (JSON); rows: JSON per row."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, kind, *head]).encode())
    for row in rows:
        digest.update(json.dumps(row).encode())
    return digest.hexdigest()[:32]


def _write_aside(path: Path, write) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        write(aside)
        os.replace(aside, path)
    except OSError as exc:  # a full or read-only disk costs the next run its time, not this run
        log.warning("lab cache %s not written: %s", path.name, exc)


# --- the zero-shot baseline ----------------------------------------------------------------------


def load_metrics(name: str) -> dict | None:
    path = cache_dir() / "zero-shot" / f"{name}.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("zero-shot cache %s unreadable (%s); scoring it again", path.name, exc)
        return None
    return metrics if isinstance(metrics, dict) and "macro_f1" in metrics else None


def store_metrics(name: str, metrics: dict) -> None:
    _write_aside(cache_dir() / "zero-shot" / f"{name}.json", lambda p: p.write_text(json.dumps(metrics) + "\n", encoding="utf-8"))


# --- the frozen blocks' hidden states -------------------------------------------------------------


def load_hidden(name: str, lengths: list[int]) -> list[torch.Tensor] | None:
    """Per row, [length, d]; None when not kept, unreadable, or not these rows' lengths."""
    path = cache_dir() / "hidden" / f"{name}.safetensors"
    if not path.exists():
        return None
    try:
        kept = load_file(path)
        hidden, kept_lengths = kept["hidden"], kept["lengths"].tolist()
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own errors for a damaged file
        log.warning("hidden-state cache %s unreadable (%s); computing it again", path.name, exc)
        return None
    if kept_lengths != lengths or hidden.shape[0] != sum(lengths):
        log.warning("hidden-state cache %s does not fit its rows; computing it again", path.name)
        return None
    with suppress(OSError):  # another run may prune it meanwhile: this run has read what it needs
        os.utime(path)  # recently used: pruned last
    return list(torch.split(hidden, lengths))


def store_hidden(name: str, rows: list[torch.Tensor]) -> None:
    tensors = {"hidden": torch.cat(rows).contiguous().cpu(), "lengths": torch.tensor([len(r) for r in rows])}
    _write_aside(cache_dir() / "hidden" / f"{name}.safetensors", lambda p: save_file(tensors, str(p)))
    prune_hidden()


def prune_hidden(limit: int = HIDDEN_CACHE_BYTES) -> None:
    """Least recently used first, until the kept states fit in `limit` bytes."""
    found = []
    for path in (cache_dir() / "hidden").glob("*.safetensors"):
        try:
            stat = path.stat()
        except FileNotFoundError:  # another run pruned it meanwhile
            continue
        found.append((stat.st_mtime, stat.st_size, path))
    total = 0
    for _, size, path in sorted(found, key=lambda f: f[0], reverse=True):
        total += size
        if total > limit:
            path.unlink(missing_ok=True)
