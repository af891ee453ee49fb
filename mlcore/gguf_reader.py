"""The gguf package, with its reader made fast enough for files that carry a tokenizer.

    from .gguf_reader import gguf   # instead of `import gguf`: the same package, reader patched

gguf 0.19's GGUFReader reads every header value through `GGUFReader._get`, which slices the
file's numpy.memmap: about 5 million slices for SmolLM2's tokenizer (49,152 tokens and 48,900
merges, a length and a body each), and each memmap slice runs memmap.__array_finalize__. That
made one open take 1.6 s on an idle core (3.5 s on a loaded one), and checking one export opens
four files' headers (the packaged base while exporting, the export's labels, and transformers'
loader twice): most of the 4-bit lab's export checks and of the GGUF tests. `_get` below slices
a plain ndarray view of the same mapping: the same bytes, no copy, 0.5 s an open. The patch is
applied once, to the class, so transformers' loader gets it too; only to the `_get` it was
written against (another gguf version keeps its own). tests/mlcore/test_gguf_reader.py compares
every field and tensor with the library's reader.

transformers' loader also asks gguf for its tensor-name map (`get_tensor_name_map`) once per
submodule of the model it fills, and gguf builds a new map each time: 397 maps, each a few
thousand formatted names, for SmolLM2's 30 blocks (~6 of the 11 CPU-s of a load). A map is only read once
built, so the package's function is replaced by one that keeps the last few maps, again only when
it is the function this was written against.
"""

from __future__ import annotations

import functools
import inspect

import gguf
import numpy as np
from gguf.gguf_reader import GGUFReader

__all__ = ["gguf"]

ORIGINAL_GET = GGUFReader._get
EXPECTED_PARAMETERS = ["self", "offset", "dtype", "count", "override_order"]


def _get(self, offset: int, dtype, count: int = 1, override_order=None) -> np.ndarray:
    plain = self.__dict__.get("_plain_data")
    if plain is None:  # the same memory as self.data (a memmap), without memmap's per-slice bookkeeping
        plain = self.__dict__["_plain_data"] = self.data.view(np.ndarray)
    count = int(count)
    itemsize = np.dtype(dtype).itemsize
    arr = plain[offset : offset + itemsize * count].view(dtype=dtype)[:count]
    return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))


def patched() -> bool:
    return GGUFReader._get is _get


if not patched() and list(inspect.signature(ORIGINAL_GET).parameters) == EXPECTED_PARAMETERS:
    GGUFReader._get = _get


def _builds_a_new_map(function) -> bool:
    """The library's own get_tensor_name_map: `return TensorNameMap(arch, n_blocks)`, nothing kept."""
    return (getattr(function, "__module__", "") == "gguf.tensor_mapping" and not hasattr(function, "cache_info")
            and list(inspect.signature(function).parameters) == ["arch", "n_blocks"]
            and "TensorNameMap" in function.__code__.co_names)


if _builds_a_new_map(gguf.get_tensor_name_map):
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=8)(gguf.get_tensor_name_map)
