"""Metrics on a known confusion."""

import pytest

from mlcore.metrics import compute_metrics


def test_metrics_match_a_hand_computed_confusion():
    labels = ["positive", "negative", "neutral"]
    y_true = ["positive"] * 4 + ["negative"] * 4 + ["neutral"] * 2
    y_pred = ["positive", "positive", "positive", "negative"] + ["negative"] * 4 + ["neutral", "positive"]
    m = compute_metrics(y_true, y_pred, labels)
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 4, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(0.8)
    # positive: P=3/4 R=3/4 F1=.75; negative: P=4/5 R=1 F1=8/9; neutral: P=1 R=1/2 F1=2/3
    assert m["per_class"]["positive"] == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4})
    assert m["per_class"]["negative"]["f1"] == pytest.approx(8 / 9)
    assert m["per_class"]["neutral"]["recall"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((0.75 + 8 / 9 + 2 / 3) / 3)


def test_a_class_never_predicted_scores_zero_and_lowers_macro_f1():
    m = compute_metrics(["positive", "neutral"], ["positive", "positive"], ["positive", "negative", "neutral"])
    assert m["per_class"]["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert m["macro_f1"] == pytest.approx((2 / 3) / 3)
