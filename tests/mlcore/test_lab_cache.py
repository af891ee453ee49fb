"""What every run of a lab computes the same way is computed once, then read back (mlcore.lab_cache):
the zero-shot baseline and the frozen blocks' hidden states."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mlcore import lab_cache
from mlcore.data import Dataset, Example
from mlcore.prompt import SYSTEM_PROMPTS
from mlcore.train import keep_for_later_runs, train

from .conftest import tiny_config


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setattr(lab_cache, "cache_dir", lambda: folder)
    return folder


def kept_baselines(folder) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (folder / "zero-shot").glob("*.json")}


def kept_hidden(folder) -> list:
    return sorted((folder / "hidden").glob("*.safetensors"))


def adapter(out_dir):
    return load_file(out_dir / "adapter_model.safetensors")


# --- the zero-shot baseline ----------------------------------------------------------------------


def test_the_first_run_scores_the_baseline_and_keeps_it(tmp_path, small_dataset, cache):
    result = train(tiny_config(max_steps=2, zero_shot=True), small_dataset, tmp_path / "run")
    assert list(kept_baselines(cache).values()) == [result.zero_shot]
    assert result.zero_shot["n"] == len(small_dataset.test)


def test_a_later_run_reads_the_kept_baseline_and_still_reports_its_progress(tmp_path, small_dataset, cache):
    first = train(tiny_config(max_steps=2, zero_shot=True), small_dataset, tmp_path / "first")
    (key, metrics), = kept_baselines(cache).items()
    # Mark the kept file: a second run that scored the base model again could not return the mark.
    (cache / "zero-shot" / f"{key}.json").write_text(json.dumps(metrics | {"macro_f1": -1.0}))
    events = []
    second = train(tiny_config(max_steps=3, seed=7, zero_shot=True), small_dataset, tmp_path / "second", report=events.append)
    assert second.zero_shot == first.zero_shot | {"macro_f1": -1.0}
    done = [e for e in events if e["type"] == "scoring" and e["phase"] == "zero_shot"]
    assert done == [{"type": "scoring", "phase": "zero_shot", "done": len(small_dataset.test), "total": len(small_dataset.test)}]


def test_what_the_baseline_depends_on_gives_it_another_key(tmp_path, small_dataset, cache):
    train(tiny_config(max_steps=1, zero_shot=True), small_dataset, tmp_path / "a")
    # Another prompt, then one changed gold label: each is scored, not read from the first key.
    other_prompt = next(v for v in SYSTEM_PROMPTS if v != tiny_config().prompt_version)
    train(tiny_config(max_steps=1, zero_shot=True, prompt_version=other_prompt), small_dataset, tmp_path / "b")
    first = small_dataset.test[0]
    relabelled = Example(first.text, "negative" if first.label != "negative" else "positive")
    other_test = Dataset("small", small_dataset.labels, small_dataset.train, small_dataset.validation,
                         [relabelled, *small_dataset.test[1:]])
    train(tiny_config(max_steps=1, zero_shot=True), other_test, tmp_path / "c")
    assert len(kept_baselines(cache)) == 3


def test_an_unreadable_kept_baseline_is_scored_again_and_replaced(tmp_path, small_dataset, cache):
    first = train(tiny_config(max_steps=1, zero_shot=True), small_dataset, tmp_path / "a")
    (key, _), = kept_baselines(cache).items()
    (cache / "zero-shot" / f"{key}.json").write_text("{half a file")
    again = train(tiny_config(max_steps=1, zero_shot=True), small_dataset, tmp_path / "b")
    assert again.zero_shot == first.zero_shot
    assert kept_baselines(cache) == {key: first.zero_shot}


def test_the_fingerprint_follows_the_fixed_weights_only():
    from mlcore.registry import load_base

    model, _ = load_base("tiny-test", device="cpu")
    before = lab_cache.weights_fingerprint(model)
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        weight[0, 0] += 0.5
        try:
            assert lab_cache.weights_fingerprint(model) != before
        finally:
            weight[0, 0] -= 0.5
    assert lab_cache.key("hidden", ["m", "cpu"], [[1, 2]]) != lab_cache.key("hidden", ["m", "cuda:0"], [[1, 2]])
    assert lab_cache.key("hidden", ["m", "cpu"], [[1, 2]]) != lab_cache.key("zero-shot", ["m", "cpu"], [[1, 2]])


# --- the frozen blocks' hidden states -------------------------------------------------------------


def test_a_later_run_reuses_the_hidden_states_and_trains_exactly_as_the_first(tmp_path, small_dataset, cache):
    # LoRA in the top block of the tiny model's two: block 0 is frozen, its output is kept.
    config = tiny_config(max_steps=8, lora_top_blocks=1, eval_every=4)
    first = train(config, small_dataset, tmp_path / "first")
    files = kept_hidden(cache)
    assert len(files) == 3  # train, validation, test
    sizes = sorted(len(load_file(f)["lengths"]) for f in files)
    assert sizes == sorted([len(small_dataset.test), len(small_dataset.validation), len(small_dataset.train)])
    second = train(config, small_dataset, tmp_path / "second")
    assert second.metrics == first.metrics and second.validation == first.validation
    assert all(torch.equal(a, adapter(tmp_path / "second")[n]) for n, a in adapter(tmp_path / "first").items())


def test_keeping_ahead_of_the_first_run_keeps_what_that_run_would_have_computed(tmp_path, small_dataset, cache):
    """`make run`'s setup keeps the default lab's states before any run (keep_for_later_runs):
    the same files, to the bit, as a first run keeps; a run after it reads them all."""
    config = tiny_config(max_steps=8, lora_top_blocks=1, eval_every=4, zero_shot=True)
    cold = train(config, small_dataset, tmp_path / "cold")
    kept_by_the_run = {f.name: load_file(f) for f in kept_hidden(cache)}
    baseline_kept_by_the_run = kept_baselines(cache)
    shutil.rmtree(cache)

    computed = keep_for_later_runs(config, small_dataset)
    assert computed == {"train": "computed", "validation": "computed", "test": "computed", "zero-shot": "computed"}
    assert kept_baselines(cache) == baseline_kept_by_the_run
    ahead = {f.name: load_file(f) for f in kept_hidden(cache)}
    assert set(ahead) == set(kept_by_the_run) and len(ahead) == 3
    for name, tensors in ahead.items():
        assert all(torch.equal(t, kept_by_the_run[name][k]) for k, t in tensors.items()), name

    assert set(keep_for_later_runs(config, small_dataset).values()) == {"kept before"}
    after = train(config, small_dataset, tmp_path / "after")
    assert after.metrics == cold.metrics and after.zero_shot == cold.zero_shot
    assert all(torch.equal(a, adapter(tmp_path / "after")[n]) for n, a in adapter(tmp_path / "cold").items())


def test_kept_hidden_states_are_what_the_run_reads(tmp_path, small_dataset, cache):
    config = tiny_config(max_steps=2, lora_top_blocks=1)
    first = train(config, small_dataset, tmp_path / "first")
    for path in kept_hidden(cache):  # scramble what was kept: a run that reads it must score differently
        kept = load_file(path)
        torch.manual_seed(0)
        save_file({"hidden": torch.randn_like(kept["hidden"]) * 5, "lengths": kept["lengths"]}, str(path))
    second = train(config, small_dataset, tmp_path / "second")
    assert second.validation[-1]["loss"] != pytest.approx(first.validation[-1]["loss"], rel=1e-3)


def test_damaged_or_misfitting_hidden_states_are_computed_again(tmp_path, small_dataset, cache):
    config = tiny_config(max_steps=2, lora_top_blocks=1)
    first = train(config, small_dataset, tmp_path / "first")
    # Two steps of 4 see 8 of the 32 training reviews: only the validation and test states are kept.
    damaged, misfit = kept_hidden(cache)
    damaged.write_bytes(b"not a safetensors file")
    kept = load_file(misfit)
    save_file({"hidden": kept["hidden"][:-1], "lengths": kept["lengths"]}, str(misfit))
    second = train(config, small_dataset, tmp_path / "second")
    assert second.validation == first.validation and second.metrics == first.metrics
    assert all(load_file(f)["hidden"].shape[0] == int(load_file(f)["lengths"].sum()) for f in kept_hidden(cache))


def test_every_block_trained_keeps_no_hidden_states(tmp_path, small_dataset, cache):
    train(tiny_config(max_steps=1, lora_top_blocks=0), small_dataset, tmp_path / "run")
    assert kept_hidden(cache) == []


def test_kept_hidden_states_are_pruned_least_recently_used_first(cache):
    rows = [torch.ones(3, 4)]
    for name in ("old", "mid", "new"):
        lab_cache.store_hidden(name, rows)
    size = (cache / "hidden" / "new.safetensors").stat().st_size
    for age, name in enumerate(("new", "mid", "old")):  # old is the oldest
        os.utime(cache / "hidden" / f"{name}.safetensors", (1000 - age, 1000 - age))
    assert lab_cache.load_hidden("old", [3]) is not None  # reading it makes it the most recent
    lab_cache.prune_hidden(limit=2 * size)
    assert [p.stem for p in kept_hidden(cache)] == ["new", "old"]


def test_a_bench_can_keep_in_a_folder_of_its_own_for_a_while(tmp_path):
    usual = lab_cache.cache_dir()
    with lab_cache.kept_in(tmp_path / "first-run"):
        lab_cache.store_metrics("k", {"macro_f1": 0.5})
        assert lab_cache.load_metrics("k") == {"macro_f1": 0.5}
    assert lab_cache.cache_dir() == usual
    assert (tmp_path / "first-run" / "zero-shot" / "k.json").exists()
