"""THE prompt format. Training, evaluation and serving all build their prompts here.

A model must be served with exactly the prompt it was fine-tuned with, so nothing else in the
project formats a prompt by hand:

    <|im_start|>system
    Classify the sentiment of the product review. Answer with exactly one word: positive, negative or neutral.<|im_end|>
    <|im_start|>user
    {review}<|im_end|>
    <|im_start|>assistant
    {label}<|im_end|>

(ChatML, as rendered by the tokenizer's own chat template; the last line is the assistant's
answer, the only part that training supervises.)
"""

from __future__ import annotations

DEFAULT_MAX_TEXT_TOKENS = 256  # reviews longer than this are cut (before templating)


def labels_system_prompt(labels) -> str:
    """The system prompt for a label set; adding a label changes the instruction."""
    labels = list(labels)
    if not labels:
        raise ValueError("a classifier needs at least one label")
    if len(labels) == 1:
        choices = labels[0]
    else:
        choices = ", ".join(labels[:-1]) + " or " + labels[-1]
    return (
        "Classify the sentiment of the product review. "
        f"Answer with exactly one word: {choices}."
    )


def normalize_text(text: str) -> str:
    """Reviews are stripped: leading/trailing whitespace would only change token boundaries."""
    return text.strip()


def truncate_text(tokenizer, text: str, max_text_tokens: int) -> tuple[str, bool]:
    """Cut the review to at most `max_text_tokens` tokens; returns (text, truncated).

    Truncating the review BEFORE templating is what keeps the label: a truncation of the
    templated sequence would cut the answer first.
    """
    text = normalize_text(text)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_text_tokens:
        return text, False
    return tokenizer.decode(ids[:max_text_tokens]).strip(), True


def _messages(text: str, labels) -> list[dict]:
    return [
        {"role": "system", "content": labels_system_prompt(labels)},
        {"role": "user", "content": normalize_text(text)},
    ]


def render_prompt(tokenizer, text: str, labels) -> str:
    """System + user turns and the opening of the assistant turn: what the model sees at serving."""
    return tokenizer.apply_chat_template(
        _messages(text, labels), tokenize=False, add_generation_prompt=True
    )


def render_full(tokenizer, text: str, label: str, labels) -> str:
    """The prompt followed by the assistant's answer and its end-of-turn token: a training example."""
    return tokenizer.apply_chat_template(
        _messages(text, labels) + [{"role": "assistant", "content": label}], tokenize=False
    )


_SENTINEL = "\u2063REVIEW\u2063"  # stands for the review while the template is cut in two


def split_prompt(tokenizer, labels) -> tuple[str, str]:
    """(prefix, suffix) with render_prompt(text) == prefix + text + suffix for every review.

    The prefix (system turn + the opening of the user turn) is the same for every review: the
    classifier computes its key/value cache once, and training runs it once per batch.
    """
    prefix, suffix = render_prompt(tokenizer, _SENTINEL, labels).split(_SENTINEL)
    return prefix, suffix
