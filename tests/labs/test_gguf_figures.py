"""The GGUF panel's agreement figures come from one place, and the READMEs agree with it (issue 25 item 11)."""

import re
from pathlib import Path

from labs.models import Run
from labs.presenters import GGUF_AGREEMENT
from tests.labs.conftest import make_run

ROOT = Path(__file__).resolve().parents[2]


def _flat(path: Path) -> str:
    return re.sub(r"\s+", " ", path.read_text())


def test_the_readmes_state_the_measured_agreement():
    readme, bench = _flat(ROOT / "README.md"), _flat(ROOT / "bench" / "README.md")
    for quant in ("q8_0", "q4_0"):
        hf, cpp = GGUF_AGREEMENT[quant]
        assert f"{quant} {hf:.1%} / {cpp:.1%}" in readme, quant
        assert re.search(rf"\| llama\.cpp {quant} \|[^\n|]*\|[^\n|]*\| {cpp:.3f} \|", (ROOT / "bench" / "README.md").read_text())
    hf, cpp = GGUF_AGREEMENT["q4_0"]
    assert f"q4_0 {hf:.3f} / {cpp:.3f} with GPTQ" in bench


def test_the_panel_shows_the_measured_figures(owner, owner_client):
    run = make_run(owner, status=Run.Status.SUCCEEDED)
    page = re.sub(r"\s+", " ", owner_client.get(f"/labs/runs/{run.pk}/gguf/").content.decode())
    assert "q8_0 100.0% (99.0% in llama.cpp); q4_0 97.3% (97.4% in llama.cpp)" in page
    assert "7 in 10" not in page and "97 in 100" not in page and "loses much of the fine-tune" not in page
