"""The training loop, on the tiny model: it learns, is reproducible, reports, stops and resumes."""

import json

import pytest
import torch

from mlcore.config import ConfigError, TrainConfig, select_examples
from mlcore.data import Dataset
from mlcore.masking import MaskingError, encode
from mlcore.train import build_model, collate, lr_factor, shared_prefix, supervised_loss, train

from .conftest import tiny_config


def adapter_weights(out_dir):
    from safetensors.torch import load_file

    return load_file(out_dir / "adapter_model.safetensors")


def test_the_tiny_model_loss_falls_over_a_few_steps(tmp_path, small_dataset):
    events = []
    # The same 16 examples in every step, at a constant learning rate: the loss must come down.
    config = tiny_config(
        train_limit=16, batch_size=16, epochs=6, learning_rate=5e-3, warmup_ratio=0.0, schedule="constant", eval_every=100
    )
    train(config, small_dataset, tmp_path, report=events.append)
    losses = [e["loss"] for e in events if e["type"] == "step"]
    assert len(losses) == 6
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < losses[0] - 1.0


def test_training_writes_the_adapter_with_its_config_labels_and_metrics(tiny_run):
    result, _ = tiny_run
    names = {p.name for p in result.out_dir.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "train_config.json", "labels.json", "metrics.json"} <= names
    assert "checkpoint" not in names  # finished runs leave nothing to resume
    assert TrainConfig.from_dict(json.loads((result.out_dir / "train_config.json").read_text())) == tiny_config(max_steps=4)
    assert json.loads((result.out_dir / "labels.json").read_text()) == ["positive", "negative", "neutral"]
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    assert metrics["test"]["n"] == 24 and metrics["test"]["labels"] == ["positive", "negative", "neutral"]


def test_every_step_reports_progress_and_the_run_ends_with_done(tiny_run):
    result, events = tiny_run
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    keys = {"step", "total_steps", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "elapsed_s", "eta_s"}
    assert all(keys <= set(e) for e in steps)
    assert all(e["total_steps"] == 4 for e in steps)
    # After the last validation pass the test split is scored (its own progress events), then done.
    assert [e["type"] for e in events if e["type"] != "scoring"][-2:] == ["eval", "done"]
    assert events[-1]["type"] == "done" and events[-2]["type"] == "scoring"
    assert events[-1]["metrics"] == result.metrics and not events[-1]["cancelled"]


def test_the_same_seed_gives_the_same_metrics_and_weights(tmp_path, small_dataset, tiny_run):
    result, _ = tiny_run
    again = train(tiny_config(max_steps=4), small_dataset, tmp_path)
    assert again.metrics == result.metrics
    first, second = adapter_weights(result.out_dir), adapter_weights(tmp_path)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_another_seed_gives_other_weights(tmp_path, small_dataset, tiny_run):
    result, _ = tiny_run
    train(tiny_config(max_steps=4, seed=1), small_dataset, tmp_path)
    first, second = adapter_weights(result.out_dir), adapter_weights(tmp_path)
    assert not all(torch.equal(first[k], second[k]) for k in first)


def test_a_stopped_run_resumes_to_the_same_weights_as_an_uninterrupted_one(tmp_path, small_dataset, tiny_run):
    result, _ = tiny_run
    seen = []

    def stop_after_two(event):
        seen.append(event)
        return "stop" if event["type"] == "step" and event["step"] == 2 else None

    stopped = train(tiny_config(max_steps=4), small_dataset, tmp_path, report=stop_after_two)
    assert stopped.cancelled and stopped.steps == 2 and stopped.metrics is None
    assert seen[-1] == {"type": "done", "cancelled": True, "metrics": None, "zero_shot": None, "steps": 2}
    assert (tmp_path / "checkpoint" / "trainer_state.pt").exists()
    assert not (tmp_path / "adapter_model.safetensors").exists()

    resumed = train(tiny_config(max_steps=4), small_dataset, tmp_path, resume=True)
    assert resumed.steps == 4 and not resumed.cancelled
    first, second = adapter_weights(result.out_dir), adapter_weights(tmp_path)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert resumed.metrics == result.metrics


def test_resuming_with_different_hyperparameters_is_refused(tmp_path, small_dataset):
    train(tiny_config(max_steps=4), small_dataset, tmp_path, report=lambda e: e["type"] == "step")
    with pytest.raises(ConfigError, match="learning_rate"):
        train(tiny_config(max_steps=4, learning_rate=1e-3), small_dataset, tmp_path, resume=True)


def test_gradient_accumulation_gives_the_gradient_of_one_big_batch(tmp_path, small_dataset):
    # One step over the same 8 examples: as one batch of 8, or as 2 accumulated batches of 4.
    runs = {}
    for name, settings in {"big": dict(batch_size=8), "accumulated": dict(batch_size=4, grad_accum=2)}.items():
        events = []
        config = tiny_config(train_limit=8, max_steps=1, lora_dropout=0.0, **settings)
        train(config, small_dataset, tmp_path / name, report=events.append)
        runs[name] = events[0]
    assert runs["accumulated"]["loss"] == pytest.approx(runs["big"]["loss"], rel=1e-5)
    assert runs["accumulated"]["grad_norm"] == pytest.approx(runs["big"]["grad_norm"], rel=1e-4)


def test_a_batch_wider_than_the_backward_budget_runs_in_pieces_with_the_same_step(tmp_path, small_dataset, monkeypatch):
    import mlcore.train as loop

    pieces_seen = []
    real_pieces = loop.backward_pieces
    runs = {}
    for name, budget in {"whole": 10**9, "pieces": 40}.items():
        monkeypatch.setattr(loop, "backward_pieces", lambda split, batch, budget=budget: pieces_seen.append(
            real_pieces(split, batch, budget)) or pieces_seen[-1])
        events = []
        train(tiny_config(train_limit=8, max_steps=1, batch_size=8, lora_dropout=0.0), small_dataset, tmp_path / name,
              report=events.append)
        runs[name] = (events[0], loop.load_file(tmp_path / name / "adapter_model.safetensors"))
    assert len(pieces_seen[0]) == 1 and len(pieces_seen[1]) > 2  # the budget did cut the batch
    assert sorted(i for piece in pieces_seen[1] for i in piece) == sorted(pieces_seen[0][0])
    assert runs["pieces"][0]["loss"] == pytest.approx(runs["whole"][0]["loss"], rel=1e-5)
    assert runs["pieces"][0]["grad_norm"] == pytest.approx(runs["whole"][0]["grad_norm"], rel=1e-4)
    for key, weights in runs["whole"][1].items():
        torch.testing.assert_close(runs["pieces"][1][key], weights, rtol=1e-3, atol=1e-5)  # Adam: float noise on tiny grads


def test_backward_pieces_keep_the_order_and_stay_within_the_budget():
    from types import SimpleNamespace

    from mlcore.train import backward_pieces

    split = SimpleNamespace(prefix_len=2, encoded=[SimpleNamespace(input_ids=[0] * (2 + n)) for n in (30, 28, 10, 9, 50)])
    pieces = backward_pieces(split, [0, 1, 2, 3, 4], max_tokens=60)
    assert pieces == [[0, 1], [2, 3], [4]]  # rows x the widest row <= 60; a row over the budget alone
    assert backward_pieces(split, [2, 3], max_tokens=10**6) == [[2, 3]]


def test_continuing_from_an_adapter_starts_from_its_weights(tmp_path, small_dataset, reviews_mixed, tiny_run):
    result, _ = tiny_run
    mixed = Dataset(
        "small-mixed", reviews_mixed.labels, reviews_mixed.train[:24], reviews_mixed.validation[:8], reviews_mixed.test[:8]
    )
    continued = train(
        tiny_config(max_steps=1, learning_rate=1e-9, continue_from=str(result.out_dir)), mixed, tmp_path
    )
    assert json.loads((tmp_path / "labels.json").read_text()) == ["positive", "negative", "neutral", "mixed"]
    start, after = adapter_weights(result.out_dir), adapter_weights(tmp_path)
    assert all(torch.allclose(start[k], after[k], atol=1e-6) for k in start)  # a 1e-9 step barely moves them
    assert continued.metrics["labels"] == mixed.labels


def test_loss_at_supervised_positions_equals_the_models_own_masked_loss(tokenizer, small_dataset):
    from mlcore.registry import load_base

    model, _ = load_base("tiny-test", device="cpu")
    encoded = [encode(tokenizer, e, small_dataset.labels, max_length=256) for e in small_dataset.train[:6]]
    input_ids, attention_mask, labels = collate(encoded, tokenizer.pad_token_id)
    with torch.no_grad():
        loss_sum, n = supervised_loss(model.model, model.lm_head, input_ids, attention_mask, labels)
        reference = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    assert n == 12  # label + <|im_end|> for each of 6 examples
    assert (loss_sum / n).item() == pytest.approx(reference.item(), rel=1e-5)


def test_running_the_shared_system_prompt_once_per_batch_gives_the_same_loss_and_gradients(tokenizer, small_dataset):
    model, _ = build_model(tiny_config())
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at 0, which would leave A without a gradient
            torch.nn.init.normal_(param, std=0.05)
    model.eval()  # dropout off: the two paths then compute the same function
    causal_lm = model.get_base_model()
    body, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
    encoded = [encode(tokenizer, e, small_dataset.labels, max_length=256) for e in small_dataset.train[:6]]
    prefix = shared_prefix(tokenizer, small_dataset.labels, encoded, mask_prompt=True)
    assert len(prefix) > 20 and not shared_prefix(tokenizer, small_dataset.labels, encoded, mask_prompt=False)
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(**kwargs):
        model.zero_grad()
        loss, n = supervised_loss(body, head, *collate(encoded, tokenizer.pad_token_id, **kwargs.pop("collate", {})), **kwargs)
        (loss / n).backward()
        return (loss / n).item(), [p.grad.clone() for p in params]

    plain_loss, plain_grads = loss_and_grads()
    shared_loss, shared_grads = loss_and_grads(prefix=torch.tensor([prefix]), collate={"start": len(prefix)})
    assert shared_loss == pytest.approx(plain_loss, rel=1e-6)
    for a, b in zip(plain_grads, shared_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_a_dataset_that_would_be_fully_masked_is_refused(tmp_path, small_dataset):
    with pytest.raises(MaskingError, match="train example 1: .*no supervised token"):
        train(tiny_config(max_length=32), small_dataset, tmp_path)


def test_a_dataset_label_outside_the_configured_labels_is_refused(tmp_path, small_dataset):
    with pytest.raises(ConfigError, match="labels"):
        train(tiny_config(labels=("positive", "negative")), small_dataset, tmp_path)


def test_config_validation_names_every_bad_field():
    config = TrainConfig(
        base_model="gpt-9", lora_r=0, lora_dropout=1.0, learning_rate=-1, epochs=0, batch_size=True,
        schedule="step", labels=("positive", "angry"), target_modules=("attn",), max_length=8,
    )
    with pytest.raises(ConfigError) as info:
        config.validate()
    errors = info.value.errors
    assert set(errors) == {
        "base_model", "lora_r", "lora_dropout", "learning_rate", "epochs", "batch_size", "schedule", "labels",
        "target_modules", "max_length",
    }
    assert errors["lora_r"] == "must be a whole number from 1 to 256"
    assert errors["lora_dropout"] == "must be a number in [0, 1)"
    assert "'angry'" in errors["labels"]


def test_the_default_config_is_valid_and_round_trips_through_a_dict():
    config = TrainConfig()
    config.validate()
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="not a training setting"):
        TrainConfig.from_dict({"learning_rat": 1e-3})


def test_the_schedule_warms_up_then_decays_to_zero():
    linear = [round(lr_factor(s, 10, 2, "linear"), 3) for s in range(10)]
    assert linear == [0.333, 0.667, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
    assert lr_factor(2, 10, 2, "cosine") == 1.0 and lr_factor(9, 10, 2, "cosine") < 0.05
    assert lr_factor(7, 10, 2, "constant") == 1.0


def test_a_train_limit_keeps_the_label_proportions(reviews):
    subset = select_examples(reviews.train, 30, seed=0)
    assert len(subset) == 30
    for label in reviews.labels:
        share = sum(e.label == label for e in reviews.train) / len(reviews.train)
        assert abs(sum(e.label == label for e in subset) - 30 * share) <= 1, label


def lora_model_with_nonzero_b(**overrides):
    model, tokenizer = build_model(tiny_config(**overrides))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at 0, which would leave A without a gradient
            torch.nn.init.normal_(param, std=0.05)
    model.eval()  # dropout off: the paths compared then compute the same function
    return model, tokenizer


def test_lora_in_the_top_block_trains_from_hidden_states_computed_once_with_the_same_loss_and_gradients(
    tokenizer, small_dataset
):
    from mlcore.train import Split, split_loss
    from mlcore.upper import SplitDecoder, first_trainable_block

    model, _ = lora_model_with_nonzero_b(lora_top_blocks=1)
    causal_lm = model.get_base_model()
    body, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
    assert first_trainable_block(causal_lm) == 1  # the tiny model has 2 blocks; block 0 is frozen
    examples = small_dataset.train[:6]
    encoded = [encode(tokenizer, e, small_dataset.labels, max_length=256) for e in examples]
    prefix = shared_prefix(tokenizer, small_dataset.labels, encoded, mask_prompt=True)
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(compute):
        model.zero_grad()
        loss, n = compute()
        (loss / n).backward()
        return (loss / n).item(), [p.grad.clone() for p in params]

    # Reference: transformers' own forward over whole sequences, every block run every time.
    reference = loss_and_grads(lambda: supervised_loss(body, head, *collate(encoded, tokenizer.pad_token_id)))
    split = Split(examples, encoded, len(prefix))
    decoder = SplitDecoder(causal_lm, 1, prefix)
    first = loss_and_grads(lambda: split_loss(decoder, head, split, list(range(6)))[:2])
    assert all(h is not None for h in split.hidden)  # block 0's output is now stored per example
    again = loss_and_grads(lambda: split_loss(decoder, head, split, [5, 4, 3, 2, 1, 0])[:2])  # from the store
    for loss, grads in (first, again):
        assert loss == pytest.approx(reference[0], rel=1e-5)
        for a, b in zip(reference[1], grads, strict=True):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_lora_in_the_top_block_only_leaves_the_blocks_below_without_lora(tmp_path, small_dataset):
    train(tiny_config(max_steps=1, lora_top_blocks=1), small_dataset, tmp_path)
    names = list(adapter_weights(tmp_path))
    assert names and all(".layers.1." in name for name in names)


def test_scores_read_from_the_training_pass_are_the_classifiers_scores(small_dataset):
    from mlcore.classify import Classifier
    from mlcore.evaluate import evaluate
    from mlcore.train import prepare, score_split

    run = prepare(tiny_config(lora_top_blocks=1), small_dataset)
    for name, param in run.model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    run.model.eval()
    ours = score_split(run, run.test)
    served = evaluate(Classifier(run.model, run.tokenizer, run.labels), small_dataset.test)
    assert ours["metrics"] == served["metrics"]
    for a, b in zip(ours["predictions"], served["predictions"], strict=True):
        assert a["predicted"] == b["predicted"] and a["text"] == b["text"]
        assert all(a["probs"][label] == pytest.approx(b["probs"][label], abs=1e-5) for label in run.labels)


def test_the_run_keeps_the_weights_of_its_best_validation_pass(tmp_path, small_dataset):
    from mlcore.train import prepare, validate

    config = tiny_config(max_steps=6, eval_every=1, learning_rate=3e-2, schedule="constant", warmup_ratio=0.0)
    result = train(config, small_dataset, tmp_path)
    passes = result.validation
    best = max(passes, key=lambda p: (p["macro_f1"], -p["loss"], -p["step"]))
    assert result.best_validation == {k: best[k] for k in ("step", "loss", "accuracy", "macro_f1")}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["best_validation"]["step"] == best["step"]
    # The saved adapter is the best pass's: scored again, it gives that pass's validation loss.
    reloaded = prepare(tiny_config(continue_from=str(tmp_path)), small_dataset)
    assert validate(reloaded, 0)["loss"] == pytest.approx(best["loss"], rel=1e-5)


def test_without_keep_best_the_run_keeps_its_last_weights(tmp_path, small_dataset):
    from mlcore.train import prepare, validate

    config = tiny_config(max_steps=3, eval_every=1, learning_rate=3e-2, keep_best=False)
    result = train(config, small_dataset, tmp_path)
    assert result.best_validation is None
    reloaded = prepare(tiny_config(continue_from=str(tmp_path)), small_dataset)
    assert validate(reloaded, 0)["loss"] == pytest.approx(result.validation[-1]["loss"], rel=1e-5)


def test_the_eta_counts_the_validation_passes_and_the_final_scoring_still_due():
    from types import SimpleNamespace

    from mlcore.train import ScoringPace, eta_seconds, validation_steps_left

    run = SimpleNamespace(config=SimpleNamespace(eval_every=0, zero_shot=True), validation=[0] * 20, test=[0] * 30,
                          total_steps=10, steps_per_epoch=5, zero_shot_cached=None)
    assert validation_steps_left(run, 1) == 2  # the ends of both epochs
    assert validation_steps_left(run, 5) == 2  # step 5's own pass runs after its step event
    assert validation_steps_left(run, 6) == 1
    pace = ScoringPace()
    pace.add(4.0, 20)  # one pass measured: 0.2 s per example
    # 9 steps of 2 s, then 2 passes of 20 examples and the test split twice (fine-tuned and zero-shot).
    assert eta_seconds(run, 1, 2.0, pace, 8.0) == pytest.approx(9 * 2.0 + 0.2 * (2 * 20 + 2 * 30))
    # Before any pass is measured, a scored example costs a third of a trained one.
    assert eta_seconds(run, 1, 2.0, ScoringPace(), 8.0) == pytest.approx(18 + (100 / 24))
    run.zero_shot_cached = {"macro_f1": 0.4}  # a baseline kept from an earlier run: the test split is scored once
    assert eta_seconds(run, 1, 2.0, pace, 8.0) == pytest.approx(9 * 2.0 + 0.2 * (2 * 20 + 30))
    run.config.eval_every = 3
    assert validation_steps_left(run, 1) == 4  # steps 3, 6, 9 and the last
