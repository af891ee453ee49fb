"""Label scoring: the prefix cache, multi-token labels, merged adapters, save -> load."""

import json

import pytest
import torch

from mlcore.classify import Classifier, load_classifier
from mlcore.prompt import render_prompt

LABELS3 = ["positive", "negative", "neutral"]


def brute_force_probs(model, tokenizer, text, labels, label_seqs):
    """Score every label sequence with a plain full forward pass, no cache, no batching."""
    prompt = tokenizer(render_prompt(tokenizer, text, labels), add_special_tokens=False)["input_ids"]
    scores = []
    for seq in label_seqs:
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt + seq])).logits[0].float(), dim=-1)
        scores.append(sum(logp[len(prompt) - 1 + k, t].item() for k, t in enumerate(seq)))
    return torch.softmax(torch.tensor(scores), dim=-1).tolist()


def assert_same_predictions(a, b, tol):
    assert [p.label for p in a] == [p.label for p in b]
    for p, q in zip(a, b, strict=True):
        assert p.probs == pytest.approx(q.probs, abs=tol)


def test_every_label_is_a_single_token_for_smollm2(tokenizer):
    for label in ["positive", "negative", "neutral", "mixed"]:
        assert len(tokenizer(label, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.slow
def test_the_prefix_cache_gives_the_same_predictions_as_no_cache(smollm2, reviews):
    model, tokenizer = smollm2
    texts = [e.text for e in reviews.test[:10]] + ["", "Meh. " * 200]  # empty and truncated reviews too
    cached = Classifier(model, tokenizer, LABELS3).predict(texts, batch_size=8, max_text_tokens=64)
    plain = Classifier(model, tokenizer, LABELS3, use_prefix_cache=False).predict(texts, batch_size=8, max_text_tokens=64)
    assert_same_predictions(cached, plain, 1e-4)
    assert cached[-1].truncated and not cached[0].truncated


@pytest.mark.slow
def test_batched_left_padded_scores_match_a_plain_forward_pass(smollm2, reviews):
    model, tokenizer = smollm2
    classifier = Classifier(model, tokenizer, LABELS3)
    texts = [e.text for e in reviews.test[:4]]
    predictions = classifier.predict(texts, batch_size=4)
    seqs = [[tokenizer.convert_tokens_to_ids(label)] for label in LABELS3]
    for text, prediction in zip(texts, predictions, strict=True):
        expected = brute_force_probs(model, tokenizer, text, LABELS3, seqs)
        assert list(prediction.probs.values()) == pytest.approx(expected, abs=1e-4)


def test_a_label_of_several_tokens_is_scored_as_a_whole_sequence(tiny_run, small_dataset):
    result, _ = tiny_run
    classifier = load_classifier(adapter_dir=result.out_dir, labels=["positive", "negative", "lukewarm"], device="cpu")
    seqs = classifier._label_seqs
    assert len(seqs[2]) > 1  # "lukewarm" is several tokens
    texts = [e.text for e in small_dataset.test[:5]]
    for use_cache in (True, False):
        classifier.use_prefix_cache = use_cache
        for text, prediction in zip(texts, classifier.predict(texts, batch_size=5), strict=True):
            expected = brute_force_probs(classifier.model, classifier.tokenizer, text, classifier.labels, seqs)
            assert list(prediction.probs.values()) == pytest.approx(expected, abs=1e-4)


def test_merged_and_unmerged_adapters_predict_the_same(tiny_run, small_dataset):
    result, _ = tiny_run
    texts = [e.text for e in small_dataset.test]
    merged = load_classifier(adapter_dir=result.out_dir, merge=True, device="cpu").predict(texts)
    unmerged = load_classifier(adapter_dir=result.out_dir, merge=False, device="cpu").predict(texts)
    assert_same_predictions(merged, unmerged, 1e-4)


def test_a_saved_adapter_reloads_to_exactly_the_predictions_made_in_training(tiny_run):
    result, _ = tiny_run
    rows = [json.loads(line) for line in (result.out_dir / "test_predictions.jsonl").read_text().splitlines()]
    reloaded = load_classifier(adapter_dir=result.out_dir, merge=False, device="cpu").predict([r["text"] for r in rows])
    assert [p.label for p in reloaded] == [r["predicted"] for r in rows]
    assert [p.probs for p in reloaded] == [r["probs"] for r in rows]


def test_the_adapter_brings_its_labels_and_base_model(tiny_run):
    result, _ = tiny_run
    classifier = load_classifier(adapter_dir=result.out_dir, device="cpu")
    assert classifier.labels == LABELS3
    assert classifier.model.config.hidden_size == 64  # the tiny base named in train_config.json


def test_loading_a_directory_without_an_adapter_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_classifier(adapter_dir=tmp_path)
