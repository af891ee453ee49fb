"""Score a classifier on labelled examples: metrics plus every prediction, for the UI."""

from __future__ import annotations

from .metrics import compute_metrics, polar_metrics


def evaluate(classifier, examples, *, batch_size: int = 32) -> dict:
    """{"metrics": compute_metrics(...), "polar": polar_metrics(...), "predictions": [{text, label, predicted, probs, correct}]}.

    The zero-shot baseline is this same function on a Classifier over the base model with no
    adapter: same prompt, same label scoring, so the two numbers are comparable.
    """
    examples = list(examples)
    predictions = classifier.predict([e.text for e in examples], batch_size=batch_size)
    metrics = compute_metrics(
        [e.label for e in examples], [p.label for p in predictions], classifier.labels
    )
    return {
        "metrics": metrics,
        "polar": polar_metrics([e.label for e in examples], [p.label for p in predictions], [p.probs for p in predictions]),
        "predictions": [
            {
                "text": e.text,
                "label": e.label,
                "predicted": p.label,
                "probs": p.probs,
                "correct": p.label == e.label,
                "truncated": p.truncated,
            }
            for e, p in zip(examples, predictions, strict=True)
        ],
    }
