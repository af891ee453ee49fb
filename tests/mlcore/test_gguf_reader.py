"""mlcore.gguf_reader: the patched GGUFReader reads exactly what the library's own reads."""

import numpy as np
from gguf.gguf_reader import GGUFReader

from mlcore import gguf_reader
from mlcore.registry import DEFAULT_BASE_MODEL, get_spec, packaged_gguf


def read_with(get, path) -> GGUFReader:
    patched = GGUFReader._get
    GGUFReader._get = get
    try:
        return GGUFReader(path)
    finally:
        GGUFReader._get = patched


def test_the_reader_is_patched_once_importing_gguf_through_mlcore():
    assert gguf_reader.patched() and GGUFReader._get is not gguf_reader.ORIGINAL_GET
    assert gguf_reader.gguf.GGUFReader is GGUFReader


def test_every_field_and_tensor_equals_what_the_librarys_reader_reads():
    path = packaged_gguf(get_spec(DEFAULT_BASE_MODEL))  # the tokenizer's ~100,000 strings are in its header
    ours, theirs = GGUFReader(path), read_with(gguf_reader.ORIGINAL_GET, path)
    assert list(ours.fields) == list(theirs.fields) and len(ours.fields) > 30
    for name, field in theirs.fields.items():
        mine = ours.fields[name]
        assert (mine.offset, mine.data, mine.types) == (field.offset, field.data, field.types), name
        assert len(mine.parts) == len(field.parts), name
        for a, b in zip(mine.parts, field.parts, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert ours.fields["tokenizer.ggml.tokens"].contents()[:5] == theirs.fields["tokenizer.ggml.tokens"].contents()[:5]
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors] and len(ours.tensors) == 272
    for a, b in zip(ours.tensors, theirs.tensors, strict=True):
        assert (a.tensor_type, a.data_offset, list(a.shape)) == (b.tensor_type, b.data_offset, list(b.shape)), a.name
        assert np.array_equal(a.data, b.data), a.name


def test_transformers_loader_builds_the_tensor_name_map_once_and_gets_the_librarys_map(monkeypatch):
    import gguf.tensor_mapping as mapping
    from transformers.modeling_gguf_pytorch_utils import TensorProcessor, get_gguf_hf_weights_map

    from mlcore.registry import load_base

    assert gguf_reader.gguf.get_tensor_name_map.cache_info  # replaced, once, by a cached one
    built = []
    init = mapping.TensorNameMap.__init__
    monkeypatch.setattr(mapping.TensorNameMap, "__init__", lambda self, *a: built.append(a) or init(self, *a))
    gguf_reader.gguf.get_tensor_name_map.cache_clear()
    model = load_base("tiny-test", device="cpu")[0]
    names = get_gguf_hf_weights_map(model, TensorProcessor())  # the loader's walk: one call per submodule
    assert len(built) == 1 and len(names) > 10
    arch = built[0][0]
    assert gguf_reader.gguf.get_tensor_name_map(arch, 2).mapping == mapping.TensorNameMap(arch, 2).mapping
