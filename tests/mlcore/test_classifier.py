"""Label scoring: the prefix cache, multi-token labels, merged adapters, save -> load."""

import json

import pytest
import torch
import torch.nn.functional as F

from mlcore.classify import MAX_PADDING, Classifier, fusing_pays_on, length_groups, load_classifier, max_padding_for
from mlcore.prompt import pick_shots, render_prompt

LABELS3 = ["positive", "negative", "neutral"]


def brute_force_probs(model, tokenizer, text, labels, label_seqs, shots=()):
    """Score every label sequence with a plain full forward pass, no cache, no batching."""
    prompt = tokenizer(render_prompt(tokenizer, text, labels, shots), add_special_tokens=False)["input_ids"]
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


def test_a_k_shot_classifier_scores_exactly_the_k_shot_prompt(tiny_run, small_dataset):
    # Labs' few-shot runs and the local few-shot baseline both classify this way.
    result, _ = tiny_run
    base = load_classifier(adapter_dir=result.out_dir, device="cpu")
    shots = pick_shots(small_dataset.train, LABELS3, 4, seed=1)
    classifier = Classifier(base.model, base.tokenizer, LABELS3, shots=shots)
    texts = [e.text for e in small_dataset.test[:3]]
    for text, prediction in zip(texts, classifier.predict(texts, batch_size=3), strict=True):
        expected = brute_force_probs(base.model, base.tokenizer, text, LABELS3, classifier._label_seqs, shots)
        assert list(prediction.probs.values()) == pytest.approx(expected, abs=1e-4)
    assert [p.probs for p in classifier.predict(texts)] != [p.probs for p in base.predict(texts)]


def test_merged_and_unmerged_adapters_predict_the_same(tiny_run, small_dataset):
    result, _ = tiny_run
    texts = [e.text for e in small_dataset.test]
    merged = load_classifier(adapter_dir=result.out_dir, merge=True, device="cpu").predict(texts)
    unmerged = load_classifier(adapter_dir=result.out_dir, merge=False, device="cpu").predict(texts)
    assert_same_predictions(merged, unmerged, 1e-4)


def test_a_saved_adapter_reloads_to_the_predictions_made_in_training(tiny_run):
    result, _ = tiny_run
    rows = [json.loads(line) for line in (result.out_dir / "test_predictions.jsonl").read_text().splitlines()]
    reloaded = load_classifier(adapter_dir=result.out_dir, merge=False, device="cpu").predict([r["text"] for r in rows])
    assert [p.label for p in reloaded] == [r["predicted"] for r in rows]
    # Training scores the test split from its own pass (the frozen blocks' cached output), serving
    # through the classifier: same weights, other summation order, so equal to float32 rounding.
    for served, trained in zip(reloaded, rows, strict=True):
        assert served.probs == pytest.approx(trained["probs"], abs=1e-5)


def test_the_adapter_brings_its_labels_and_base_model(tiny_run):
    result, _ = tiny_run
    classifier = load_classifier(adapter_dir=result.out_dir, device="cpu")
    assert classifier.labels == LABELS3
    assert classifier.model.config.hidden_size == 64  # the tiny base named in train_config.json


def test_length_groups_keep_each_pass_under_a_quarter_padding():
    lengths = [20, 22, 21, 95, 25, 23, 90, 24] * 8
    groups = length_groups(lengths, 32)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    for group in groups:
        widths = [lengths[i] for i in group]
        assert len(group) <= 32 and len(group) * max(widths) * 0.75 <= sum(widths)
    assert len(groups) == 3  # 32 + 16 short ones, then the 16 long ones


def test_on_a_gpu_batches_are_padded_rather_than_split_and_not_fused():
    # A GPU pays per kernel launch, not per token (bench/README.md, H200 numbers): one pass per
    # batch_size texts, still sorted by length; the CPU keeps its padding cap and fused forward.
    lengths = [20, 22, 21, 95, 25, 23, 90, 24] * 8
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    groups = length_groups(lengths, 32, max_padding_for(gpu))
    assert [len(group) for group in groups] == [32, 32]
    order = [i for group in groups for i in group]
    assert [lengths[i] for i in order] == sorted(lengths)
    assert max_padding_for(cpu) == MAX_PADDING and len(length_groups(lengths, 32, max_padding_for(cpu))) == 3
    assert fusing_pays_on(cpu) and not fusing_pays_on(gpu)


def test_batching_by_length_does_not_change_predictions(tiny_run, small_dataset):
    result, _ = tiny_run
    classifier = load_classifier(adapter_dir=result.out_dir, device="cpu")
    texts = [e.text for e in small_dataset.test] + ["Fine.", "Broke on day two. " * 20]  # very short and long
    one_by_one = [classifier.predict([text], batch_size=1)[0] for text in texts]
    assert_same_predictions(classifier.predict(texts, batch_size=32), one_by_one, 1e-5)
    assert_same_predictions(classifier.predict(texts, batch_size=4), one_by_one, 1e-5)


def test_loading_a_directory_without_an_adapter_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_classifier(adapter_dir=tmp_path)


# --- the fused inference forward (mlcore.fused) ------------------------------------------------


def _generic_twin(fused_classifier):
    """A Classifier on the same (already fused) weights that computes with transformers' forward."""
    twin = Classifier(fused_classifier.model, fused_classifier.tokenizer, fused_classifier.labels)
    assert twin._fused is None
    return twin


@pytest.mark.slow
def test_the_fused_forward_matches_the_transformers_forward_on_smollm2(reviews):
    fused = load_classifier("smollm2-135m-instruct", device="cpu")  # its own copy: fusing re-points weights
    assert fused._fused is not None
    texts = [e.text for e in reviews.test[:12]] + ["", "ok", "Meh. " * 200]  # empty, 1 token, truncated
    generic = _generic_twin(fused)
    for batch_size in (1, 5, 16):  # alone, and left-padded batches of mixed lengths
        assert_same_predictions(
            fused.predict(texts, batch_size=batch_size, max_text_tokens=64),
            generic.predict(texts, batch_size=batch_size, max_text_tokens=64),
            1e-4,
        )
    # Against a plain full forward pass too, so the two paths cannot share a mistake.
    seqs = [[fused.tokenizer.convert_tokens_to_ids(label)] for label in LABELS3]
    for text, prediction in zip(texts[:3], fused.predict(texts[:3], batch_size=3), strict=True):
        expected = brute_force_probs(fused.model, fused.tokenizer, text, LABELS3, seqs)
        assert list(prediction.probs.values()) == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_fusing_keeps_one_copy_of_the_weights():
    classifier = load_classifier("smollm2-135m-instruct", device="cpu")
    layer = classifier.model.get_decoder().layers[3]
    fused_layer = classifier._fused.layers[3]
    qkv_storage = fused_layer.qkv.untyped_storage().data_ptr()
    for module in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
        assert module.weight.untyped_storage().data_ptr() == qkv_storage
    assert layer.mlp.up_proj.weight.untyped_storage().data_ptr() == fused_layer.gate_up.untyped_storage().data_ptr()


def test_the_fused_matmuls_use_onednn_on_a_cpu_and_f_linear_elsewhere():
    from mlcore.fused import _onednn_linear, pick_linear

    weight = torch.randn(96, 64)
    if torch.backends.mkldnn.is_available():  # every x86 build of torch
        assert pick_linear(weight) is _onednn_linear
        x = torch.randn(3, 5, 64)
        torch.testing.assert_close(_onednn_linear(x, weight, torch.ones(96)), F.linear(x, weight, torch.ones(96)))
    assert pick_linear(weight.to(torch.bfloat16)) is F.linear


def test_a_merged_adapter_is_fused_and_an_unmerged_one_is_not(tiny_run):
    result, _ = tiny_run
    assert load_classifier(adapter_dir=result.out_dir, merge=True, device="cpu")._fused is not None
    assert load_classifier(adapter_dir=result.out_dir, merge=False, device="cpu")._fused is None


def test_the_fused_forward_handles_attention_biases_like_qwen2(small_dataset):
    # Qwen2 has biases on q/k/v; no Qwen weights here, so a tiny random Qwen2 with the SmolLM2
    # tokenizer (same vocabulary size) checks that the fused path adds them exactly as transformers does.
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from mlcore.registry import model_path

    tokenizer = AutoTokenizer.from_pretrained(model_path("tiny-test"))
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # random biases, not the zeros they start as
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    texts = [e.text for e in small_dataset.test[:8]]
    generic = Classifier(model, tokenizer, LABELS3).predict(texts, batch_size=4)
    fused = Classifier(model, tokenizer, LABELS3, fuse=True)
    assert fused._fused is not None and fused._fused.layers[0].qkv_bias is not None
    assert_same_predictions(fused.predict(texts, batch_size=4), generic, 1e-5)
    assert max(max(p.probs.values()) for p in generic) > 0.4  # the probabilities are not all uniform
