"""The one prompt format: zero-shot, fine-tuned and k-shot, and the one example picker."""

from collections import Counter

from mlcore.data import Example
from mlcore.prompt import (
    chat_messages,
    labels_system_prompt,
    pick_shots,
    render_full,
    render_prompt,
    split_prompt,
    truncate_text,
)

LABELS = ["positive", "negative", "neutral"]


def test_the_system_prompt_lists_the_three_labels():
    assert labels_system_prompt(["positive", "negative", "neutral"]) == (
        "Classify the sentiment of the product review. Answer with exactly one word: positive, negative or neutral."
    )


def test_a_fourth_label_changes_the_system_prompt():
    assert labels_system_prompt(["positive", "negative", "neutral", "mixed"]).endswith(
        "one word: positive, negative, neutral or mixed."
    )


def test_the_prompt_is_chatml_with_system_user_and_an_open_assistant_turn(tokenizer):
    labels = ["positive", "negative", "neutral"]
    assert render_prompt(tokenizer, "  Nice mug. ", labels) == (
        "<|im_start|>system\n" + labels_system_prompt(labels) + "<|im_end|>\n"
        "<|im_start|>user\nNice mug.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_full(tokenizer, "Nice mug.", "positive", labels) == (
        render_prompt(tokenizer, "Nice mug.", labels) + "positive<|im_end|>\n"
    )


def test_truncate_text_cuts_to_the_token_budget(tokenizer):
    text, truncated = truncate_text(tokenizer, "word " * 100, 10)
    assert truncated
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 10
    assert truncate_text(tokenizer, "short review", 10) == ("short review", False)


def test_a_k_shot_prompt_puts_the_stripped_examples_as_turns_before_the_review(tokenizer):
    shots = [Example("  Loved it. ", "positive"), Example("Broke on day two.\n", "negative")]
    assert render_prompt(tokenizer, "Nice mug.", LABELS, shots) == (
        "<|im_start|>system\n" + labels_system_prompt(LABELS) + "<|im_end|>\n"
        "<|im_start|>user\nLoved it.<|im_end|>\n<|im_start|>assistant\npositive<|im_end|>\n"
        "<|im_start|>user\nBroke on day two.<|im_end|>\n<|im_start|>assistant\nnegative<|im_end|>\n"
        "<|im_start|>user\nNice mug.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # An LLM API gets the same turns that a local model reads through its chat template.
    templated = tokenizer.apply_chat_template(chat_messages("Nice mug.", LABELS, shots), tokenize=False,
                                              add_generation_prompt=True)
    assert templated == render_prompt(tokenizer, "Nice mug.", LABELS, shots)
    # The examples sit in the shared prefix that the classifier computes once.
    prefix, suffix = split_prompt(tokenizer, LABELS, shots)
    assert prefix + "Nice mug." + suffix == render_prompt(tokenizer, "Nice mug.", LABELS, shots)
    assert "Loved it." in prefix and "Loved it." not in suffix


def test_few_shot_examples_are_balanced_across_labels_and_seeded(reviews):
    shots = pick_shots(reviews.train, LABELS, 7, seed=3)
    counts = Counter(s.label for s in shots)
    assert len(shots) == 7 and sorted(counts.values()) == [2, 2, 3]
    assert all(a.label != b.label for a, b in zip(shots, shots[1:], strict=False))  # no streaks
    assert shots == pick_shots(reviews.train, LABELS, 7, seed=3)
    assert shots != pick_shots(reviews.train, LABELS, 7, seed=4)
