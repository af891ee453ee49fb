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
