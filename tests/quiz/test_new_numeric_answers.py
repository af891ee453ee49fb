"""Every numeric question added for issue 14 (item 3) has its answer computed here from its formula.

Each entry recomputes the exact value from the question's inputs and names the answers a careless
solver would give; the test checks that the file's `answer` equals the formula within the file's
`tolerance`, and that the tolerance is tight enough to reject each of those wrong answers.
"""

import math
import statistics

import pytest

from quiz.bank import BANK_DIR, parse_question_file

GB, GIB = 10**9, 2**30


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def kv_bytes_per_token(*, layers: int, kv_heads: int, head_dim: int, bytes_per_value: int) -> int:
    return 2 * layers * kv_heads * head_dim * bytes_per_value  # K and V, every layer


def zero_bytes_per_gpu(*, params: float, gpus: int, stage: int) -> float:
    """Model states for mixed-precision Adam: 2 (16-bit weights) + 2 (grads) + 12 (fp32 master, m, v)."""
    weights, grads, optim = 2 * params, 2 * params, 12 * params
    sharded = {0: 0, 1: optim, 2: grads + optim, 3: weights + grads + optim}[stage]
    return weights + grads + optim - sharded + sharded / gpus


LLAMA3_8B_KV = kv_bytes_per_token(layers=32, kv_heads=8, head_dim=128, bytes_per_value=2)

# slug -> (value from the formula, [common wrong answers the tolerance must reject])
FORMULAS = {
    # -log sigmoid(0): policy == reference, so the margin is 0
    "dpo-loss-at-initialization": (softplus(0), [0.0, 0.5]),
    # margin = beta * ((-40 + 45) - (-60 + 52)); wrong: no reference (margin 2), sign flipped, beta forgotten
    "dpo-loss-from-log-ratios": (softplus(-0.1 * ((-40 + 45) - (-60 + 52))),
                                 [softplus(-0.1 * (-40 + 60)), softplus(0.1 * 13), softplus(-13)]),
    # (r - mean) / sample std for rewards [1, 0, 0, 0]; wrong: population std
    "grpo-group-advantage": ((1 - statistics.mean([1, 0, 0, 0])) / statistics.stdev([1, 0, 0, 0]),
                             [(1 - 0.25) / statistics.pstdev([1, 0, 0, 0]), 0.75]),
    "zero2-memory-per-gpu-7-5b": (zero_bytes_per_gpu(params=7.5e9, gpus=64, stage=2) / GB,
                                  [zero_bytes_per_gpu(params=7.5e9, gpus=64, stage=s) / GB for s in (1, 3)]),
    "zero1-memory-13b-on-8-gpus": (zero_bytes_per_gpu(params=13e9, gpus=8, stage=1) / GB,
                                   [zero_bytes_per_gpu(params=13e9, gpus=8, stage=s) / GB for s in (0, 2, 3)]),
    # (forward + recomputed forward + backward) / (forward + backward), backward = 2 x forward; wrong: 2x
    "gradient-checkpointing-step-time": ((1 + 1 + 2) / (1 + 2), [2.0, 1.5]),
    # wrong: padded to a fixed 2,048, the real-token fraction instead of the padding fraction
    "padding-waste-fraction": (1 - sum([120, 340, 75, 512, 260, 90, 410, 185]) / (8 * 512),
                               [1 - sum([120, 340, 75, 512, 260, 90, 410, 185]) / (8 * 2048),
                                sum([120, 340, 75, 512, 260, 90, 410, 185]) / (8 * 512)]),
    # Wald half-width 1.96 * sqrt(p(1-p)/n), p = 160/200; wrong: 90% z, no square root
    "accuracy-confidence-interval-200-examples": (1.96 * math.sqrt(0.8 * 0.2 / 200),
                                                  [1.645 * math.sqrt(0.8 * 0.2 / 200), 1.96 * 0.8 * 0.2 / 200]),
    # McNemar (b - c)^2 / (b + c), b = 25, c = 12; wrong: continuity-corrected, divided by all 400 items
    "mcnemar-two-models-same-test-set": ((25 - 12) ** 2 / (25 + 12), [(abs(25 - 12) - 1) ** 2 / 37, 169 / 400]),
    # sample std (n - 1); wrong: population std, standard error of the mean
    "seed-variance-across-runs": (statistics.stdev([0.81, 0.84, 0.79, 0.83, 0.80]),
                                  [statistics.pstdev([0.81, 0.84, 0.79, 0.83, 0.80]),
                                   statistics.stdev([0.81, 0.84, 0.79, 0.83, 0.80]) / math.sqrt(5)]),
    # Llama-3-8B: 32 layers, 8 KV heads of 128, bf16; 16 sequences of 8,192 tokens; wrong: 32 KV heads (no GQA)
    "kv-cache-llama3-8b-batch": (LLAMA3_8B_KV * 16 * 8192 / GIB,
                                 [kv_bytes_per_token(layers=32, kv_heads=32, head_dim=128, bytes_per_value=2)
                                  * 16 * 8192 / GIB, LLAMA3_8B_KV * 16 * 8192 / GB]),
    # 40 GiB budget / (per-token bytes * 4,096); wrong: 32 KV heads, K and V not both counted
    "kv-cache-concurrent-sequences": (40 * GIB // (LLAMA3_8B_KV * 4096),
                                      [40 * GIB // (LLAMA3_8B_KV * 4 * 4096), 40 * GIB // (LLAMA3_8B_KV // 2 * 4096)]),
    # Leviathan et al.: (1 - alpha^(gamma+1)) / (1 - alpha); wrong: alpha * gamma, 1 + alpha * gamma,
    # accepted draft tokens only (the target's own token left out), the series stopped at alpha^(gamma-1)
    "speculative-decoding-expected-tokens": ((1 - 0.8 ** 5) / (1 - 0.8),
                                             [0.8 * 4, 1 + 0.8 * 4, (1 - 0.8 ** 5) / (1 - 0.8) - 1,
                                              (1 - 0.8 ** 4) / (1 - 0.8)]),
    # bandwidth / bytes of weights per token; wrong: 1 byte per parameter, GiB instead of GB
    "decode-speed-bandwidth-bound": (3.35e12 / (8e9 * 2), [3.35e12 / 8e9, 3.35e12 / (16 * GIB)]),
    # (4 + (16-bit scale + 16-bit zero point) / 128) bits x 70e9 / 8; wrong: no metadata, scale only
    "gptq-4bit-70b-memory": (70e9 * (4 + (16 + 16) / 128) / 8 / GB, [70e9 * 4 / 8 / GB, 70e9 * (4 + 16 / 128) / 8 / GB]),
    # Q8_0 block: 32 int8 + one fp16 scale; wrong: 8 (scale forgotten)
    "gguf-q8-0-bits-per-weight": ((32 * 8 + 16) / 32, [8.0]),
    # LoRA r * (d_in + d_out) plus DoRA's d_out magnitudes, on 2 matrices x 32 layers; wrong: LoRA alone
    "dora-trainable-parameters": (64 * (16 * (4096 + 4096) + 4096), [64 * 16 * (4096 + 4096), 64 * 16 * 4096]),
    # rsLoRA alpha / sqrt(r): (16 / sqrt(4)) / (16 / sqrt(256)); wrong: standard alpha / r ratio (64)
    "rslora-scaling-across-ranks": ((16 / math.sqrt(4)) / (16 / math.sqrt(256)), [(16 / 4) / (16 / 256), 1.0]),
    # two untied (32,000 + 5) x 4,096 matrices, in millions; wrong: rows not resized, one matrix only
    "modules-to-save-embedding-params": (2 * (32000 + 5) * 4096 / 1e6, [2 * 32000 * 4096 / 1e6, (32000 + 5) * 4096 / 1e6]),
    # 1 - (1 - s^r)^b with s = 0.5, r = 5, b = 20; wrong: union bound b * s^r, one band s^r
    "minhash-lsh-candidate-probability": (1 - (1 - 0.5 ** 5) ** 20, [20 * 0.5 ** 5, 0.5 ** 5]),
    # threshold (1/b)^(1/r) with b = 16, r = 8; wrong: roles of b and r swapped, 1/b
    "minhash-lsh-threshold": ((1 / 16) ** (1 / 8), [(1 / 8) ** (1 / 16), 1 / 16]),
    # Cohen's kappa: (p_o - p_e) / (1 - p_e), p_e from pass rates 0.6 (human) and 0.7 (judge); wrong: raw agreement,
    # chance agreement assumed to be 0.5
    "judge-human-agreement-kappa": ((0.85 - (0.6 * 0.7 + 0.4 * 0.3)) / (1 - (0.6 * 0.7 + 0.4 * 0.3)),
                                    [0.85, (0.85 - 0.5) / (1 - 0.5)]),
}


def bank_numeric(slug: str):
    data = parse_question_file(BANK_DIR / f"{slug}.md")
    assert data.kind == "numeric", f"{slug} is {data.kind}, not numeric"
    return data


@pytest.mark.parametrize("slug", sorted(FORMULAS))
def test_the_files_answer_is_the_formulas_value_within_its_tolerance(slug):
    data = bank_numeric(slug)
    value, _ = FORMULAS[slug]
    assert abs(data.numeric_answer - value) <= data.tolerance, (slug, data.numeric_answer, value)


@pytest.mark.parametrize("slug", sorted(FORMULAS))
def test_the_tolerance_rejects_the_common_wrong_answers(slug):
    data = bank_numeric(slug)
    _, wrong_answers = FORMULAS[slug]
    assert wrong_answers, f"{slug}: name at least one wrong answer the tolerance must reject"
    for wrong in wrong_answers:
        assert abs(wrong - data.numeric_answer) > data.tolerance, (slug, wrong)


# Every question file this change added (all kinds); the test above picks out the numeric ones.
ADDED = [
    "dpo-beta-what-it-controls", "dpo-loss-at-initialization", "dpo-loss-from-log-ratios", "orpo-how-it-differs",
    "kto-for-thumbs-up-down-data", "simpo-true-statements", "grpo-group-advantage", "grpo-groups-with-equal-rewards",
    "reward-hacking-longer-answers", "dpo-chosen-logprob-falls",
    "zero2-memory-per-gpu-7-5b", "zero1-memory-13b-on-8-gpus", "zero-stage-what-is-sharded", "zero3-communication-vs-ddp",
    "bf16-vs-fp16-loss-scaling", "gradient-checkpointing-step-time", "flashattention-true-statements",
    "packing-cross-example-attention", "padding-waste-fraction", "full-finetune-8b-on-8-gpus-plan",
    "accuracy-confidence-interval-200-examples", "mcnemar-two-models-same-test-set", "seed-variance-across-runs",
    "llm-judge-known-biases", "judge-position-bias-check", "two-models-small-test-set-difference",
    "benchmark-contamination-detection", "length-controlled-win-rate",
    "kv-cache-llama3-8b-batch", "kv-cache-concurrent-sequences", "pagedattention-what-it-solves", "continuous-batching",
    "multi-lora-serving-vllm", "speculative-decoding-expected-tokens", "speculative-decoding-output-quality",
    "decode-speed-bandwidth-bound", "serving-latency-ttft-vs-throughput",
    "gptq-vs-awq", "gptq-4bit-70b-memory", "gguf-q8-0-bits-per-weight", "fp8-e4m3-vs-e5m2", "imatrix-gguf-quantization",
    "nf4-versus-uniform-int4", "weight-only-vs-w8a8-speed", "quantization-calibration-data-choice",
    "dora-magnitude-and-direction", "dora-trainable-parameters", "rslora-scaling-across-ranks", "pissa-initialization",
    "pissa-sharing-the-adapter", "loraplus-learning-rate-ratio", "lora-variants-true-statements",
    "choosing-a-lora-variant",
    "added-tokens-resize-embeddings", "modules-to-save-embedding-params", "duplicate-bos-token",
    "assistant-mask-needs-generation-tags", "padding-side-batched-generation", "default-system-prompt-injection",
    "end-of-turn-token-not-supervised", "chat-template-pitfalls-true-statements",
    "minhash-lsh-candidate-probability", "minhash-lsh-threshold", "logit-vs-sequence-distillation",
    "distillation-temperature-squared", "model-collapse-recursive-synthetic-data",
    "near-duplicate-detection-true-statements", "synthetic-data-pipeline-design", "teacher-solutions-what-to-keep",
    "label-token-leading-space", "judge-human-agreement-kappa", "tensor-parallel-kv-heads", "dpo-reference-model-with-lora",
    "dpo-or-grpo-choice",
]


def test_every_numeric_question_added_for_issue_14_has_a_formula():
    added = [parse_question_file(BANK_DIR / f"{slug}.md") for slug in ADDED]
    numeric = sorted(q.slug for q in added if q.kind == "numeric")
    assert numeric == sorted(FORMULAS), set(numeric) ^ set(FORMULAS)


def test_at_least_half_of_the_added_questions_grade_themselves():
    kinds = [parse_question_file(BANK_DIR / f"{slug}.md").kind for slug in ADDED]
    assert len(set(ADDED)) == len(ADDED) >= 60
    assert sum(kind != "open" for kind in kinds) * 2 >= len(kinds)
