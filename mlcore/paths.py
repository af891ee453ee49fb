"""Where runtime files live. Everything the ML core writes goes under var/ (git-ignored)."""

import os
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent


def var_dir() -> Path:
    """Runtime files: env TUNELAB_VAR_DIR, else <repo>/var."""
    return Path(os.environ.get("TUNELAB_VAR_DIR") or REPO_DIR / "var")


def models_dir() -> Path:
    """Cached base models (dequantized GGUF, tiny test model)."""
    return var_dir() / "models"
