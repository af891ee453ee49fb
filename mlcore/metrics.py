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
