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

Three uses, one format:
- zero-shot: `render_prompt(tokenizer, text, labels)`, the base model scored on the label tokens;
- fine-tuned: the same prompt; `render_full` appends the answer for training;
- k-shot: `render_prompt(..., shots=pick_shots(...))`, the examples as earlier user/assistant
  turns between the system prompt and the review. An LLM API gets the same turns as
  `chat_messages(...)`; a local model gets them through its chat template.
"""

from __future__ import annotations

import random

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


def chat_messages(text: str, labels, shots=()) -> list[dict]:
    """The chat turns of a prompt: the system prompt, each shot as a user turn and the
    assistant's answer, then the review. Texts are normalised the same way everywhere."""
    messages = [{"role": "system", "content": labels_system_prompt(labels)}]
    for shot in shots:
        messages += [{"role": "user", "content": normalize_text(shot.text)}, {"role": "assistant", "content": shot.label}]
    return messages + [{"role": "user", "content": normalize_text(text)}]


def render_prompt(tokenizer, text: str, labels, shots=()) -> str:
    """System + user turns and the opening of the assistant turn: what the model sees at serving."""
    return tokenizer.apply_chat_template(
        chat_messages(text, labels, shots), tokenize=False, add_generation_prompt=True
    )


def render_full(tokenizer, text: str, label: str, labels) -> str:
    """The prompt followed by the assistant's answer and its end-of-turn token: a training example."""
    return tokenizer.apply_chat_template(
        chat_messages(text, labels) + [{"role": "assistant", "content": label}], tokenize=False
    )


def prompt_token_count(tokenizer, text: str, labels, shots=()) -> int:
    """Tokens the model reads for one review (what an API would bill as prompt tokens)."""
    return len(tokenizer(render_prompt(tokenizer, text, labels, shots), add_special_tokens=False)["input_ids"])


_SENTINEL = "\u2063REVIEW\u2063"  # stands for the review while the template is cut in two


def split_prompt(tokenizer, labels, shots=()) -> tuple[str, str]:
    """(prefix, suffix) with render_prompt(text) == prefix + text + suffix for every review.

    The prefix (system turn, the shots, and the opening of the user turn) is the same for every
    review: the classifier computes its key/value cache once, and training runs it once per batch.
    """
    prefix, suffix = render_prompt(tokenizer, _SENTINEL, labels, shots).split(_SENTINEL)
    return prefix, suffix


def pick_shots(train, labels, k: int, *, seed: int = 0) -> list:
    """THE example picker for k-shot prompts (labs' few-shot runs and the prompting baselines).

    k examples from the train split, as evenly spread over the labels as k allows (with 3
    labels and k=4: 2/1/1), chosen and ordered by the seed, never two of a label in a row
    when it can be avoided (a streak of one label at the end biases the answer towards it)."""
    rng = random.Random(seed)
    pools = {label: [e for e in train if e.label == label] for label in labels}
    for pool in pools.values():
        rng.shuffle(pool)
    order = list(labels)
    rng.shuffle(order)  # which labels get the extra examples when k is not a multiple
    shots: list = []
    while len(shots) < k and any(pools.values()):
        for label in order:
            if pools[label] and len(shots) < k:
                shots.append(pools[label].pop())
    return shots
