"""Classification by label scoring: one forward pass per batch, no text generation.

The fine-tuned model answers with a label word, but we never let it generate: we run the
prompt once and compare, at the last position, the scores of the label tokens only. That is
what makes a small model usable as a classifier (zero-shot it rarely answers with a label word
at all, yet the label-token logits still rank the labels) and it is several times faster than
`generate()` + parsing the text.

Speed, on a CPU where a forward pass costs time per token:
- Every prompt starts with the same system turn (~40 tokens). Its key/value cache is computed
  once per Classifier and reused for every batch, so each call only runs the review's tokens
  and the few template tokens after it.
- Left padding puts every row's last real token in the last column, so "the last position" is
  one slice; lm_head is applied there only, and only to the label tokens' rows of it.
- Labels that are a single token ("positive", "negative", "neutral", "mixed" for SmolLM2) need
  nothing more. A label of several tokens is scored as a sequence (sum of its tokens'
  log-probabilities), continuing from the cached prompt.

The prefix cache snapshots the weights: build a new Classifier after changing them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import DEFAULT_LABELS
from .fused import FusedDecoder, supports
from .masking import prompt_and_answer_ids
from .prompt import DEFAULT_MAX_TEXT_TOKENS, PromptFormat, cut_shots, normalize_text, render_prompt, split_prompt, truncate_text
from .registry import DEFAULT_BASE_MODEL, load_base

_PROBE_TEXT = "The strap broke after two days, but the seller replaced it."


MAX_PADDING = 0.25  # on a CPU, a forward pass may be at most this share padding


def max_padding_for(device: torch.device) -> float:
    """The share of padding worth a forward pass of its own.

    A CPU pays per token, padding included, so batches are cut at MAX_PADDING. A GPU running a
    135M model pays per kernel launch (measured on an H200: ~35 ms per forward pass at batch 1,
    barely more at batch 32), so a second pass costs far more than padding: 1.0 gives one pass
    per `batch_size` texts, still sorted by length.
    """
    return MAX_PADDING if device.type == "cpu" else 1.0


def fusing_pays_on(device: torch.device) -> bool:
    """mlcore.fused trades many small CPU operations for fewer larger ones. On a GPU the
    transformers forward was faster (H200, bf16: 1.2x at batch 1, 2.1x at batch 32), so only
    CPUs use it."""
    return device.type == "cpu"


def length_groups(lengths: list[int], batch_size: int, max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Indices in batches of similar length, for one forward pass each.

    Sorted by length, a batch closes when it is full, or when adding the next (longer) text
    would make more than `max_padding` of its tokens padding. On a CPU a forward pass costs
    time per token, padding included: slicing the sorted list every 32 texts lets one long
    review pad 31 short ones (~3x padding on the bundled test split), this keeps it under 25%.
    Predictions do not change: padding is masked out.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        n = len(current) + 1
        if current and (n > batch_size or n * lengths[i] * (1 - max_padding) > real + lengths[i]):
            groups.append(current)
            current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        groups.append(current)
    return groups


@dataclass(frozen=True)
class Prediction:
    label: str
    probs: dict[str, float]  # softmax over the labels' scores, in label order
    truncated: bool  # the review was cut to max_text_tokens


def _unwrap(model):
    """The causal-LM module under a peft wrapper (its LoRA layers are injected in place)."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) and hasattr(model, "peft_config") else model


class Classifier:
    def __init__(
        self,
        model,
        tokenizer,
        labels,
        *,
        shots=(),
        use_prefix_cache: bool = True,
        max_text_tokens: int = DEFAULT_MAX_TEXT_TOKENS,
        fuse: bool = False,
        prompt: PromptFormat | None = None,
    ):
        """shots: labelled examples that go into every prompt (mlcore.prompt's k-shot format);
        they land in the shared prefix, computed once, so each review costs about what it costs
        zero-shot.

        prompt: the format the model was trained with (PromptFormat.for_adapter); None = the
        current default for the labels (a base model scored zero-shot).

        fuse=True: compute with mlcore.fused (same results, faster) when the model allows it
        and it pays on the model's device (fusing_pays_on: CPUs only).
        It re-points the model's Linear weights at fused storage, so pass it only for a model
        this Classifier owns and that will not be trained further."""
        self.model = model
        self.tokenizer = tokenizer
        self.labels = list(labels)
        # Each example cut like the review: its tokens go into every prompt.
        self.shots = tuple(cut_shots(tokenizer, shots, max_text_tokens))
        self.prompt = prompt or PromptFormat.default(self.labels)
        self.use_prefix_cache = use_prefix_cache
        self.max_text_tokens = max_text_tokens
        causal_lm = _unwrap(model)
        self._config = causal_lm.config
        self._body = causal_lm.get_decoder()  # the transformer up to the final norm
        self._head = causal_lm.get_output_embeddings()  # lm_head
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        # The template around the review: prompt = prefix + review + suffix. Tokenised apart,
        # the pieces must give the tokens of the whole (ChatML puts special tokens at both
        # seams, so they do); checked once here rather than trusted.
        prefix, suffix = split_prompt(tokenizer, self.labels, self.shots, prompt=self.prompt)
        self._suffix = suffix
        self._prefix_ids = self._tokenize([prefix])[0]
        self._suffix_len = len(self._tokenize([suffix])[0])
        whole = self._tokenize([render_prompt(tokenizer, _PROBE_TEXT, self.labels, self.shots, prompt=self.prompt)])[0]
        if whole != self._prefix_ids + self._tokenize([_PROBE_TEXT + suffix])[0]:
            raise RuntimeError("this chat template cannot be split around the review text")

        # Each label's answer tokens, exactly as training supervised them (without <|im_end|>).
        self._label_seqs = [
            prompt_and_answer_ids(tokenizer, _PROBE_TEXT, label, self.labels, prompt=self.prompt)[1][:-1]
            for label in self.labels
        ]
        if any(len(seq) == 0 for seq in self._label_seqs):
            raise ValueError("a label must have at least one token")
        self._single_token = all(len(seq) == 1 for seq in self._label_seqs)
        self._first_ids = torch.tensor([seq[0] for seq in self._label_seqs])
        self._prefix_kv = None
        self._fused = None
        if fuse and use_prefix_cache and self._single_token and fusing_pays_on(self._device):
            if supports(causal_lm):
                self._fused = FusedDecoder.of(causal_lm)
        if use_prefix_cache:  # now, not on first use: two threads must not both build it
            self._prefix_keys_values()

    # --- public ----------------------------------------------------------------------------

    def predict(self, texts: list[str], batch_size: int = 32, max_text_tokens: int | None = None) -> list[Prediction]:
        """One Prediction per text, in order."""
        max_text_tokens = self.max_text_tokens if max_text_tokens is None else max_text_tokens
        rows, truncated = self._encode(list(texts), max_text_tokens)
        predictions: list[Prediction | None] = [None] * len(rows)
        with torch.inference_mode():
            for batch in length_groups([len(row) for row in rows], batch_size, max_padding_for(self._device)):
                scores = self._score([rows[i] for i in batch]).float()
                probs = torch.softmax(scores, dim=-1).tolist()
                best = scores.argmax(dim=-1).tolist()
                for i, row_probs, index in zip(batch, probs, best, strict=True):
                    predictions[i] = Prediction(self.labels[index], dict(zip(self.labels, row_probs, strict=True)), truncated[i])
        return predictions

    # --- internals -------------------------------------------------------------------------

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _encode(self, texts: list[str], max_text_tokens: int) -> tuple[list[list[int]], list[bool]]:
        """Token ids of review + suffix per text (the prefix is added by _score)."""
        texts = [normalize_text(t) for t in texts]
        rows = self._tokenize([t + self._suffix for t in texts])
        truncated = [False] * len(rows)
        for i, ids in enumerate(rows):
            if len(ids) - self._suffix_len > max_text_tokens:  # rare: re-tokenise just this one
                text, truncated[i] = truncate_text(self.tokenizer, texts[i], max_text_tokens)
                rows[i] = self._tokenize([text + self._suffix])[0]
        return rows, truncated

    @property
    def _device(self):
        return self._head.weight.device

    def _prefix_keys_values(self) -> list:
        """Per layer, (keys, values) of the system-prompt prefix: [1, kv_heads, P, head_dim]."""
        if self._prefix_kv is None:
            ids = torch.tensor([self._prefix_ids], device=self._device)
            with torch.inference_mode():
                out = self._body(input_ids=ids, use_cache=True)
            self._prefix_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return self._prefix_kv

    def _prefix_cache(self, batch: int):
        from transformers import DynamicCache  # transformers (torch): only when a model runs

        # expand() is a view; the cache copies once when it appends this batch's keys/values.
        return DynamicCache(
            ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in self._prefix_keys_values()],
            config=self._config,
        )

    def _score(self, rows: list[list[int]]) -> torch.Tensor:
        """[batch, n_labels] scores; softmax over them gives the label probabilities."""
        if self.use_prefix_cache:
            prefix_len = len(self._prefix_ids)
        else:
            prefix_len = 0
            rows = [self._prefix_ids + row for row in rows]

        # Left padding: [cached prefix][pads][review + suffix]; pads are masked out, and
        # positions count real tokens only, so a padded row computes what it would alone.
        width = max(map(len, rows))
        input_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), prefix_len + width), dtype=torch.long)
        mask[:, :prefix_len] = 1
        for i, row in enumerate(rows):
            input_ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, prefix_len + width - len(row) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix_len:]
        input_ids, mask, positions = (t.to(self._device) for t in (input_ids, mask, positions))
        if self._fused is not None:
            last = self._fused.last_hidden(input_ids, mask, positions, self._prefix_keys_values())
            return self._label_logits(last)

        cache = self._prefix_cache(len(rows)) if self.use_prefix_cache else None
        out = self._body(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=not self._single_token,
        )
        last = out.last_hidden_state[:, -1]
        if self._single_token:
            return self._label_logits(last)
        return self._score_sequences(last, out.past_key_values, mask, positions[:, -1])

    def _label_logits(self, last) -> torch.Tensor:
        # softmax over the label logits = the label-renormalised probabilities: the
        # full-vocabulary normaliser cancels, so 3-4 rows of lm_head are all we need.
        weight = self._head.weight[self._first_ids.to(self._device)]
        return last.float() @ weight.float().T

    def _score_sequences(self, last, cache, mask, last_positions) -> torch.Tensor:
        """Sum of log-probabilities of each label's tokens, continuing after the prompt."""
        from transformers import DynamicCache  # transformers (torch): only when a model runs

        first = torch.log_softmax(self._head(last).float(), dim=-1)
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        batch = last.shape[0]
        scores = []
        for seq in self._label_seqs:
            score = first[:, seq[0]]
            if len(seq) > 1:
                # Feed the label's tokens but the last; their outputs predict tokens 2..n.
                feed = torch.tensor(seq[:-1], device=self._device).expand(batch, -1)
                steps = torch.arange(1, len(seq), device=self._device)
                out = self._body(
                    input_ids=feed,
                    attention_mask=torch.cat([mask, torch.ones_like(feed)], dim=1),
                    position_ids=last_positions[:, None] + steps,
                    past_key_values=DynamicCache(ddp_cache_data=kv, config=self._config),
                    use_cache=True,
                )
                logp = torch.log_softmax(self._head(out.last_hidden_state).float(), dim=-1)
                targets = torch.tensor(seq[1:], device=self._device).expand(batch, -1)
                score = score + logp.gather(-1, targets[..., None])[..., 0].sum(-1)
            scores.append(score)
        return torch.stack(scores, dim=-1)


BACKENDS = ("torch", "openvino")  # what computes a loaded classifier's decoder (load_classifier)


def read_labels(adapter_dir) -> list[str]:
    return json.loads((Path(adapter_dir) / "labels.json").read_text())


def load_classifier(
    base_name: str | None = None,
    adapter_dir=None,
    *,
    merge: bool = True,
    labels=None,
    use_prefix_cache: bool = True,
    device: str | None = None,
    backend: str = "torch",
) -> Classifier:
    """A Classifier for a base model, optionally with a trained LoRA adapter, in eval mode.

    base_name defaults to the one recorded in the adapter's train_config.json. With merge=True
    the adapter is folded into the base weights (W + B·A·alpha/r): serving then costs exactly
    what the base model costs. Labels default to the adapter's labels.json, else DEFAULT_LABELS.

    backend="openvino" (merged, on a CPU): the decoder is exported and compiled by OpenVINO in
    the background (mlcore.onnx_serving, cached per adapter) and swapped in when ready; the
    Classifier returned serves with torch until then, and for good if the runtime is missing or
    fails (logged). `classifier.runtime` is that background job (None: torch only).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")

    prompt = None  # a base model alone: the current default prompt
    if adapter_dir is not None:
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").exists():
            raise FileNotFoundError(f"{adapter_dir} holds no adapter (adapter_config.json is missing)")
        config_file = adapter_dir / "train_config.json"
        if base_name is None and config_file.exists():
            base_name = json.loads(config_file.read_text())["base_model"]
        if labels is None and (adapter_dir / "labels.json").exists():
            labels = read_labels(adapter_dir)
        labels = labels or list(DEFAULT_LABELS)
        # Served exactly as trained, whatever the default prompt is today.
        prompt = PromptFormat.for_adapter(adapter_dir, labels)
    model, tokenizer = load_base(base_name or DEFAULT_BASE_MODEL, device=device)
    if adapter_dir is not None:
        from peft import PeftModel  # peft (torch): only when an adapter is loaded

        # peft 0.21 still calls a transformers method deprecated in 5.x; the warning is not ours.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        model = PeftModel.from_pretrained(model, adapter_dir)
        if merge:
            model = model.merge_and_unload()
    model.eval()
    # The model is ours alone and only serves from here on: let the Classifier fuse its weights
    # (unless a peft wrapper still holds unmerged LoRA layers, which fusing cannot carry).
    classifier = Classifier(
        model, tokenizer, labels or list(DEFAULT_LABELS), use_prefix_cache=use_prefix_cache, fuse=True, prompt=prompt
    )
    classifier.runtime = None
    if backend == "openvino" and (merge or adapter_dir is None):
        from . import onnx_serving  # deferred: openvino and the exporter are only needed here

        classifier.runtime = onnx_serving.attach(classifier, base_name or DEFAULT_BASE_MODEL, adapter_dir)
    return classifier
