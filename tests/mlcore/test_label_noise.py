"""label_noise: which training labels are flipped (seeded, nested, never the true label), that only
the training split is touched, and what a run records about it."""

import json
from collections import Counter

import pytest

from mlcore.config import ConfigError, TrainConfig, flip_labels, select_examples
from mlcore.data import Example
from tests.mlcore.conftest import tiny_config

LABELS = ["positive", "negative", "neutral"]
EXAMPLES = [Example(f"review {i}", LABELS[i % 3]) for i in range(300)]


def test_the_share_asked_for_is_flipped_each_to_another_label():
    noisy, flipped = flip_labels(EXAMPLES, LABELS, 0.25, seed=0)
    assert len(flipped) == 75 and flipped == sorted(set(flipped))
    for i, (before, after) in enumerate(zip(EXAMPLES, noisy, strict=True)):
        assert after.text == before.text
        assert (after.label != before.label) == (i in flipped)
    # symmetric: each true label goes to both others, and every label is flipped about as often
    pairs = Counter((EXAMPLES[i].label, noisy[i].label) for i in flipped)
    assert len(pairs) == 6 and min(pairs.values()) >= 5
    assert EXAMPLES[0].label == "positive"  # the input is not changed in place


def test_the_flips_come_from_the_seed_and_a_higher_share_flips_a_superset():
    assert flip_labels(EXAMPLES, LABELS, 0.1, seed=3) == flip_labels(EXAMPLES, LABELS, 0.1, seed=3)
    assert flip_labels(EXAMPLES, LABELS, 0.1, seed=3)[1] != flip_labels(EXAMPLES, LABELS, 0.1, seed=4)[1]
    runs = {p: flip_labels(EXAMPLES, LABELS, p, seed=0) for p in (0.1, 0.25, 0.4)}
    assert set(runs[0.1][1]) < set(runs[0.25][1]) < set(runs[0.4][1])
    for i in runs[0.1][1]:  # the same review gets the same wrong label at every share
        assert runs[0.1][0][i].label == runs[0.25][0][i].label == runs[0.4][0][i].label


def test_no_noise_flips_nothing():
    noisy, flipped = flip_labels(EXAMPLES, LABELS, 0.0, seed=0)
    assert noisy == EXAMPLES and flipped == []


@pytest.mark.parametrize("value", [-0.01, 0.51, 1.0])
def test_a_share_outside_0_to_half_is_refused_by_name(value):
    with pytest.raises(ConfigError) as info:
        TrainConfig(label_noise=value).validate()
    assert info.value.errors == {"label_noise": "must be a number in [0, 0.5]"}


@pytest.mark.usefixtures("one_thread")
def test_only_the_training_split_is_flipped_and_the_model_trains_on_the_flipped_labels(small_dataset, tokenizer):
    from mlcore.masking import IGNORE_INDEX
    from mlcore.train import prepare

    config = tiny_config(label_noise=0.25, seed=5)
    run = prepare(config, small_dataset)
    clean = select_examples(small_dataset.train, config.train_limit, config.seed)
    assert len(run.flipped) == round(0.25 * len(clean)) == 8
    for i, (before, after) in enumerate(zip(clean, run.train.examples, strict=True)):
        assert (before.label != after.label) == (i in run.flipped)
        supervised = [t for t in run.train.encoded[i].labels if t != IGNORE_INDEX]
        assert tokenizer.decode(supervised[:1]).strip() == after.label  # the loss sees the noisy label
    assert run.validation.examples == small_dataset.validation and run.test.examples == small_dataset.test


@pytest.mark.usefixtures("one_thread")
def test_a_noisy_run_records_the_rows_it_flipped_and_its_calibration(small_dataset, tmp_path):
    from mlcore.metrics import calibration
    from mlcore.train import train

    train(tiny_config(label_noise=0.4, max_steps=2), small_dataset, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    noise = metrics["train"]["label_noise"]
    expected = flip_labels(select_examples(small_dataset.train, None, 0), small_dataset.labels, 0.4, 0)[1]
    assert noise == {"fraction": 0.4, "flipped": len(expected), "rows": expected}
    assert json.loads((tmp_path / "train_config.json").read_text())["label_noise"] == 0.4
    predictions = [json.loads(line) for line in (tmp_path / "test_predictions.jsonl").read_text().splitlines()]
    assert [p["label"] for p in predictions] == [e.label for e in small_dataset.test]  # test labels untouched
    assert metrics["test_calibration"] == calibration([p["label"] for p in predictions], [p["probs"] for p in predictions])
    assert 0 <= metrics["test_calibration"]["ece"] <= 1


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
