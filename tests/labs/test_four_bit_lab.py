"""The "What does 4-bit cost your classifier?" lab: its catalog entry, what a real run of it on the
tiny model holds (trained, then exported at each quant and rounding and scored; the run itself is
made once, by the browser test in test_new_labs_browser.py), the table on its results page, and
the questions it links both ways."""

import json

import pytest

from labs import storage
from labs.catalog import CatalogError, load_catalog, parse_lab
from labs.models import Run
from mlcore.metrics import compute_metrics
from tests.labs.conftest import make_run

SLUG = "four-bit-cost"
PLAN = [("f16", None), ("q8_0", "nearest"), ("q8_0", "gptq"), ("q4_0", "nearest"), ("q4_0", "gptq")]


def lab_text(quantize: str, base_model: str = "smollm2-135m-instruct") -> str:
    return (f"---\nslug: broken\ntitle: Broken\ngoal: g\npreset: {{base_model: {base_model}, epochs: 1}}\n"
            f"quantize: {quantize}\n---\nbody")


def test_the_lab_exports_every_quant_with_both_roundings_after_the_default_labs_training():
    labs = {spec.slug: spec for spec in load_catalog()}
    spec = labs[SLUG]
    assert [(q["quant"], q.get("rounding")) for q in spec.quantize] == PLAN
    assert spec.preset == labs["sentiment-lora"].preset  # the classifier learners already know
    assert not any(other.quantize for slug, other in labs.items() if slug != SLUG)


@pytest.mark.parametrize("quantize, message", [
    ("[{quant: q3_x, rounding: gptq}]", "needs a quant, one of f16, q8_0, q4_0"),
    ("[{quant: q4_0, rounding: stochastic}]", "rounding must be one of gptq, nearest"),
    ("[{quant: q4_0}]", "rounding must be one of gptq, nearest"),
    ("[{quant: f16, rounding: gptq}]", "f16 rounds nothing"),
    ("[{quant: q4_0, rounding: gptq}, {quant: q4_0, rounding: gptq}]", "repeats q4_0 gptq"),
    ("[{quant: q4_0, rounding: gptq, bits: 4}]", "needs a quant"),
])
def test_a_wrong_export_in_a_lab_file_stops_the_catalog_load(quantize, message):
    with pytest.raises(CatalogError, match=message):
        parse_lab(lab_text(quantize), "broken.md")


def test_a_lab_that_quantizes_a_base_model_that_cannot_export_is_refused():
    with pytest.raises(CatalogError, match="quantize: GGUF export supports llama-architecture"):
        parse_lab(lab_text("[{quant: q8_0, rounding: gptq}]", base_model="qwen2.5-0.5b-instruct"), "broken.md")


def assert_the_run_measured_each_export(run: Run, client) -> None:
    """What a finished run of the lab holds, and its results page as served (the HTML): each
    export's size, agreement and macro-F1, consistent with the run's own predictions. Called by
    tests/labs/test_new_labs_browser.py on the one real run of the lab the suite makes (5 exports
    with GPTQ calibration: about a minute of CPU), which then checks the table in a browser."""
    assert run.status == Run.Status.SUCCEEDED, run.error
    checked = run.metrics["quantization"]
    rows = checked["rows"]
    assert [(r["quant"], r["rounding"]) for r in rows] == PLAN and checked["n"] == len(run.predictions)
    size = {(r["quant"], r["rounding"]): r["size"] for r in rows}
    assert size[("f16", None)] > size[("q8_0", "gptq")] > size[("q4_0", "gptq")]
    assert size[("q8_0", "gptq")] == size[("q8_0", "nearest")] and size[("q4_0", "gptq")] == size[("q4_0", "nearest")]
    gold = [p["label"] for p in run.predictions]
    for row in rows:  # each export's labels are the run's own, except the ones it says it changed
        labels = [p["predicted"] for p in run.predictions]
        for change in row["changed"]:
            assert labels[change["i"]] != change["predicted"]
            labels[change["i"]] = change["predicted"]
        assert row["agreement"] == pytest.approx(1 - len(row["changed"]) / len(labels))
        assert row["macro_f1"] == pytest.approx(compute_metrics(gold, labels, run.metrics["test"]["labels"])["macro_f1"])
    log = " ".join(e.payload.get("message", "") for e in run.events.filter(type="log"))
    assert "GGUF export 5 of 5: q4_0 with gptq rounding" in log and "of the labels unchanged" in log
    # The figures travel with the adapter (another host's results page reads the same).
    stored = storage.adapter_dir(run)
    assert json.loads((stored / "metrics.json").read_text())["quantization"] == checked

    page = client.get(f"/labs/runs/{run.pk}/results/").content.decode()
    assert 'id="quantization-table"' in page
    for row in rows:
        marker = f'data-quant="{row["quant"]}" data-rounding="{row["rounding"] or "none"}"'
        assert marker in page
        assert f"{row['size'] / 1e6:.1f} MB" in page and f"{100 * row['agreement']:.1f}% ({len(row['changed'])} changed)" in page
    assert "GPTQ, calibrated on 32 training reviews" in page and "nearest level (llama-quantize&#x27;s rule)" in page


@pytest.mark.django_db
def test_a_run_of_another_lab_shows_no_quantization_table(owner, owner_client):
    run = make_run(owner, status=Run.Status.SUCCEEDED, metrics={"test": {"accuracy": 0.5, "macro_f1": 0.4, "n": 1,
                                                                          "labels": [], "per_class": {},
                                                                          "confusion_matrix": []}})
    page = owner_client.get(f"/labs/runs/{run.pk}/results/").content.decode()
    assert "quantization-table" not in page


@pytest.mark.django_db
def test_the_lab_page_links_its_questions_and_each_links_back(labs, owner_client):
    import io

    from django.core.management import call_command
    from django.urls import reverse

    call_command("load_bank", stdout=io.StringIO())
    lab_url = reverse("labs:lab", args=[SLUG])
    page = owner_client.get(lab_url).content.decode()
    spec = next(spec for spec in load_catalog() if spec.slug == SLUG)
    assert "nearest-rounding-erases-lora-update" in spec.questions
    exports = page[page.index('id="lab-exports"'):page.index("</ul>", page.index('id="lab-exports"'))]
    assert exports.count("<li>") == len(PLAN) and "q4_0, nearest rounding" in exports and "q4_0, gptq rounding" in exports
    for slug in spec.questions:
        question_url = reverse("quiz:question", args=[slug])
        assert f'href="{question_url}"' in page, slug
        assert f'href="{lab_url}"' in owner_client.get(question_url).content.decode(), slug
