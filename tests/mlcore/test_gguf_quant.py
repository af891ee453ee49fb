"""Calibrated (GPTQ) rounding into llama.cpp's Q8_0/Q4_0 blocks: the bytes decode, with gguf's
own reference dequantizer, to the levels chosen; with no input correlation it is nearest
rounding; with correlated inputs the layer's output error is well below nearest rounding's."""

import numpy as np
import pytest
import torch

from mlcore import gguf_quant

KINDS = ["Q8_0", "Q4_0"]


def dequantize(packed, kind, shape):
    import gguf

    return gguf.quants.dequantize(packed, gguf.GGMLQuantizationType[kind]).reshape(shape)


def nearest(weights, kind):
    import gguf

    return gguf.quants.quantize(weights, gguf.GGMLQuantizationType[kind])


@pytest.fixture(scope="module")
def layer():
    """A (96 x 192) weight matrix and 2,000 correlated inputs, as a transformer layer sees them."""
    generator = torch.Generator().manual_seed(0)
    weights = (torch.randn(96, 192, generator=generator) * 0.05).numpy()
    mixing = torch.randn(192, 192, generator=generator) * 0.1 + torch.eye(192)
    inputs = torch.randn(2000, 192, generator=generator) @ mixing
    return weights, inputs.double()


@pytest.mark.parametrize("kind", KINDS)
def test_packed_blocks_decode_to_the_chosen_levels(layer, kind):
    weights, inputs = layer
    hessian = inputs.T @ inputs / len(inputs)
    levels, scales = gguf_quant.gptq_levels(torch.from_numpy(weights), hessian, gguf_quant.GRIDS[kind])
    packed = gguf_quant.pack(levels, scales, kind)
    assert packed.shape == nearest(weights, kind).shape
    expected = levels.double() * scales.to(torch.float16).double().repeat_interleave(gguf_quant.BLOCK, dim=1)
    np.testing.assert_allclose(dequantize(packed, kind, weights.shape), expected.numpy(), rtol=0, atol=1e-7)
    grid = gguf_quant.GRIDS[kind]
    assert levels.min() >= grid.lo and levels.max() <= grid.hi
    assert (levels == grid.anchor).any()  # each block's extreme weight sits on llama.cpp's anchor level


@pytest.mark.parametrize("kind", KINDS)
def test_uncorrelated_inputs_give_nearest_rounding(layer, kind):
    weights, _ = layer
    ours = dequantize(gguf_quant.quantize_calibrated(weights, torch.eye(192, dtype=torch.float64), kind), kind, weights.shape)
    reference = dequantize(nearest(weights, kind), kind, weights.shape)
    # llama.cpp rounds with the unrounded scale, we with the f16 one the file stores: rare ties differ
    assert np.mean(ours == reference) > 0.99


@pytest.mark.parametrize("kind", KINDS)
def test_calibrated_rounding_halves_the_output_error_on_correlated_inputs(layer, kind):
    weights, inputs = layer
    hessian = inputs.T @ inputs / len(inputs)
    ours = dequantize(gguf_quant.quantize_calibrated(weights, hessian, kind), kind, weights.shape)
    reference = dequantize(nearest(weights, kind), kind, weights.shape)

    def output_error(rounded):
        return float(((inputs @ torch.from_numpy(weights - rounded).double().T) ** 2).mean())

    assert output_error(ours) < 0.6 * output_error(reference)


def test_input_hessians_are_the_layer_inputs_second_moment_without_padding():
    from mlcore.registry import load_base

    model, tokenizer = load_base("tiny-test", device="cpu")
    name = "model.layers.0.mlp.down_proj"
    prompts = ["A short prompt.", "Another, much longer prompt than the first one here."]
    seen = []
    handle = dict(model.named_modules())[name].register_forward_hook(lambda m, i, o: seen.append(i[0][0]))
    with torch.inference_mode():
        for prompt in prompts:  # one at a time: no padding in the reference
            model(**tokenizer(prompt, return_tensors="pt"))
    handle.remove()
    x = torch.cat(seen).double()

    hessians = gguf_quant.input_hessians(model, tokenizer, prompts, {name}, batch_size=2)
    torch.testing.assert_close(hessians[name], x.T @ x / len(x), rtol=1e-5, atol=1e-6)  # float32 products


@pytest.mark.parametrize("kind", KINDS)
def test_many_matrices_rounded_together_get_the_bytes_each_gets_alone(layer, kind):
    """quantize_calibrated_many stacks matrices sharing a Hessian and batches equal shapes; the
    bytes are the ones quantize_calibrated writes for each matrix on its own."""
    weights, inputs = layer
    generator = torch.Generator().manual_seed(1)
    first = inputs.T @ inputs / len(inputs)
    other_inputs = inputs[:500] @ (torch.eye(192, dtype=torch.float64) + 0.2 * torch.randn(192, 192, generator=generator,
                                                                                             dtype=torch.float64))
    second = other_inputs.T @ other_inputs / 500
    dead = first.clone()
    dead[:, 7] = dead[7, :] = 0  # an input column no calibration prompt touched
    matrices = {
        "q": (weights, first), "k": (weights[:32] * 2, first.clone()),  # equal Hessians: stacked by rows
        "q2": (weights * 0.5, second), "k2": (weights[:32], second.clone()),  # the same shapes: one batch with q/k
        "o": (weights[:48], dead),
    }
    together = gguf_quant.quantize_calibrated_many(matrices, kind)
    assert set(together) == set(matrices)
    for name, (matrix, hessian) in matrices.items():
        np.testing.assert_array_equal(together[name], gguf_quant.quantize_calibrated(matrix, hessian, kind), err_msg=name)
    assert dequantize(together["o"], kind, (48, 192))[:, 7].tolist() == [0.0] * 48


def test_the_exporter_calibrates_exactly_the_kinds_gptq_can_round():
    from mlcore.gguf_export import CALIBRATED_KINDS

    assert set(CALIBRATED_KINDS) == set(gguf_quant.GRIDS)


def test_the_inverse_hessian_factor_is_the_upper_cholesky_factor_of_the_dampened_inverse():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(200, 48, generator=generator, dtype=torch.float64) * torch.rand(48, generator=generator, dtype=torch.float64)
    x[:, 5] = 0  # an input no calibration prompt touched
    hessian = torch.stack([x.T @ x / 200, 2 * x.T @ x / 200])
    weights = torch.ones(2, 4, 48, dtype=torch.float64)
    u = gguf_quant.inverse_hessian_factor(hessian, weights)
    dampened = hessian.clone()
    dampened[:, 5, 5] = 1.0
    diagonal = dampened.diagonal(dim1=-2, dim2=-1)
    diagonal.add_(gguf_quant.DAMPING * diagonal.mean(dim=-1, keepdim=True))
    assert torch.equal(u, u.triu()) and bool((u.diagonal(dim1=-2, dim2=-1) > 0).all())
    torch.testing.assert_close(u.transpose(-1, -2) @ u, torch.linalg.inv(dampened), rtol=1e-9, atol=1e-12)
    assert not weights[..., 5].any() and weights[..., 4].all()  # the dead column's weights are zeroed
