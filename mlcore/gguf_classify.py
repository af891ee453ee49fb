"""Classify through an exported GGUF file, so anyone can check an export.

Two runtimes read the file:
- llama.cpp (llama-cpp-python, when installed): the runtime the export is for.
- transformers' GGUF loader (always there): dequantizes the file into a torch model, which then
  runs through mlcore.classify.Classifier exactly like an adapter does.

Both score labels the way mlcore.classify does: one forward pass over the prompt, the label
tokens' logits at the last position, softmax over the labels only. The prompt is mlcore.prompt's
(prefix + review + suffix), the labels come from the file's `tunelab.labels` key.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import torch

from .classify import Classifier, Prediction
from .gguf_export import DEFAULT_ROUNDING, LABELS_KEY, MAX_TEXT_TOKENS_KEY, PROMPT_KEY, PROMPT_VERSION_KEY, export_merged
from .prompt import DEFAULT_MAX_TEXT_TOKENS, UNVERSIONED, PromptFormat, normalize_text, split_prompt, truncate_text
from .registry import DEFAULT_BASE_MODEL, load_tokenizer


def check_export(adapter_dir, examples, reference: list[str], *, quant: str, rounding: str | None, work_dir,
                 tokenizer=None, batch_size: int = 32) -> dict:
    """What one export costs a classifier: export `adapter_dir` at `quant` with `rounding`
    (None for f16, which rounds nothing that matters), classify `examples` through the file with
    transformers' GGUF loader, and compare with `reference`, the unquantized classifier's labels
    on the same examples. The file is deleted afterwards; the figures stay:

    {"quant", "rounding", "size": bytes of the file, "agreement": share of labels equal to the
    reference's, "accuracy", "macro_f1" (against the gold labels), "changed": [{"i": index,
    "predicted", "confidence"}] where the label differs, "seconds": export + scoring}.

    transformers' loader dequantizes the file's blocks exactly, so a disagreement is the
    rounding's doing; llama.cpp adds its own (8-bit activations: bench/README.md).
    """
    # mlcore.metrics imports scikit-learn (~1 s): only when metrics are computed
    from .metrics import agreement, compute_metrics

    started = time.perf_counter()
    examples = list(examples)
    path = Path(work_dir) / f"check-{quant}-{rounding or 'none'}.gguf"
    try:
        result = export_merged(adapter_dir, path, quant=quant, rounding=rounding or DEFAULT_ROUNDING)
        classifier = load_gguf_classifier(result.path, backend="transformers", tokenizer=tokenizer)
        predictions = classifier.predict([e.text for e in examples], batch_size=batch_size)
    finally:
        path.unlink(missing_ok=True)
    labels = [p.label for p in predictions]
    metrics = compute_metrics([e.label for e in examples], labels, classifier.labels)
    return {
        "quant": quant, "rounding": rounding, "size": result.size,
        "agreement": agreement(labels, reference), "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
        "changed": [{"i": i, "predicted": p.label, "confidence": p.probs[p.label]}
                    for i, (p, ref) in enumerate(zip(predictions, reference, strict=True)) if p.label != ref],
        "seconds": time.perf_counter() - started,
    }


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def gguf_metadata(path) -> tuple[list[str], int, PromptFormat]:
    """(labels, max_text_tokens, prompt) recorded in an exported file; a file exported before
    prompts were versioned was trained with version 1."""
    from .gguf_reader import gguf  # gguf: only when a GGUF file is read or written

    fields = gguf.GGUFReader(path).fields
    if LABELS_KEY not in fields:
        raise ValueError(f"{path} was not exported by tunelab (no {LABELS_KEY} key): its labels are unknown")
    labels = list(fields[LABELS_KEY].contents())
    max_tokens = fields.get(MAX_TEXT_TOKENS_KEY)
    if PROMPT_KEY in fields:
        prompt = PromptFormat(int(fields[PROMPT_VERSION_KEY].contents()), str(fields[PROMPT_KEY].contents()))
    else:
        prompt = PromptFormat.default(labels, UNVERSIONED)
    return labels, int(max_tokens.contents()) if max_tokens else DEFAULT_MAX_TEXT_TOKENS, prompt


def load_gguf_classifier(path, *, backend: str = "auto", tokenizer=None, n_threads: int | None = None):
    """A classifier (with .predict(texts, batch_size)) reading `path`.

    backend: "llama.cpp", "transformers", or "auto" (llama.cpp when installed). `tokenizer`
    (transformers backend): reuse one instead of rebuilding it from the file (~10 s).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    labels, max_text_tokens, prompt = gguf_metadata(path)
    if backend == "auto":
        backend = "llama.cpp" if llama_cpp_available() else "transformers"
    if backend == "llama.cpp":
        if not llama_cpp_available():
            raise ValueError("llama-cpp-python is not installed (`make llama-cpp` builds it); use --backend transformers")
        return LlamaCppClassifier(path, labels, max_text_tokens=max_text_tokens, n_threads=n_threads, prompt=prompt)
    if backend == "transformers":
        return transformers_gguf_classifier(path, labels, max_text_tokens=max_text_tokens, tokenizer=tokenizer, prompt=prompt)
    raise ValueError(f"unknown backend {backend!r}; choose llama.cpp, transformers or auto")


def transformers_gguf_classifier(path, labels, *, max_text_tokens: int = DEFAULT_MAX_TEXT_TOKENS, tokenizer=None,
                                 prompt: PromptFormat | None = None):
    """The file dequantized by transformers' GGUF loader, served by mlcore's Classifier."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # transformers: seconds to import, only here

    from . import gguf_reader  # noqa: F401 - the reader transformers opens the file with, made fast

    path = Path(path)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    model.eval()
    classifier = Classifier(model, tokenizer, labels, max_text_tokens=max_text_tokens, fuse=True, prompt=prompt)
    classifier.backend = "transformers"
    return classifier


class LlamaCppClassifier:
    """Label scoring in llama.cpp through its C API (llama-cpp-python's low-level bindings).

    As in mlcore.classify: the system-prompt prefix is decoded once into sequence 0, and each
    batch copies it into its sequences (a unified KV cache shares the cells, nothing is
    recomputed); only each review's last token asks for logits.
    """

    backend = "llama.cpp"

    def __init__(self, path, labels, *, max_text_tokens: int = DEFAULT_MAX_TEXT_TOKENS, n_threads: int | None = None,
                 max_batch: int = 32, lora=None, prompt: PromptFormat | None = None):
        """lora: an adapter GGUF (export_gguf --adapter-only) applied on top of `path`, as --lora does."""
        import llama_cpp as lc  # llama.cpp is optional (make llama-cpp): only to check an export

        self._lc = lc
        self.labels = list(labels)
        self.max_text_tokens = max_text_tokens
        self.max_batch = max_batch
        # The chat template is rendered (and reviews truncated) with the training tokenizer;
        # llama.cpp tokenizes the rendered text with the vocabulary inside the file.
        self.tokenizer = load_tokenizer(DEFAULT_BASE_MODEL)
        self._prefix, self._suffix = split_prompt(self.tokenizer, self.labels, prompt=prompt)
        lc.llama_backend_init()
        lc.llama_log_set(_QUIET_LOG, ctypes.c_void_p())
        self._model = lc.llama_model_load_from_file(str(path).encode(), lc.llama_model_default_params())
        if not self._model:
            raise ValueError(f"llama.cpp could not load {path}")
        self._vocab = lc.llama_model_get_vocab(self._model)
        self._n_vocab = lc.llama_vocab_n_tokens(self._vocab)
        params = lc.llama_context_default_params()
        # KV cells: the prefix once, plus each sequence of a batch at its longest (review + template).
        params.n_ctx = params.n_batch = 128 + (max_text_tokens + 64) * max_batch
        params.n_ubatch = 512  # llama.cpp splits a batch into passes of this many tokens
        params.n_seq_max = max_batch + 1  # sequence 0 holds the shared prefix
        params.kv_unified = True  # copying the prefix into a sequence shares its cells
        params.n_threads = params.n_threads_batch = n_threads or os.cpu_count() or 1
        params.no_perf = True
        self._ctx = lc.llama_init_from_model(self._model, params)
        if lora is not None:
            self._adapter = lc.llama_adapter_lora_init(self._model, str(lora).encode())
            if not self._adapter:
                raise ValueError(f"llama.cpp could not load the adapter {lora}")
            adapters = (lc.llama_adapter_lora_p_ctypes * 1)(self._adapter)
            lc.llama_set_adapters_lora(self._ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
        self._memory = lc.llama_get_memory(self._ctx)
        self._batch = lc.llama_batch_init(params.n_batch, 0, 1)
        label_ids = [self.tokenize(label) for label in self.labels]
        if any(len(ids) != 1 for ids in label_ids):
            raise ValueError("the llama.cpp backend scores single-token labels only")
        self._label_ids = np.array([ids[0] for ids in label_ids])
        self._prefix_ids = self.tokenize(self._prefix)
        self._decode([(0, self._prefix_ids, 0)], want_logits=False)

    def close(self) -> None:
        lc = self._lc
        if getattr(self, "_ctx", None):
            lc.llama_batch_free(self._batch)
            lc.llama_free(self._ctx)
            lc.llama_model_free(self._model)
            self._ctx = None

    def __del__(self):
        self.close()

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's tokens for `text`, special tokens (<|im_start|>) parsed, no BOS added."""
        data = text.encode()
        buf = (self._lc.llama_token * (len(data) + 8))()
        n = self._lc.llama_tokenize(self._vocab, data, len(data), buf, len(buf), False, True)
        if n < 0:
            raise ValueError("llama.cpp could not tokenize a text")
        return list(buf[:n])

    def predict(self, texts: list[str], batch_size: int = 32, max_text_tokens: int | None = None) -> list[Prediction]:
        limit = self.max_text_tokens if max_text_tokens is None else max_text_tokens
        rows, truncated = [], []
        for text in texts:
            text, cut = truncate_text(self.tokenizer, normalize_text(text), limit)
            rows.append(self.tokenize(text + self._suffix))
            truncated.append(cut)
        out: list[Prediction] = []
        step = max(1, min(batch_size, self.max_batch))
        for start in range(0, len(rows), step):
            scores = self._score(rows[start : start + step])
            probs = np.exp(scores - scores.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            for i, row in enumerate(probs):
                out.append(Prediction(self.labels[int(row.argmax())], dict(zip(self.labels, map(float, row), strict=True)),
                                      truncated[start + i]))
        return out

    def _score(self, rows: list[list[int]]) -> np.ndarray:
        """[len(rows), n_labels] label logits at each row's last position."""
        lc, start = self._lc, len(self._prefix_ids)
        for seq in range(1, len(rows) + 1):
            lc.llama_memory_seq_cp(self._memory, 0, seq, -1, -1)
        try:
            ends = self._decode([(seq, row, start) for seq, row in enumerate(rows, 1)], want_logits=True)
            scores = np.empty((len(rows), len(self.labels)), dtype=np.float32)
            for i, index in enumerate(ends):
                logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(self._ctx, index), shape=(self._n_vocab,))
                scores[i] = logits[self._label_ids]
            return scores
        finally:
            for seq in range(1, len(rows) + 1):
                lc.llama_memory_seq_rm(self._memory, seq, -1, -1)

    def _decode(self, sequences, *, want_logits: bool) -> list[int]:
        """One llama_decode over (seq_id, tokens, first position) triples; returns the batch index
        of each sequence's last token (where its logits are)."""
        batch, ends, n = self._batch, [], 0
        for seq, tokens, first in sequences:
            for offset, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = first + offset
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = want_logits and offset == len(tokens) - 1
                n += 1
            ends.append(n - 1)
        batch.n_tokens = n
        if self._lc.llama_decode(self._ctx, batch) != 0:
            raise RuntimeError("llama_decode failed (the batch does not fit the context)")
        return ends


def _quiet(level, text, user_data):  # llama.cpp logs every tensor at load; keep stderr readable
    pass


def _make_quiet_log():
    try:
        import llama_cpp  # llama.cpp is optional (make llama-cpp): only to check an export

        return llama_cpp.llama_log_callback(_quiet)
    except ImportError:
        return None


_QUIET_LOG = _make_quiet_log()
