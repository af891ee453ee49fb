"""THE prompt format. Training, evaluation and serving all build their prompts here.

A model must be served with exactly the prompt it was fine-tuned with, so nothing else in the
project formats a prompt by hand:

    <|im_start|>system
    Classify the sentiment of the review. Answer with exactly one word: positive, negative or neutral.<|im_end|>
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

Prompts are versioned with the adapter. The default system prompt can change (version 1 said
"product review"; the data now has restaurants and films too), but a finished run must keep
answering as it was trained: training writes the exact system prompt and chat template into
`prompt.json` beside the adapter (`PromptFormat.save`), and serving, export and evaluation read
them back (`PromptFormat.for_adapter`). Every rendering function takes `prompt=` for that; left
out, it is the current default for the labels.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path

DEFAULT_MAX_TEXT_TOKENS = 256  # reviews longer than this are cut (before templating)

# Every system prompt a default has used; never edit one, add a version. {choices} = the labels.
SYSTEM_PROMPTS = {
    1: "Classify the sentiment of the product review. Answer with exactly one word: {choices}.",
    2: "Classify the sentiment of the review. Answer with exactly one word: {choices}.",
}
DEFAULT_PROMPT_VERSION = 1
PROMPT_FILE = "prompt.json"  # beside an adapter
UNVERSIONED = 1  # adapters written before prompts were versioned were trained with version 1


def labels_system_prompt(labels, version: int = DEFAULT_PROMPT_VERSION) -> str:
    """The system prompt for a label set; adding a label changes the instruction."""
    labels = list(labels)
    if not labels:
        raise ValueError("a classifier needs at least one label")
    if version not in SYSTEM_PROMPTS:
        raise ValueError(f"unknown prompt version {version}; known: {', '.join(map(str, SYSTEM_PROMPTS))}")
    if len(labels) == 1:
        choices = labels[0]
    else:
        choices = ", ".join(labels[:-1]) + " or " + labels[-1]
    return SYSTEM_PROMPTS[version].format(choices=choices)


@dataclass(frozen=True)
class PromptFormat:
    """The exact prompt a classifier was trained with: the system prompt (text and version) and,
    when it differs from the tokenizer's own, the chat template that renders the turns."""

    version: int
    system: str
    chat_template: str | None = None  # None: the tokenizer's own template

    @classmethod
    def default(cls, labels, version: int = DEFAULT_PROMPT_VERSION) -> PromptFormat:
        return cls(version, labels_system_prompt(labels, version))

    @classmethod
    def for_adapter(cls, adapter_dir, labels) -> PromptFormat:
        """What the adapter in `adapter_dir` was trained with: its prompt.json; without one, the
        version its train_config.json names; an adapter older than both: version 1.
        Scored with other labels than its own, the same version is rendered for those labels."""
        adapter_dir = Path(adapter_dir)
        saved, own_labels = adapter_dir / PROMPT_FILE, adapter_dir / "labels.json"
        if saved.exists():
            data = json.loads(saved.read_text())
            if not own_labels.exists() or json.loads(own_labels.read_text()) == list(labels):
                return cls(int(data["version"]), str(data["system"]), data.get("chat_template"))
            return cls(int(data["version"]), labels_system_prompt(labels, int(data["version"])), data.get("chat_template"))
        config = adapter_dir / "train_config.json"
        version = json.loads(config.read_text()).get("prompt_version", UNVERSIONED) if config.exists() else UNVERSIONED
        return cls.default(labels, version)

    def save(self, adapter_dir, tokenizer) -> None:
        """Write prompt.json, with the chat template spelled out: the record must not depend on
        a tokenizer file that a later package version could change."""
        record = asdict(self) | {"chat_template": self.chat_template or tokenizer.chat_template}
        (Path(adapter_dir) / PROMPT_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")

    def template_for(self, tokenizer) -> str | None:
        """The template to render with: None (the tokenizer's) unless the recorded one differs."""
        return None if self.chat_template in (None, tokenizer.chat_template) else self.chat_template


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


def cut_shots(tokenizer, shots, max_text_tokens: int = DEFAULT_MAX_TEXT_TOKENS) -> list:
    """The k-shot examples, each text cut like the review (truncate_text). Uncut, one uploaded
    example of megabytes would go whole into every prompt of a few-shot run or baseline."""
    # A token is never 16 characters on average: cut the characters first, so a huge text is
    # not tokenised whole just to be cut.
    return [replace(shot, text=truncate_text(tokenizer, shot.text[: 16 * max_text_tokens], max_text_tokens)[0])
            for shot in shots]


def chat_messages(text: str, labels, shots=(), *, prompt: PromptFormat | None = None) -> list[dict]:
    """The chat turns of a prompt: the system prompt, each shot as a user turn and the
    assistant's answer, then the review. Texts are normalised the same way everywhere."""
    messages = [{"role": "system", "content": prompt.system if prompt else labels_system_prompt(labels)}]
    for shot in shots:
        messages += [{"role": "user", "content": normalize_text(shot.text)}, {"role": "assistant", "content": shot.label}]
    return messages + [{"role": "user", "content": normalize_text(text)}]


def render_prompt(tokenizer, text: str, labels, shots=(), *, prompt: PromptFormat | None = None) -> str:
    """System + user turns and the opening of the assistant turn: what the model sees at serving."""
    return tokenizer.apply_chat_template(
        chat_messages(text, labels, shots, prompt=prompt), tokenize=False, add_generation_prompt=True,
        chat_template=prompt.template_for(tokenizer) if prompt else None,
    )


def render_full(tokenizer, text: str, label: str, labels, *, prompt: PromptFormat | None = None) -> str:
    """The prompt followed by the assistant's answer and its end-of-turn token: a training example."""
    return tokenizer.apply_chat_template(
        chat_messages(text, labels, prompt=prompt) + [{"role": "assistant", "content": label}], tokenize=False,
        chat_template=prompt.template_for(tokenizer) if prompt else None,
    )


def prompt_token_count(tokenizer, text: str, labels, shots=(), *, prompt: PromptFormat | None = None) -> int:
    """Tokens the model reads for one review (what an API would bill as prompt tokens)."""
    rendered = render_prompt(tokenizer, text, labels, shots, prompt=prompt)
    return len(tokenizer(rendered, add_special_tokens=False)["input_ids"])


_SENTINEL = "\u2063REVIEW\u2063"  # stands for the review while the template is cut in two


def split_prompt(tokenizer, labels, shots=(), *, prompt: PromptFormat | None = None) -> tuple[str, str]:
    """(prefix, suffix) with render_prompt(text) == prefix + text + suffix for every review.

    The prefix (system turn, the shots, and the opening of the user turn) is the same for every
    review: the classifier computes its key/value cache once, and training runs it once per batch.
    """
    prefix, suffix = render_prompt(tokenizer, _SENTINEL, labels, shots, prompt=prompt).split(_SENTINEL)
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
