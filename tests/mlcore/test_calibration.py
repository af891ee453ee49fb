"""Agreement between two classifiers and calibration (expected calibration error, reliability bins),
checked against values worked out by hand."""

import pytest

from mlcore.metrics import agreement, calibration


def probs(top: str, p: float, labels=("positive", "negative", "neutral")) -> dict:
    rest = (1 - p) / (len(labels) - 1)
    return {label: p if label == top else rest for label in labels}


def test_agreement_is_the_share_of_equal_labels_and_refuses_unequal_lengths():
    assert agreement(["a", "b", "c", "a"], ["a", "b", "a", "a"]) == 0.75
    with pytest.raises(ValueError, match="3 vs 2"):
        agreement(["a", "b", "c"], ["a", "b"])
    with pytest.raises(ValueError):
        agreement([], [])


def test_a_perfectly_calibrated_classifier_has_no_calibration_error():
    # 10 answers at 0.8 confidence, 8 right; 10 at 0.6, 6 right.
    y_true = ["positive"] * 8 + ["negative"] * 2 + ["positive"] * 6 + ["negative"] * 4
    rows = [probs("positive", 0.8)] * 10 + [probs("positive", 0.6)] * 10
    result = calibration(y_true, rows)
    assert result["ece"] == pytest.approx(0.0, abs=1e-12)
    assert result["accuracy"] == pytest.approx(0.7) and result["mean_confidence"] == pytest.approx(0.7)
    assert [(r["n"], round(r["confidence"], 6), r["accuracy"]) for r in result["reliability"]] == [(10, 0.6, 0.6),
                                                                                                    (10, 0.8, 0.8)]


def test_an_under_confident_classifier_has_a_negative_gap_and_the_ece_of_the_bins():
    # 30 right answers at 0.5 confidence, 10 at 0.95 with 9 right: ECE = (30·|1 - 0.5| + 10·|0.9 - 0.95|) / 40.
    y_true = ["neutral"] * 30 + ["negative"] * 9 + ["positive"]
    rows = [probs("neutral", 0.5)] * 30 + [probs("negative", 0.95)] * 10
    result = calibration(y_true, rows)
    assert result["ece"] == pytest.approx((30 * 0.5 + 10 * 0.05) / 40)
    assert result["gap"] == pytest.approx((30 * 0.5 + 10 * 0.95) / 40 - 39 / 40)
    assert result["gap"] < 0 and result["n"] == 40 and result["bins"] == 10
    # 0.5 lies in (0.4, 0.5]: a bin includes its upper edge.
    assert [(r["low"], r["high"]) for r in result["reliability"]] == [(0.4, 0.5), (0.9, 1.0)]


def test_calibration_needs_a_probability_row_per_example():
    with pytest.raises(ValueError):
        calibration(["positive"], [])
