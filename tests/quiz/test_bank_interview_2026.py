"""The questions issue 22 added for the areas interviewers ask about in 2026.

Every numeric answer is recomputed here from its formula, with the answers a careless solver gives,
which the file's tolerance must reject (as tests/quiz/test_new_numeric_answers.py does for issue 14).
The rest holds the set together: at least 60 questions, at least 40 graded automatically, each
area a vocabulary topic with a minimum of 4, every area listed in quiz/coverage/interview_2026.yaml,
every auto-graded question in a curated quiz, every open one with follow-ups for the mock interview.
"""

import math
from collections import Counter
from pathlib import Path

import pytest
import yaml

from quiz.bank import BANK_DIR, CURATED_FILE, parse_question_file, read_curated
from quiz.vocab import INTERVIEW_2026_TOPICS, TOPIC_MINIMUMS, TOPICS

COVERAGE_FILE = Path(BANK_DIR).parent / "coverage" / "interview_2026.yaml"


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def lora_params(r: int, d_in: int, d_out: int) -> int:
    return r * (d_in + d_out)


def ties_one_weight(base: float, finetuned: list[float]) -> float:
    """TIES without trimming, lambda = 1: elect the sign of the summed task vectors, average the agreeing ones."""
    deltas = [w - base for w in finetuned]
    sign = 1 if sum(deltas) >= 0 else -1
    agreeing = [d for d in deltas if d * sign > 0]
    return base + sum(agreeing) / len(agreeing)


def pass_at_k(n: int, c: int, k: int) -> float:
    return 1 - math.comb(n - c, k) / math.comb(n, k)


def infonce(similarities: list[float], tau: float) -> float:
    """Cross-entropy with the first entry as the positive."""
    logits = [s / tau for s in similarities]
    return -logits[0] + math.log(sum(math.exp(x) for x in logits))


GIB = 2**30

# slug -> (value from the formula, [common wrong answers the tolerance must reject])
FORMULAS = {
    # (think - budget) / speed; wrong: all think tokens, think + answer minus budget
    "thinking-budget-latency-saved": ((1800 - 500) / 50, [1800 / 50, (2000 - 500) / 50]),
    # assistant turns / all turns; wrong: tool result counted, denominator without the system prompt
    "tool-conversation-supervised-fraction": (100 * (35 + 60) / (600 + 40 + 35 + 400 + 60),
                                              [100 * (35 + 400 + 60) / 1135, 100 * 95 / (1135 - 600)]),
    # shared + top-k experts; wrong: total, one expert, total / 4
    "moe-active-parameters": (1.6 + 2 * 5.6, [1.6 + 8 * 5.6, 1.6 + 5.6, (1.6 + 8 * 5.6) / 4]),
    # every expert's three matrices; wrong: only the 2 routed experts, one matrix per expert
    "moe-lora-on-experts-parameters": (32 * 8 * (2 * lora_params(16, 4096, 14336) + lora_params(16, 14336, 4096)) / 1e6,
                                       [32 * 2 * 3 * lora_params(16, 4096, 14336) / 1e6,
                                        32 * 8 * lora_params(16, 4096, 14336) / 1e6]),
    # YaRN 0.1 ln(s) + 1 with s = 32k / 4k; wrong: log10, no scaling, ln s alone
    "yarn-attention-temperature": (0.1 * math.log(32768 / 4096) + 1, [0.1 * math.log10(8) + 1, 1.0, math.log(8)]),
    # wavelength of the slowest pair, i = d/2 - 1; wrong: 2 pi forgotten, i = d/2 (exponent 1)
    "rope-longest-wavelength": (2 * math.pi * 10000 ** (2 * 63 / 128), [10000 ** (126 / 128), 2 * math.pi * 10000]),
    # sigmoid of the difference; wrong: ratio of rewards, the difference itself
    "bradley-terry-preference-probability": (sigmoid(1.2 - 0.4), [1.2 / (1.2 + 0.4), 0.8]),
    # -log sigmoid(r_B - r_A); wrong: the order as if A were chosen, ln 2
    "bradley-terry-loss-wrong-order": (-math.log(sigmoid(0.4 - 1.2)), [softplus(-0.8), math.log(2)]),
    # prompts x group x tokens / throughput; wrong: group size forgotten
    "grpo-rollout-generation-time": (64 * 8 * 700 / 20000, [64 * 700 / 20000, 8 * 700 / 20000]),
    # exp(trainer - sampler); wrong: inverse ratio, the log difference
    "token-importance-ratio": (math.exp(-1.20 + 1.50), [math.exp(-0.30), 0.30]),
    # fp32 logits in GiB; wrong: bf16, GB
    "logits-memory-full-vocab": (8 * 4096 * 151936 * 4 / GIB, [8 * 4096 * 151936 * 2 / GIB, 8 * 4096 * 151936 * 4 / 1e9]),
    # 6N x tokens/s / peak; wrong: 2N, 8N (recompute counted)
    "mfu-from-throughput": (100 * 6 * 8e9 * 3000 / 989e12, [100 * 2 * 8e9 * 3000 / 989e12, 100 * 8 * 8e9 * 3000 / 989e12]),
    # NVFP4: 4 bits + E4M3 per 16; wrong: MXFP4's 4.25, no scale
    "nvfp4-bits-per-weight": (4 + 8 / 16, [4 + 8 / 32, 4.0]),
    # MXFP4: 4.25 bits x 70e9 / 8; wrong: no scales, NVFP4
    "mxfp4-70b-weight-memory": (70e9 * (4 + 8 / 32) / 8 / 1e9, [70e9 * 4 / 8 / 1e9, 70e9 * 4.5 / 8 / 1e9]),
    # TIES; wrong: plain task-vector mean, sum of agreeing, sum of all
    "ties-merge-one-weight": (ties_one_weight(0.50, [0.90, 0.35, 0.60]), [0.50 + 0.35 / 3, 0.50 + 0.50, 0.50 + 0.35]),
    # DARE rescale 1 / (1 - p); wrong: no rescale, 1 / p
    "dare-rescale-kept-delta": (0.02 / (1 - 0.9), [0.02, 0.02 / 0.9]),
    # unbiased pass@k; wrong: 1 - (1 - c/n)^k, c/n
    "pass-at-k-unbiased": (pass_at_k(20, 4, 5), [1 - (1 - 4 / 20) ** 5, 4 / 20]),
    # percentage points; wrong: relative change
    "refusal-rate-drop-points": (100 * (510 - 442) / 520, [100 * (510 - 442) / 510]),
    # 2B - 1 candidates for batch B with one hard negative each; wrong: in-batch only, all 64
    "in-batch-negatives-count": (2 * 32 - 1, [31, 32, 64]),
    # InfoNCE at tau = 0.1; wrong: temperature forgotten
    "infonce-loss-value": (infonce([0.8, 0.5, 0.3], 0.1), [infonce([0.8, 0.5, 0.3], 1.0)]),
    # (side / patch)^2 / merge; wrong: no 2x2 merge, merge by 2
    "vlm-image-token-count": ((896 / 14) ** 2 / 4, [(896 / 14) ** 2, (896 / 14) ** 2 / 2]),
}


def coverage() -> list[dict]:
    return yaml.safe_load(COVERAGE_FILE.read_text(encoding="utf-8"))


def added() -> list:
    """Every question this change added: the ones the coverage file lists."""
    return [parse_question_file(BANK_DIR / f"{entry['slug']}.md") for entry in coverage()]


@pytest.mark.parametrize("slug", sorted(FORMULAS))
def test_the_files_answer_is_the_formulas_value_within_its_tolerance(slug):
    data = parse_question_file(BANK_DIR / f"{slug}.md")
    assert data.kind == "numeric"
    value, _ = FORMULAS[slug]
    assert abs(data.numeric_answer - value) <= data.tolerance, (slug, data.numeric_answer, value)


@pytest.mark.parametrize("slug", sorted(FORMULAS))
def test_the_tolerance_rejects_the_common_wrong_answers(slug):
    data = parse_question_file(BANK_DIR / f"{slug}.md")
    _, wrong_answers = FORMULAS[slug]
    assert wrong_answers
    for wrong in wrong_answers:
        assert abs(wrong - data.numeric_answer) > data.tolerance, (slug, wrong)


def test_every_added_numeric_question_has_a_formula():
    assert sorted(q.slug for q in added() if q.kind == "numeric") == sorted(FORMULAS)


def test_sixty_questions_forty_graded_automatically_all_published():
    questions = added()
    assert len({q.slug for q in questions}) == len(questions) >= 60
    assert sum(q.kind != "open" for q in questions) >= 40
    assert all(q.status == "published" for q in questions)


def test_each_2026_area_is_a_topic_with_a_minimum_of_four_and_has_four_questions_of_its_own():
    assert set(INTERVIEW_2026_TOPICS) <= set(TOPICS)
    assert all(TOPIC_MINIMUMS[topic] >= 4 for topic in INTERVIEW_2026_TOPICS)
    leading = Counter(q.topics[0] for q in added())
    assert all(leading[topic] >= 4 for topic in INTERVIEW_2026_TOPICS), leading


def test_the_coverage_file_names_each_questions_leading_topic():
    for entry in coverage():
        assert entry["source"].startswith("issue 22: ") and entry["topic"] in INTERVIEW_2026_TOPICS, entry
        assert parse_question_file(BANK_DIR / f"{entry['slug']}.md").topics[0] == entry["topic"], entry


def test_every_added_auto_graded_question_is_in_a_curated_quiz():
    questions = added()
    quizzes, errors = read_curated(CURATED_FILE, {q.slug for q in questions} | {p.stem for p in BANK_DIR.glob("*.md")})
    assert not errors, errors
    in_quizzes = {slug for quiz in quizzes for slug in quiz.questions}
    missing = [q.slug for q in questions if q.kind != "open" and q.slug not in in_quizzes]
    assert not missing, missing


def test_every_added_open_question_has_follow_ups_for_the_mock_interview():
    missing = [q.slug for q in added() if q.kind == "open" and len(q.follow_ups) < 2]
    assert not missing, missing
