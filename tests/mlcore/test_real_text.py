"""Measuring the classifier on real text (manage.py evaluate, polar figures) and prompts that
travel with the adapter, so a finished run answers as it was trained whatever the default says."""

import json
import shutil

import pytest
from django.core.management import CommandError, call_command

from mlcore.classify import Classifier, load_classifier
from mlcore.data import DatasetError, read_labelled
from mlcore.metrics import polar_metrics
from mlcore.prompt import DEFAULT_PROMPT_VERSION, PROMPT_FILE, SYSTEM_PROMPTS, PromptFormat, labels_system_prompt

LABELS3 = ["positive", "negative", "neutral"]


def probs(pos, neg, neu):
    return {"positive": pos, "negative": neg, "neutral": neu}


# --- polar figures ------------------------------------------------------------------------------


def test_polar_accuracy_reads_the_lean_even_when_the_answer_was_neutral():
    y_true = ["positive", "negative", "positive", "negative", "neutral"]
    y_pred = ["positive", "neutral", "neutral", "positive", "neutral"]
    p = [probs(.8, .1, .1), probs(.1, .3, .6), probs(.2, .3, .5), probs(.6, .3, .1), probs(.9, .05, .05)]
    figures = polar_metrics(y_true, y_pred, p)
    assert figures["n"] == 4  # the neutral row is not polar
    # rows 1 and 2 lean the labelled way (row 2 answered neutral but leans negative); row 3 leans
    # negative while labelled positive, row 4 positive while labelled negative
    assert figures["polar_accuracy"] == pytest.approx(2 / 4)
    assert figures["polar_called_neutral"] == pytest.approx(2 / 4)


def test_polar_figures_are_absent_without_both_polar_labels():
    assert polar_metrics(["neutral"], ["neutral"], [{"neutral": 1.0, "mixed": 0.0}]) is None
    assert polar_metrics(["neutral", "neutral"], ["neutral", "positive"], [probs(.1, .1, .8)] * 2) is None


# --- reading a labelled file --------------------------------------------------------------------


def test_a_labelled_file_may_repeat_a_text_but_not_carry_an_unknown_label(tmp_path):
    good = tmp_path / "dev.jsonl"
    rows = [{"text": f"line {i % 6}", "label": LABELS3[i % 3]} for i in range(12)]
    good.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(read_labelled(good)) == 12
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\n" + "".join(f"t{i},positive\n" for i in range(10)) + "odd one,great\n")
    with pytest.raises(DatasetError, match="line 12: unknown label 'great'"):
        read_labelled(bad)


# --- manage.py evaluate --------------------------------------------------------------------------


@pytest.fixture
def dev_file(tmp_path, small_dataset):
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in small_dataset.test))
    return path


def test_evaluate_prints_f1_the_confusion_matrix_and_the_polar_figures(tiny_run, dev_file, tmp_path, capsys):
    result, _ = tiny_run
    out_json = tmp_path / "result.json"
    call_command("evaluate", adapter=str(result.out_dir), data=str(dev_file), json=str(out_json))
    printed = capsys.readouterr().out
    saved = json.loads(out_json.read_text())
    metrics, polar = saved["metrics"], saved["polar"]
    assert metrics["n"] == 24 and len(saved["predictions"]) == 24
    assert f"macro-F1 {metrics['macro_f1']:.3f}" in printed
    assert f"P(positive) vs P(negative) accuracy {polar['polar_accuracy']:.3f}" in printed
    assert f"called neutral {polar['polar_called_neutral']:.1%}" in printed
    for label, row in zip(metrics["labels"], metrics["confusion_matrix"], strict=True):
        assert any(line.split() == [label, *map(str, row)] for line in printed.splitlines()), printed


def test_evaluate_names_what_is_wrong_with_its_input(tiny_run, dev_file, tmp_path):
    result, _ = tiny_run
    (tmp_path / "dev.txt").write_text(dev_file.read_text())
    with pytest.raises(CommandError, match="unsupported file type"):
        call_command("evaluate", adapter=str(result.out_dir), data=str(tmp_path / "dev.txt"))
    with pytest.raises(CommandError, match="cannot read"):
        call_command("evaluate", adapter=str(result.out_dir), data=str(tmp_path / "missing.jsonl"))
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(dev_file.read_text() + json.dumps({"text": "Good and bad.", "label": "mixed"}) + "\n")
    with pytest.raises(CommandError, match="label\\(s\\) mixed are not among the classifier's"):
        call_command("evaluate", adapter=str(result.out_dir), data=str(mixed))
    with pytest.raises(CommandError, match="holds no adapter"):
        call_command("evaluate", adapter=str(tmp_path), data=str(dev_file))


# --- prompts versioned with the adapter ------------------------------------------------------------


def test_training_writes_the_exact_prompt_beside_the_adapter(tiny_run, tokenizer):
    result, _ = tiny_run
    saved = json.loads((result.out_dir / PROMPT_FILE).read_text())
    assert saved["version"] == DEFAULT_PROMPT_VERSION
    assert saved["system"] == labels_system_prompt(LABELS3, DEFAULT_PROMPT_VERSION)
    assert saved["chat_template"] == tokenizer.chat_template
    assert json.loads((result.out_dir / "train_config.json").read_text())["prompt_version"] == DEFAULT_PROMPT_VERSION


@pytest.fixture
def adapter_copy(tiny_run, tmp_path):
    copy = tmp_path / "adapter"
    shutil.copytree(tiny_run[0].out_dir, copy)
    return copy


def test_an_adapter_from_before_versioning_keeps_the_version_1_prompt(adapter_copy):
    (adapter_copy / PROMPT_FILE).unlink()
    config = json.loads((adapter_copy / "train_config.json").read_text())
    del config["prompt_version"]
    (adapter_copy / "train_config.json").write_text(json.dumps(config))
    classifier = load_classifier(adapter_dir=adapter_copy, device="cpu")
    assert classifier.prompt.version == 1
    assert "product review" in classifier.prompt.system == SYSTEM_PROMPTS[1].format(choices="positive, negative or neutral")


def test_a_finished_run_is_served_with_its_own_prompt_not_todays_default(adapter_copy, small_dataset):
    # As if the default had moved on since training: the record says another prompt than today's default.
    other_version = next(v for v in SYSTEM_PROMPTS if v != DEFAULT_PROMPT_VERSION)
    recorded = PromptFormat(other_version, labels_system_prompt(LABELS3, other_version))
    (adapter_copy / PROMPT_FILE).write_text(json.dumps({"version": recorded.version, "system": recorded.system}))
    served = load_classifier(adapter_dir=adapter_copy, device="cpu")
    assert served.prompt == recorded
    texts = [e.text for e in small_dataset.test[:6]]
    explicit = Classifier(served.model, served.tokenizer, LABELS3, prompt=recorded).predict(texts)
    default = Classifier(served.model, served.tokenizer, LABELS3).predict(texts)
    def flat(predictions):
        return [p.probs[label] for p in predictions for label in LABELS3]

    got = served.predict(texts)
    assert flat(got) == pytest.approx(flat(explicit), abs=1e-5)
    assert flat(got) != pytest.approx(flat(default), abs=1e-5)


def test_scored_with_other_labels_an_adapter_keeps_its_prompt_version(adapter_copy):
    (adapter_copy / PROMPT_FILE).write_text(json.dumps({"version": 1, "system": labels_system_prompt(LABELS3, 1)}))
    prompt = PromptFormat.for_adapter(adapter_copy, ["positive", "negative", "lukewarm"])
    assert prompt == PromptFormat(1, labels_system_prompt(["positive", "negative", "lukewarm"], 1))


def test_an_unknown_prompt_version_is_refused_naming_the_known_ones():
    from mlcore.config import ConfigError, TrainConfig

    with pytest.raises(ValueError, match="unknown prompt version 99"):
        labels_system_prompt(LABELS3, 99)
    with pytest.raises(ConfigError, match="prompt_version"):
        TrainConfig(prompt_version=max(SYSTEM_PROMPTS) + 1).validate()


# --- the "does it generalise?" sentences ---------------------------------------------------------


def test_a_run_is_scored_on_the_probe_sentences_mistakes_first(tiny_run):
    from mlcore.data import load_probe

    result, _ = tiny_run
    probe = json.loads((result.out_dir / "metrics.json").read_text())["probe"]
    assert probe == result.probe
    sentences = load_probe(LABELS3)
    assert probe["metrics"]["n"] == len(sentences) and {r["text"] for r in probe["predictions"]} == {e.text for e in sentences}
    rows = probe["predictions"]
    wrong = [r for r in rows if not r["correct"]]
    assert rows[: len(wrong)] == wrong  # mistakes lead
    confidence = [r["probs"][r["predicted"]] for r in wrong]
    assert confidence == sorted(confidence, reverse=True)  # the most confident mistake first
    assert probe["polar"]["n"] == sum(e.label != "neutral" for e in sentences)


def test_the_probe_sentences_are_in_no_split(reviews, reviews_mixed):
    from mlcore.data import load_probe

    probe = {e.text.lower() for e in load_probe(LABELS3)}
    assert len(probe) == 48
    for dataset in (reviews, reviews_mixed):
        for split in (dataset.train, dataset.validation, dataset.test):
            assert not probe & {e.text.lower() for e in split}
