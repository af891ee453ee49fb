"""Classification metrics, computed by scikit-learn so they mean what the field means by them."""

from __future__ import annotations

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def compute_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    """accuracy, macro_f1, per_class {label: precision, recall, f1, support}, confusion_matrix.

    confusion_matrix[i][j] counts examples of true label labels[i] predicted as labels[j].
    Macro-F1 averages over `labels` (all of them, even a class absent from y_true), so a model
    that never predicts a class is penalised for it. Undefined ratios count as 0.
    """
    labels = list(labels)
    if not y_true:
        raise ValueError("no examples to score")
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "labels": labels,
        "n": len(y_true),
    }


POLAR = ("positive", "negative")


def polar_metrics(y_true: list[str], y_pred: list[str], probs: list[dict[str, float]]) -> dict | None:
    """How a classifier treats the rows that do take a side (labelled positive or negative).

    polar_accuracy: the share where P(positive) vs P(negative) leans the labelled way, asked even
    when the classifier's answer was neutral: does it read the direction at all?
    polar_called_neutral: the share it answered neutral. On real text this is the typical
    failure of a classifier trained on tidy synthetic reviews ("Works great" -> neutral), and
    macro-F1 hides it when the real set's own neutral labels are noisy.
    None when the label set lacks positive or negative, or no row is polar.
    """
    if not probs or not all(label in probs[0] for label in POLAR):
        return None
    polar = [(t, p, pr) for t, p, pr in zip(y_true, y_pred, probs, strict=True) if t in POLAR]
    if not polar:
        return None
    leans_right = sum((pr["positive"] > pr["negative"]) == (t == "positive") for t, _, pr in polar)
    return {
        "n": len(polar),
        "polar_accuracy": leans_right / len(polar),
        "polar_called_neutral": sum(p == "neutral" for _, p, _ in polar) / len(polar),
    }


def agreement(labels: list[str], reference: list[str]) -> float:
    """The share of examples where two classifiers give the same label (e.g. an exported file
    against the model it was exported from): what rounding changed, whatever the gold label."""
    if not reference or len(labels) != len(reference):
        raise ValueError(f"agreement needs two equally long, non-empty label lists ({len(labels)} vs {len(reference)})")
    return sum(a == b for a, b in zip(labels, reference, strict=True)) / len(reference)


CALIBRATION_BINS = 10


def calibration(y_true: list[str], probs: list[dict[str, float]], bins: int = CALIBRATION_BINS) -> dict:
    """How far the classifier's confidence (its top label's probability) is from how often it is right.

    Expected calibration error (Guo et al., 2017): the examples go into `bins` equal-width bins
    by confidence; ECE is the mean over examples of |accuracy - mean confidence| of their bin. 0 is
    perfectly calibrated. `gap` = mean confidence - accuracy: above 0 the model is over-confident,
    below 0 under-confident (what training on flipped labels tends to do: cross-entropy on noisy
    targets pulls the top probability towards the share of labels that were left alone).
    `reliability`: the non-empty bins (the reliability diagram as rows).
    """
    if not probs or len(probs) != len(y_true):
        raise ValueError("calibration needs one probability row per example")
    confidence = [max(row.values()) for row in probs]
    correct = [max(row, key=row.get) == label for row, label in zip(probs, y_true, strict=True)]
    rows = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i, c in enumerate(confidence) if lo < c <= hi or (b == 0 and c == 0)]
        if members:
            rows.append({"low": lo, "high": hi, "n": len(members),
                         "confidence": sum(confidence[i] for i in members) / len(members),
                         "accuracy": sum(correct[i] for i in members) / len(members)})
    n = len(confidence)
    mean_confidence, accuracy = sum(confidence) / n, sum(correct) / n
    return {
        "ece": sum(r["n"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows),
        "mean_confidence": mean_confidence,
        "accuracy": accuracy,
        "gap": mean_confidence - accuracy,
        "bins": bins,
        "reliability": rows,
        "n": n,
    }
