import io
from pathlib import Path

import pytest
from django.core.management import call_command

from labs.catalog import CatalogError, load_catalog, parse_lab
from labs.models import Lab

BANK = Path(__file__).resolve().parents[2] / "quiz" / "bank"
REQUIRED = {"sentiment-lora", "masking-ablation", "rank-sweep", "data-size", "mixed-label", "fewshot-vs-finetune",
            "learning-rate-sweep", "rslora-vs-lora"}


def test_the_catalog_has_the_six_labs_with_sweeps_as_groups():
    labs = {spec.slug: spec for spec in load_catalog()}
    assert REQUIRED <= set(labs)
    assert [v["overrides"]["lora_r"] for v in labs["rank-sweep"].variants] == [4, 16, 64]
    assert [v["overrides"]["train_limit"] for v in labs["data-size"].variants] == [50, 200, None]
    assert [v["overrides"]["mask_prompt"] for v in labs["masking-ablation"].variants] == [True, False]
    assert labs["mixed-label"].variants[2]["continue_from"] == "three-labels"
    assert labs["fewshot-vs-finetune"].variants[0]["mode"] == "fewshot"
    assert not labs["sentiment-lora"].variants and labs["sentiment-lora"].preset["mask_prompt"] is True


def test_the_default_labs_preset_is_the_trainers_defaults_so_finetune_trains_the_default_lab():
    from mlcore.config import TrainConfig

    preset = {spec.slug: spec for spec in load_catalog()}["sentiment-lora"].preset
    assert TrainConfig.from_dict(preset) == TrainConfig()


def test_the_learning_rate_and_rslora_labs_each_vary_what_their_questions_ask_about():
    labs = {spec.slug: spec for spec in load_catalog()}
    rates = labs["learning-rate-sweep"]
    assert rates.sweep == "learning_rate"
    assert [v["overrides"] for v in rates.variants] == [{"learning_rate": lr} for lr in (1e-4, 3e-4, 1e-3, 1e-2)]
    scaling = labs["rslora-vs-lora"]
    assert scaling.preset["lora_alpha"] == 16 and scaling.sweep == "lora_r"
    assert [(v["overrides"]["lora_r"], v["overrides"]["use_rslora"]) for v in scaling.variants] == [
        (8, False), (64, False), (8, True), (64, True)]
    assert {"rslora-scaling-factor", "lora-alpha-over-r-scaling"} <= set(scaling.questions)


def test_a_run_with_a_non_boolean_rslora_flag_stops_the_catalog_load():
    text = ("---\nslug: broken\ntitle: Broken\ngoal: g\npreset: {epochs: 1}\n"
            "runs:\n  - {key: a, label: A, overrides: {use_rslora: maybe}}\n---\nbody")
    with pytest.raises(CatalogError, match="use_rslora"):
        parse_lab(text, "broken.md")


def test_every_question_a_lab_names_exists_in_the_bank_and_points_back():
    for spec in load_catalog():
        for slug in spec.questions:
            path = BANK / f"{slug}.md"
            assert path.exists(), f"{spec.slug} names missing question {slug}"
            assert f"lab: {spec.slug}\n" in path.read_text(), f"{slug} does not link back to {spec.slug}"


def test_a_preset_out_of_range_stops_the_catalog_load():
    text = "---\nslug: broken\ntitle: Broken\ngoal: g\npreset: {lora_r: 0}\n---\nbody"
    with pytest.raises(CatalogError, match="lora_r"):
        parse_lab(text, "broken.md")


def test_a_run_continuing_an_unknown_run_is_refused():
    text = ("---\nslug: broken\ntitle: Broken\ngoal: g\npreset: {epochs: 1}\n"
            "runs:\n  - {key: a, label: A, continue_from: b}\n---\nbody")
    with pytest.raises(CatalogError, match="continue_from"):
        parse_lab(text, "broken.md")


def test_load_labs_syncs_the_files_and_retires_removed_labs(db):
    Lab.objects.create(slug="gone", title="Gone", goal="g", preset={})
    call_command("load_labs", stdout=io.StringIO())
    assert set(Lab.objects.filter(is_active=True).values_list("slug", flat=True)) >= REQUIRED
    assert Lab.objects.get(slug="gone").is_active is False
    call_command("load_labs", stdout=io.StringIO())  # idempotent
    assert Lab.objects.filter(slug="sentiment-lora").count() == 1


def test_the_real_text_lab_is_the_default_lab_with_lora_in_every_block():
    from mlcore.config import TrainConfig

    labs = {spec.slug: spec for spec in load_catalog()}
    default = TrainConfig.from_dict(labs["sentiment-lora"].preset).to_dict()
    real = TrainConfig.from_dict(labs["real-text"].preset).to_dict()
    # Its dropout stays 0.05, the setting its figures were measured with (the default dropped it later).
    assert {name for name in default if default[name] != real[name]} == {"lora_top_blocks", "learning_rate", "lora_dropout"}
    assert (real["lora_top_blocks"], real["epochs"], real["learning_rate"], real["lora_dropout"]) == (0, 1, 0.0015, 0.05)
    assert not labs["real-text"].variants


def test_the_step_cost_questions_answer_is_computed_from_the_default_models_blocks():
    """top-blocks-lora-step-cost: forward 1, backward 2 per block; cached frozen blocks cost nothing."""
    import gguf

    from mlcore.config import TrainConfig
    from mlcore.registry import DEFAULT_BASE_MODEL, get_spec, packaged_gguf
    from quiz.bank import BANK_DIR, parse_question_file

    field = gguf.GGUFReader(packaged_gguf(get_spec(DEFAULT_BASE_MODEL))).fields["llama.block_count"]
    blocks, top = int(field.parts[field.data[0]][0]), 8  # the question asks about the top 8 (not the default)
    question = parse_question_file(BANK_DIR / "top-blocks-lora-step-cost.md")
    default = TrainConfig().lora_top_blocks  # the answer's aside quotes the default's share of the compute
    assert blocks == 30 and f"the top {default}: {default} × 3 / 90 ≈ {default * 3 / 90:.2f}" in question.answer
    assert abs(question.numeric_answer - top * 3 / (blocks * 3)) <= question.tolerance
    frozen = blocks - top
    for wrong in (frozen * 1 + top * 3, frozen * 2 + top * 3):  # frozen blocks run forward / forward and backward
        assert abs(question.numeric_answer - wrong / (blocks * 3)) > question.tolerance
