"""Where runtime files live. Everything the ML core writes goes under var/ (git-ignored)."""

import os
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent


def var_dir() -> Path:
    """Runtime files: env TUNELAB_VAR_DIR (empty = unset), else <repo>/var. The one place it is
    read: the settings (VAR_DIR), `make run` (scripts/runstack.py) and mlcore all ask here."""
    value = os.environ.get("TUNELAB_VAR_DIR", "").strip()
    return Path(value) if value else REPO_DIR / "var"


def models_dir() -> Path:
    """Cached base models (dequantized GGUF, tiny test model)."""
    return var_dir() / "models"
