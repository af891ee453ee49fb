"""Download for llama.cpp / Ollama: the results page's panel, the Celery build on the export
queue, the cached zip, owner checks and bad input; and the export_gguf / classify --gguf
commands. Runs use mlcore's tiny model (real tokenizer): an export takes seconds."""

import io
import json
import shutil
import time
import zipfile

import pytest
from django.core.management import CommandError, call_command

from labs import exports
from labs.models import Run
from tests.labs.conftest import SERVER_ENV, make_run, purge_queues
from tests.servers import celery_worker


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    """A LoRA adapter of the tiny model, trained for a few steps (adapter + labels + config)."""
    from mlcore.config import TrainConfig
    from mlcore.data import load_bundled
    from mlcore.train import train

    out = tmp_path_factory.mktemp("tiny-adapter")
    config = TrainConfig(base_model="tiny-test", epochs=1, batch_size=8, train_limit=16, learning_rate=0.02,
                         eval_every=0, max_length=128, max_steps=3, device="cpu")
    train(config, load_bundled("reviews"), out)
    return out


def finished_run(owner, adapter, **fields) -> Run:
    from mlcore.metrics import compute_metrics

    labels = ["positive", "negative", "neutral"]
    metrics = {"test": compute_metrics(labels, ["positive", "neutral", "neutral"], labels), "validation": [], "train": {}}
    run = make_run(owner, status=Run.Status.SUCCEEDED, metrics=metrics, **fields)
    shutil.rmtree(run.artifact_dir, ignore_errors=True)
    shutil.copytree(adapter, run.artifact_dir, ignore=shutil.ignore_patterns("checkpoint*"))
    return run


@pytest.fixture
def run(owner, tiny_adapter, db):
    return finished_run(owner, tiny_adapter)


def panel_url(run):
    return f"/labs/runs/{run.pk}/gguf/"


# --- the page and its access rules ----------------------------------------------------------------


def test_the_results_page_offers_the_download_with_a_quant_choice(owner_client, run):
    html = owner_client.get(f"/labs/runs/{run.pk}/results/").content.decode()
    assert 'id="gguf-export"' in html and "Download for llama.cpp / Ollama" in html
    for quant in ("q8_0", "q4_0", "f16"):
        assert f'<option value="{quant}"' in html
    assert '<option value="q8_0" selected>' in html
    if shutil.which("llama-quantize") is None:
        assert "llama-quantize" in html and 'value="q4_k_m"' not in html


@pytest.mark.parametrize("status", [Run.Status.QUEUED, Run.Status.RUNNING, Run.Status.FAILED, Run.Status.CANCELLED])
def test_a_run_that_did_not_finish_training_has_no_export(owner_client, owner, status):
    unfinished = make_run(owner, status=status)
    assert owner_client.get(panel_url(unfinished)).status_code == 404
    assert owner_client.post(panel_url(unfinished), {"quant": "q8_0"}).status_code == 404
    assert owner_client.get(f"/labs/runs/{unfinished.pk}/gguf/q8_0.zip").status_code == 404
    assert not exports.export_dir(unfinished).exists()


def test_another_users_run_is_a_404_everywhere(client, other_user, run):
    client.force_login(other_user)
    assert client.get(panel_url(run)).status_code == 404
    assert client.post(panel_url(run), {"quant": "q8_0"}).status_code == 404
    assert client.get(f"/labs/runs/{run.pk}/gguf/q8_0.zip").status_code == 404
    assert not exports.export_dir(run).exists()


def test_an_anonymous_visitor_is_sent_to_log_in(client, run):
    response = client.post(panel_url(run), {"quant": "q8_0"})
    assert response.status_code == 302 and "/login" in response["Location"]
    assert not exports.export_dir(run).exists()


def test_an_unknown_quant_is_refused_with_the_choices(owner_client, run):
    response = owner_client.post(panel_url(run), {"quant": "q3_x"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="gguf-error"' in html and "quant: unknown quant &#x27;q3_x&#x27;" in html
    assert "choose one of: q8_0, f16, q4_0" in html
    assert not exports.export_dir(run).exists()


def test_a_download_that_was_never_built_is_a_404(owner_client, run):
    assert owner_client.get(f"/labs/runs/{run.pk}/gguf/q8_0.zip").status_code == 404
    assert owner_client.get(f"/labs/runs/{run.pk}/gguf/nonsense.zip").status_code == 404


# --- building --------------------------------------------------------------------------------------


def test_a_failed_export_says_why_on_the_page_and_leaves_nothing_half_written(owner_client, run):
    (run.artifact_dir / "adapter_model.safetensors").unlink()
    state = exports.gguf_export_build(run_id=run.pk, quant="q8_0")
    assert state.state == "failed" and "adapter_model.safetensors" in state.message
    assert [p.name for p in exports.export_dir(run).iterdir()] == ["q8_0.json"]  # no zip, no temporaries
    html = owner_client.get(panel_url(run)).content.decode()
    assert 'data-state="failed"' in html and "is missing adapter_model.safetensors" in html
    assert "hx-trigger" not in html  # nothing to poll


def test_a_build_whose_worker_vanished_can_be_started_again(owner_client, run):
    exports._write_state(run, "q4_0", "running", progress=0.3, message="quantizing")
    saved = json.loads((exports.export_dir(run) / "q4_0.json").read_text())
    assert exports.gguf_export_state(run=run, quant="q4_0").in_progress
    saved["updated"] -= exports.STALE_AFTER_S + 1
    (exports.export_dir(run) / "q4_0.json").write_text(json.dumps(saved))
    state = exports.gguf_export_state(run=run, quant="q4_0")
    assert state.state == "failed" and "worker went away" in state.message


@pytest.mark.django_db(transaction=True)
def test_the_export_is_built_by_a_worker_on_the_export_queue_then_cached(tmp_path, client, owner, tiny_adapter):
    run = finished_run(owner, tiny_adapter)
    client.force_login(owner)
    purge_queues()
    with celery_worker(tmp_path, queues="export", **SERVER_ENV):
        response = client.post(panel_url(run), {"quant": "q8_0"})
        assert response.status_code == 302 and response["Location"].endswith(f"/labs/runs/{run.pk}/results/#gguf-export")
        seen = set()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            state = exports.gguf_export_state(run=run, quant="q8_0")
            seen.add(state.state)
            if state.state in ("ready", "failed"):
                break
            polled = client.get(panel_url(run), HTTP_HX_REQUEST="true").content.decode()
            if 'hx-trigger="every 1s"' not in polled:  # the panel keeps polling while it builds...
                # ...unless the build finished between the state read above and this GET
                assert exports.gguf_export_state(run=run, quant="q8_0").state in ("ready", "failed"), polled
            time.sleep(0.3)
    assert state.state == "ready", state.message
    assert "queued" in seen or "running" in seen

    html = client.get(f"/labs/runs/{run.pk}/results/").content.decode()
    assert f'href="/labs/runs/{run.pk}/gguf/q8_0.zip"' in html and "hx-trigger" not in html.split('id="gguf-export"')[1][:400]
    download = client.get(f"/labs/runs/{run.pk}/gguf/q8_0.zip")
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    assert f'filename="tunelab-run-{run.pk}-q8_0.zip"' in download["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))) as zf:
        names = sorted(zf.namelist())
        modelfile = zf.read("Modelfile").decode()
    assert names == sorted([f"tunelab-run-{run.pk}-q8_0.gguf", "Modelfile", "README.md"])
    assert modelfile.startswith(f"FROM ./tunelab-run-{run.pk}-q8_0.gguf\n")
    assert sorted(p.name for p in exports.export_dir(run).iterdir()) == ["q8_0.json", f"tunelab-run-{run.pk}-q8_0.zip"]

    # Cached: asking again starts nothing (no worker runs now; the state stays ready).
    built = exports.bundle_path(run, "q8_0").stat().st_mtime_ns
    assert client.post(panel_url(run), {"quant": "q8_0"}).status_code == 302
    assert exports.gguf_export_state(run=run, quant="q8_0").state == "ready"
    assert exports.bundle_path(run, "q8_0").stat().st_mtime_ns == built


# --- the commands ------------------------------------------------------------------------------------


def test_export_gguf_refuses_an_unknown_quant_listing_the_choices(tiny_adapter, tmp_path):
    with pytest.raises(CommandError, match=r"unknown quant 'q5'; choose one of: q8_0, f16, q4_0"):
        call_command("export_gguf", "--adapter", str(tiny_adapter), "--out", str(tmp_path / "m.gguf"), "--quant", "q5")
    assert not list(tmp_path.iterdir())


def test_export_gguf_names_the_file_missing_from_the_adapter(tiny_adapter, tmp_path):
    broken = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, broken)
    (broken / "labels.json").unlink()
    with pytest.raises(CommandError, match="is missing labels.json"):
        call_command("export_gguf", "--adapter", str(broken), "--out", str(tmp_path / "m.gguf"))
    assert not (tmp_path / "m.gguf").exists()


def test_export_gguf_writes_the_adapter_alone_and_a_bundle(tiny_adapter, tmp_path):
    import gguf

    out = io.StringIO()
    call_command("export_gguf", "--adapter", str(tiny_adapter), "--out", str(tmp_path / "lora.gguf"), "--adapter-only",
                 stdout=out)
    assert "lora.gguf" in out.getvalue()
    assert gguf.GGUFReader(tmp_path / "lora.gguf").fields["general.type"].contents() == "adapter"
    call_command("export_gguf", "--adapter", str(tiny_adapter), "--out", str(tmp_path / "m.gguf"), "--quant", "q4_0",
                 "--bundle", str(tmp_path / "m.zip"), stdout=io.StringIO())
    with zipfile.ZipFile(tmp_path / "m.zip") as zf:
        assert sorted(zf.namelist()) == ["Modelfile", "README.md", "m.gguf"]


def test_classify_through_a_gguf_matches_classify_with_the_adapter(tiny_adapter, tmp_path):
    from mlcore.data import load_bundled

    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text("".join(json.dumps({"text": e.text}) + "\n" for e in load_bundled("reviews").test[:12]))
    call_command("export_gguf", "--adapter", str(tiny_adapter), "--out", str(tmp_path / "m.gguf"), "--quant", "f16",
                 stdout=io.StringIO())
    call_command("classify", "--adapter", str(tiny_adapter), "--input", str(reviews), "--output", str(tmp_path / "torch.jsonl"),
                 stderr=io.StringIO())
    call_command("classify", "--gguf", str(tmp_path / "m.gguf"), "--backend", "transformers", "--input", str(reviews),
                 "--output", str(tmp_path / "gguf.jsonl"), stderr=io.StringIO())
    torch_rows = [json.loads(line) for line in (tmp_path / "torch.jsonl").read_text().splitlines()]
    gguf_rows = [json.loads(line) for line in (tmp_path / "gguf.jsonl").read_text().splitlines()]
    assert [r["text"] for r in gguf_rows] == [r["text"] for r in torch_rows]
    for ours, theirs in zip(gguf_rows, torch_rows, strict=True):
        assert set(ours) == {"text", "label", "probs"} and list(ours["probs"]) == list(theirs["probs"])
        for label, prob in theirs["probs"].items():
            assert ours["probs"][label] == pytest.approx(prob, abs=0.01)  # f16 weights


def test_classify_refuses_gguf_together_with_an_adapter(tiny_adapter, tmp_path):
    with pytest.raises(CommandError, match="leave out --adapter"):
        call_command("classify", "--gguf", str(tmp_path / "m.gguf"), "--adapter", str(tiny_adapter), "--text", "fine")


# --- in a browser --------------------------------------------------------------------------------


@pytest.mark.browser
def test_the_panel_builds_polls_and_offers_the_zip_in_a_browser(live_server, page, transactional_db, client, owner,
                                                                 tiny_adapter, screenshot):
    from tests.conftest import SCREENSHOTS, log_in_browser

    run = finished_run(owner, tiny_adapter)
    log_in_browser(page, client, owner, live_server.url)
    page.goto(f"{live_server.url}/labs/runs/{run.pk}/results/")
    screenshot(page, "labs-gguf-panel")
    page.select_option("#gguf-quant", "q4_0")
    page.click("#gguf-build")
    page.wait_for_selector('#gguf-exports li[data-quant="q4_0"][data-state="queued"]')  # swapped in by htmx
    assert page.locator("#gguf-quant").input_value() == "q4_0"
    screenshot(page, "labs-gguf-queued")
    purge_queues()
    exports.gguf_export_build(run_id=run.pk, quant="q4_0")  # the worker's part, in this process
    link = page.wait_for_selector('#gguf-exports li[data-state="ready"] a')  # the panel polled its way here
    assert link.get_attribute("href") == f"/labs/runs/{run.pk}/gguf/q4_0.zip"
    screenshot(page, "labs-gguf-ready")
    for width in (1280, 390):  # the panel alone, readable at full size
        page.set_viewport_size({"width": width, "height": 900})
        page.locator("#gguf-export").screenshot(path=str(SCREENSHOTS / f"labs-gguf-panel-only-{width}.png"))
