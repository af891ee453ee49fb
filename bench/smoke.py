"""What every bench's --smoke mode shares: the tiny test model and a tiny adapter trained on it.

A smoke run is not a measurement. It runs the bench's real code path end to end in seconds, so
that tests/bench/test_bench_smoke.py (part of `make test`) fails when a change breaks a bench;
its figures mean nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The tests' tiny run (tests/labs/conftest.py TINY): 16 reviews, 2 steps of 8, a few seconds.
TINY_RUN = dict(base_model="tiny-test", dataset="reviews", epochs=1, batch_size=8, train_limit=16, learning_rate=0.01,
                eval_every=0, max_length=128)


def tiny_adapter(out_dir: Path) -> Path:
    """An adapter of the tiny test model in `out_dir` (trained if missing): what a smoke run serves."""
    from mlcore.config import TrainConfig
    from mlcore.data import load_bundled
    from mlcore.train import train

    out_dir = Path(out_dir)
    if not (out_dir / "adapter_config.json").exists():
        train(TrainConfig(**TINY_RUN, device="cpu"), load_bundled("reviews"), out_dir)
    return out_dir
