"""Loaded classifiers, kept in a small per-process LRU cache for serving.

Loading a model (base weights + adapter, merged) takes a second or more and ~0.5 GB of memory
for SmolLM2-135M, so it happens once per model per web process, on first use: never at import
time (a Celery parent or a management command must not pay for it) and never per request.

Thread safety under the ASGI server (sync views run in a thread pool):
- one lock guards the cache's bookkeeping (lookup, insert, evict); it is never held while a
  model loads, so a request for a cached model is not stuck behind another model's load;
- one lock per key while it loads: concurrent first requests for the same model load it once;
- at most MODEL_LOADS_AT_ONCE loads of different models at once in a process: each holds a
  model's full weights while merging, so requests for run-1, run-2, run-3... in parallel would
  otherwise load them all at once. A request that finds no free load slot within
  MODEL_LOAD_WAIT_S gets LoadsBusy (a 503 with Retry-After), not a place in a pile of loads;
- `before_load` runs once per real load, after the slot is taken: the caller charges the load
  to the learner there (a cache hit costs nothing extra);
- one lock per loaded classifier around predict(): torch on a CPU already uses every core for
  one forward pass, so two at once would only fight over them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings

logger = logging.getLogger(__name__)


class _Job:
    __slots__ = ("texts", "labels", "result", "error", "done")

    def __init__(self, texts: list[str], labels: tuple[str, ...] | None):
        self.texts, self.labels, self.result, self.error, self.done = texts, labels, None, None, False


@dataclass
class Loaded:
    """A classifier ready to serve.

    predict() runs one forward pass at a time, and combines the requests that queued up while
    one was running into the next pass (up to `max_batch` texts): eight clients sending one
    review each then cost one batched pass instead of eight, which is most of the API's
    throughput under concurrency on a CPU. A request's predictions do not depend on what it
    was batched with (left padding is masked out; the tests check it), and neither does its
    success: when a combined pass fails, each request is run again alone, so only the one
    whose input fails gets the error.

    The cache holds one entry per model (base + adapter). The label list is applied per call:
    another list gets its own Classifier over the same weights (the labels are in the system
    prompt, so it needs its own prefix cache, ~40 tokens), kept for the next call.
    """

    key: Hashable
    classifier: object  # mlcore.classify.Classifier
    load_s: float
    max_batch: int = 64
    lock: threading.Lock = field(default_factory=threading.Lock)  # held during a forward pass
    _pending: list = field(default_factory=list)
    _pending_lock: threading.Lock = field(default_factory=threading.Lock)
    forward_calls: int = 0  # combined batches run (each one or more forward passes), for tests
    _variants: dict = field(default_factory=dict)  # label tuple -> Classifier over the same model

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    def classifier_for(self, labels) -> object:
        """The classifier scoring `labels` (None: the model's own), built on first use. Called
        with self.lock held, so two threads never build the same one."""
        if labels is None or tuple(labels) == tuple(self.classifier.labels):
            return self.classifier
        labels = tuple(labels)
        if labels not in self._variants:
            from mlcore.classify import Classifier  # mlcore.classify imports torch: only when a model runs

            base = self.classifier
            self._variants[labels] = Classifier(base.model, base.tokenizer, list(labels), fuse=True,
                                                max_text_tokens=base.max_text_tokens)
        return self._variants[labels]

    def predict(self, texts: list[str], *, batch_size: int = 32, labels=None):
        job = _Job(list(texts), tuple(labels) if labels is not None else None)
        with self._pending_lock:
            self._pending.append(job)
        with self.lock:
            # Whoever holds the lock serves the queue in arrival order until its own job is
            # done; a job served by an earlier holder is already done when its thread gets here.
            while not job.done:
                with self._pending_lock:
                    batch, total = [], 0
                    while self._pending and (not batch or (total + len(self._pending[0].texts) <= self.max_batch
                                                           and self._pending[0].labels == batch[0].labels)):
                        batch.append(self._pending.pop(0))
                        total += len(batch[-1].texts)
                self._run(batch, batch_size)
        if job.error is not None:
            raise job.error
        return job.result

    def _run(self, batch: list[_Job], batch_size: int) -> None:
        texts = [text for job in batch for text in job.texts]
        try:
            predictions = self.classifier_for(batch[0].labels).predict(texts, batch_size=batch_size)
            self.forward_calls += 1
        except Exception as exc:
            if len(batch) > 1:  # whose input failed? each request alone: only that one fails
                for job in batch:
                    self._run([job], batch_size)
                return
            batch[0].error, batch[0].done = exc, True
            return
        start = 0
        for job in batch:
            job.result, start = predictions[start : start + len(job.texts)], start + len(job.texts)
            job.done = True


class LoadsBusy(Exception):
    """No load slot came free in time: the process is loading as many models as it may."""

    def __init__(self, loads: int, retry_after_s: int):
        super().__init__(f"The server is loading other models right now ({loads} at a time per process); this model "
                         f"is not loaded yet. Retry in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


class ClassifierCache:
    def __init__(self, size: int | Callable[[], int], max_loads: int | Callable[[], int] = 1,
                 load_wait_s: float | Callable[[], float] = 0.0):
        self._size, self._max_loads, self._load_wait_s = size, max_loads, load_wait_s
        self._entries: OrderedDict[Hashable, Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}
        self._slots = threading.Condition(threading.Lock())  # guards active_loads
        self.active_loads = 0
        self._last_load_s = 5.0  # what a Retry-After says: about one load's time
        self.loads = 0  # models loaded by this process: tests check nothing reloads per request

    @property
    def size(self) -> int:
        return self._size() if callable(self._size) else self._size

    @property
    def max_loads(self) -> int:
        return self._max_loads() if callable(self._max_loads) else self._max_loads

    @contextmanager
    def load_slot(self):
        """One of the process's max_loads load slots, waiting up to load_wait_s; else LoadsBusy."""
        wait = self._load_wait_s() if callable(self._load_wait_s) else self._load_wait_s
        deadline = time.monotonic() + wait
        with self._slots:
            while self.active_loads >= self.max_loads:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LoadsBusy(self.max_loads, max(1, math.ceil(self._last_load_s)))
                self._slots.wait(left)
            self.active_loads += 1
        try:
            yield
        finally:
            with self._slots:
                self.active_loads -= 1
                self._slots.notify()

    def get(self, key: Hashable, load: Callable[[], object], *, before_load: Callable[[], object] | None = None) -> Loaded:
        """The cached classifier for `key`, calling load() to build it on a miss (before_load()
        first, with a load slot held; if it raises, nothing loads)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:  # another thread may have loaded it while we waited
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    return entry
            with self.load_slot():
                if before_load is not None:
                    before_load()
                tick = time.perf_counter()
                classifier = load()
                entry = Loaded(key, classifier, time.perf_counter() - tick)
            self._last_load_s = entry.load_s
            with self._lock:
                self._entries[key] = entry
                self._entries.move_to_end(key)
                while len(self._entries) > max(1, self.size):
                    evicted, _ = self._entries.popitem(last=False)
                    logger.info("classifier cache: evicted %s", evicted)
                self._loading.pop(key, None)
                self.loads += 1
            logger.info("classifier cache: loaded %s in %.1f s", key, entry.load_s)
            return entry

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.loads = 0


def _setting(name: str):
    def read():
        return getattr(settings, name)

    return read


# The web process's cache. Its limits are read from settings when used (tests override them).
classifiers = ClassifierCache(_setting("CLASSIFIER_CACHE_SIZE"), _setting("MODEL_LOADS_AT_ONCE"),
                              _setting("MODEL_LOAD_WAIT_S"))
