"""Tokenisation and the label mask: only the assistant's answer is supervised.

For one example the sequence is prompt + answer, where answer = the label's tokens + the
end-of-turn token <|im_end|>. `labels` is aligned with `input_ids` (the causal shift happens in
the loss): -100 on every prompt token, the token id on every answer token.

Two rules that other trainers have broken silently:
- The mask comes from token POSITIONS (where the prompt ends), never from `input_ids ==
  pad_token_id`: for SmolLM2 the pad token IS <|im_end|> (id 2), so that rule would also mask
  the end-of-turn token we want the model to learn to emit after the label.
- An example whose every label is -100 contributes loss 0 and a NaN grad norm when a whole
  batch is like that; we refuse it (MaskingError) instead of training on it.

The chat template writes "\n" after <|im_end|>. We cut it: generation stops at <|im_end|> (the
eos token), so that newline is never produced at serving time, and keeping it would only add an
unsupervised token to every sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

from .prompt import PromptFormat, render_full, render_prompt, truncate_text

IGNORE_INDEX = -100  # what torch's cross_entropy skips
END_OF_TURN = "<|im_end|>"


class MaskingError(ValueError):
    """An example cannot be encoded with a correct label mask."""


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where not supervised; aligned with input_ids (unshifted)
    text_truncated: bool  # the review was cut to fit max_length
    prompt_len: int = 0  # tokens before the answer; the last of them is where a classifier reads the label

    @property
    def num_supervised(self) -> int:
        # Position 0 has no preceding token to predict it from, so it never counts.
        return sum(1 for t in self.labels[1:] if t != IGNORE_INDEX)


def end_of_turn_id(tokenizer) -> int:
    token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        token_id = tokenizer.eos_token_id
    return token_id


def _tokens(tokenizer, text: str) -> list[int]:
    # The chat template already writes every special token; never let the tokenizer add a BOS.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_and_answer_ids(
    tokenizer, text: str, label: str, labels, *, prompt: PromptFormat | None = None
) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the answer (label tokens + end-of-turn), checked.

    Tokenising prompt+answer must reproduce the tokenised prompt as its prefix; otherwise a
    BPE merge crosses the boundary and "the answer" would not be the tokens the model sees at
    serving time.
    """
    prompt_ids = _tokens(tokenizer, render_prompt(tokenizer, text, labels, prompt=prompt))
    full_ids = _tokens(tokenizer, render_full(tokenizer, text, label, labels, prompt=prompt))
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise MaskingError(
            "the tokenised prompt is not a prefix of the tokenised prompt+answer "
            f"(label {label!r}); the label mask would be misplaced"
        )
    answer = full_ids[len(prompt_ids) :]
    eot = end_of_turn_id(tokenizer)
    if eot not in answer:
        raise MaskingError(f"the answer for label {label!r} has no end-of-turn token {END_OF_TURN}")
    answer = answer[: answer.index(eot) + 1]  # drop the template's "\n" after <|im_end|>
    return prompt_ids, answer


def encode(
    tokenizer, example, labels, *, max_length: int, mask_prompt: bool = True, prompt: PromptFormat | None = None
) -> EncodedExample:
    """input_ids + labels for one Example, at most `max_length` tokens.

    A review that does not fit is truncated (text first, never the answer). With
    mask_prompt=False every token is supervised (the "no masking" ablation).
    """
    text, truncated = example.text, False
    prompt_ids, answer_ids = prompt_and_answer_ids(tokenizer, text, example.label, labels, prompt=prompt)
    if len(prompt_ids) + len(answer_ids) > max_length:
        # The review's budget is what the template and answer leave of max_length. Token
        # boundaries can shift by a token after cutting, so re-check and shrink if needed.
        overhead = sum(map(len, prompt_and_answer_ids(tokenizer, "", example.label, labels, prompt=prompt)))
        budget = max_length - overhead
        while True:
            text, truncated = truncate_text(tokenizer, example.text, max(budget, 0))
            prompt_ids, answer_ids = prompt_and_answer_ids(tokenizer, text, example.label, labels, prompt=prompt)
            excess = len(prompt_ids) + len(answer_ids) - max_length
            if excess <= 0 or budget <= 0:
                break
            budget -= excess
    input_ids = prompt_ids + answer_ids
    if len(input_ids) > max_length:
        # Even an empty review does not fit: cutting the sequence would cut the answer, and
        # with masking on leave no supervised token (loss 0, grad norm NaN in other trainers).
        raise MaskingError(
            f"example {example.text[:40]!r} would have no supervised token: max_length={max_length} "
            f"is shorter than its prompt ({len(prompt_ids)} tokens) + answer ({len(answer_ids)} tokens)"
        )
    if mask_prompt:
        label_ids = [IGNORE_INDEX] * len(prompt_ids) + answer_ids
    else:
        label_ids = list(input_ids)
    encoded = EncodedExample(input_ids, label_ids, truncated, len(prompt_ids))
    if encoded.num_supervised == 0:  # cannot happen with the rules above; never train on it
        raise MaskingError(f"example {example.text[:40]!r} has no supervised token")
    return encoded


def token_view(tokenizer, encoded: EncodedExample) -> list[dict]:
    """One row per token for the UI: what the model reads and which tokens it is graded on."""
    tokens = tokenizer.convert_ids_to_tokens(encoded.input_ids)
    return [
        {
            "token": tokenizer.convert_tokens_to_string([tok]),
            "id": token_id,
            "label_id": label_id,
            "supervised": label_id != IGNORE_INDEX and position > 0,
        }
        for position, (tok, token_id, label_id) in enumerate(zip(tokens, encoded.input_ids, encoded.labels, strict=True))
    ]
