"""The one prompt format."""

from mlcore.prompt import labels_system_prompt, render_full, render_prompt, truncate_text


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
