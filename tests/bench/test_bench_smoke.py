"""Every bench under bench/ still runs: each one's --smoke mode, as a subprocess, checked on the table it prints.

A bench that stops running is a broken feature (fault_bench.py once stopped at "launch refused
(400)" for every section after a training setting was added, and nothing noticed). The figures of
a smoke run mean nothing; what is checked is that each table has its rows, with numbers in them.
A new bench without a check here fails test_every_bench_has_a_smoke_check.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
NUMBER = r"[0-9]+(?:\.[0-9]+)?"
HELPERS = {"smoke.py", "browser_http.py"}  # not benches: what the benches share


def rows_after(output: str, start: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(start)]


def check_api(output: str) -> None:
    rows = {(m[1], int(m[2])): float(m[3]) for m in re.finditer(rf"^(POST \S+)\s+(\d+)\s+({NUMBER})\s+{NUMBER}\s+{NUMBER}$",
                                                                   output, re.M)}
    assert set(rows) == {("POST /api/classify", 1), ("POST /api/classify", 8), ("POST /v1/chat/completions", 1)}, output
    assert all(rate > 0 for rate in rows.values())


ABUSE_PATHS = {"quota_reservation", "fewshot_prompt_tokens", "upload_churn", "signup_throttle", "hostile_input",
               "serving_cache", "heavy_json", "baseline_api_tokens", "gguf_exports", "websockets"}


def check_fault(output: str) -> None:
    sections = {line.split()[0]: json.loads(line.split(None, 1)[1].rsplit("  (", 1)[0])
                for line in output.splitlines() if line.startswith(("stream_viewers ", "quiz_load ", "quiz_burst ", "abuse "))}
    assert set(sections) == {"stream_viewers", "quiz_load", "quiz_burst", "abuse"}, output
    viewers = sections["stream_viewers"]
    assert viewers["events"] > 2 and viewers["complete"] == viewers["viewers"] == 3, viewers
    quiz = sections["quiz_load"]
    assert quiz["requests"] > 4 and quiz["errors"] == 0, quiz
    (burst,) = sections["quiz_burst"]["curve"].values()  # the smoke stack's 2 web processes
    assert burst["requests"] > 4 and burst["no_think"] == 1 and burst["errors"] == 0, sections["quiz_burst"]
    abuse = sections["abuse"]  # every path the learner tried met its limit, and no answer was a server error
    assert set(abuse["paths"]) == ABUSE_PATHS and abuse["unmetered_paths"] == 0 and abuse["server_errors"] == 0, abuse
    assert re.search(r"^  abuse unmetered paths: 0$", output, re.M) and re.search(r"^  abuse 5xx: 0$", output, re.M)


def check_fuzz(output: str) -> None:
    (row,) = re.findall(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+" + NUMBER + "$", output, re.M)
    assert row == ("60", "0", "0", "0"), output  # requests, 5xx, non-JSON, dropped
    assert re.search(r"^by status: .*400: \d+", output, re.M)


def check_gguf(output: str) -> None:
    table = rows_after(output, "| ")
    assert re.match(rf"\| torch \(ours\) \| - \| -?{NUMBER} \| 1\.000 \| {NUMBER} \| {NUMBER} \|", table[1]), output
    if importlib.util.find_spec("llama_cpp"):
        assert any(row.startswith("| llama.cpp q8_0 |") for row in table), output
    else:
        assert "llama.cpp rows are left out" in output


def check_infer(output: str) -> None:
    for batch in (1, 32):
        for method in ("generate+parse", "ours (as served)", "ours, transformers forward"):
            row = rf"^batch {batch}\s+{re.escape(method)}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}"
            assert re.search(row, output, re.M), (batch, method, output)
    assert "agreement with the reference" in output


def check_lab(output: str) -> None:
    for tree in ("current", "current, kept"):  # a first run on a fresh host, and a later one
        (row,) = rows_after(output, f"| {tree} |")
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == "1" and cells[6] == "2" and float(cells[8]) >= 0, row  # run 1, 2 steps, a test macro-F1


def check_real(output: str) -> None:
    for seed in (0, 1):  # the smoke run trains the default twice, then prints the spread over seeds
        assert re.search(rf"^default s{seed}\s+\d+\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}%$", output, re.M), output
    spread = rf"{NUMBER}±{NUMBER}"
    assert re.search(rf"^default mean\s+\d+ {spread} {spread} {spread} {NUMBER}%±{NUMBER}%$", output, re.M), output


def check_shape(output: str) -> None:
    (row,) = rows_after(output, "| 2 |")
    samples_per_s = float(row.split("|")[2])
    assert samples_per_s > 0, row


def check_train(output: str) -> None:
    assert re.search(rf"^ours \(mlcore\.train\)\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+1\.00x", output, re.M), output
    if importlib.util.find_spec("trl"):
        assert re.search(rf"^TRL SFTTrainer defaults .*\s{NUMBER}x\s", output, re.M), output
    else:
        assert "TRL rows left out" in output


CHECKS = {
    "api_bench.py": check_api, "fault_bench.py": check_fault, "fault_fuzz.py": check_fuzz, "gguf_bench.py": check_gguf,
    "infer_bench.py": check_infer, "lab_bench.py": check_lab, "real_bench.py": check_real, "shape_bench.py": check_shape,
    "train_bench.py": check_train,
}
BENCHES = sorted(path.name for path in BENCH.glob("*.py") if path.name not in HELPERS)
# fault_bench's smoke starts two stacks (the sections that share one, then abuse's own) and trains 3 tiny runs.
TIMEOUT_S = {"fault_bench.py": 600}


def test_every_bench_has_a_smoke_check():
    missing = [name for name in BENCHES if name not in CHECKS]
    assert not missing, f"add a --smoke mode and a check in {__file__} for: {', '.join(missing)}"


# Its own database: the PostgreSQL pass (`make test-postgres`, -m database) would run the same SQLite stacks again.
@pytest.mark.own_database
@pytest.mark.parametrize("name", [name for name in BENCHES if name in CHECKS])
def test_the_bench_runs_in_its_smoke_mode(name):
    # The bench makes its own world (database, Redis, var dirs): nothing of the test session's leaks in.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DJANGO_", "TUNELAB_", "REDIS_URL", "DATABASE_URL"))}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(BENCH / name), "--smoke"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S.get(name, 300))
    output = proc.stdout
    assert proc.returncode == 0, f"{name} --smoke exited {proc.returncode}\n{output[-3000:]}\n{proc.stderr[-3000:]}"
    CHECKS[name](output)
