"""Calibrated rounding (GPTQ) into llama.cpp's Q8_0 and Q4_0 blocks, for the tensors LoRA changed.

Why: our base ships as Q4_1 and an export copies the tensors the adapter left alone byte for
byte, so only the LoRA-touched matrices are rounded again. Rounding each weight to its nearest
level (what llama-quantize and gguf.quants do) moves every one of them onto a new 4-bit grid,
and the LoRA update, smaller than one 4-bit step, is mostly lost: the q4_0 export of a default
lab classifier then disagrees with it on ~4% of reviews. GPTQ (Frantar et al., 2022) rounds the
columns of a matrix one at a time and spreads each column's rounding error over the columns not
yet rounded, weighted by how the layer's inputs correlate (H = X^T X over calibration prompts),
so the layer's outputs on real inputs stay close to the unrounded ones. The files stay plain
Q8_0/Q4_0 blocks: llama.cpp reads them like any other.

Block layouts (ggml-common.h): a block covers 32 consecutive weights of a row and stores an f16
scale d, then for Q8_0 32 int8 values (w = d*q), for Q4_0 16 bytes of 4-bit values (w = d*(q-8);
byte i holds weight i in its low nibble and weight i+16 in its high one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BLOCK = 32
DAMPING = 0.01  # fraction of H's mean diagonal added to it: keeps the inverse well conditioned
# ~2,500 prompt tokens, more than the widest layer input (1,536); 128 reviews took 4x the time
# and agreed on one more test review of 261 at q8_0, none more at q4_0.
CALIBRATION_REVIEWS = 32


@dataclass(frozen=True)
class Grid:
    """A symmetric block format: levels lo..hi, d chosen so the largest-magnitude weight lands on `anchor`."""

    lo: int
    hi: int
    anchor: int  # llama.cpp: Q8_0 maps max|w| to 127; Q4_0 maps the signed extreme to -8


GRIDS = {"Q8_0": Grid(-127, 127, 127), "Q4_0": Grid(-8, 7, -8)}


def block_scales(block: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Per-row scale of a (rows, 32) block, rounded to f16 as the file stores it (llama.cpp's choice of d)."""
    extreme = block.gather(1, block.abs().argmax(dim=1, keepdim=True)).squeeze(1)
    d = extreme.abs() / grid.anchor if grid.anchor > 0 else extreme / grid.anchor
    return d.to(torch.float16).to(block.dtype)


def inverse_hessian_factor(hessian: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of H^-1 (dampened); columns no calibration input touched are zeroed in `weights`."""
    h = hessian.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    weights[:, dead] = 0.0
    h.diagonal().add_(DAMPING * torch.mean(torch.diag(h)))
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True)


def gptq_levels(weights: torch.Tensor, hessian: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """(levels int (rows, cols), scales (rows, cols/32)) for a weight matrix whose input is described by `hessian`."""
    w = weights.to(torch.float64).clone()
    rows, cols = w.shape
    u = inverse_hessian_factor(hessian.to(torch.float64), w)
    levels = torch.empty((rows, cols), dtype=torch.int32)
    scales = torch.empty((rows, cols // BLOCK), dtype=torch.float64)
    for start in range(0, cols, BLOCK):
        stop = start + BLOCK
        block, errors = w[:, start:stop], torch.zeros((rows, BLOCK), dtype=torch.float64)
        d = block_scales(block, grid)
        safe_d = torch.where(d == 0, torch.ones_like(d), d)
        scales[:, start // BLOCK] = d
        for j in range(BLOCK):
            q = torch.clamp(torch.round(block[:, j] / safe_d), grid.lo, grid.hi)
            q = torch.where(d == 0, torch.zeros_like(q), q)
            levels[:, start + j] = q.to(torch.int32)
            err = (block[:, j] - q * d) / u[start + j, start + j]
            block[:, j:] -= err[:, None] * u[start + j, start + j:stop][None, :]
            errors[:, j] = err
        w[:, stop:] -= errors @ u[start:stop, stop:]
    return levels, scales


def pack(levels: torch.Tensor, scales: torch.Tensor, kind: str) -> np.ndarray:
    """GGML bytes of `kind` blocks, shaped like gguf.quants.quantize's output (rows, bytes per row)."""
    rows, cols = levels.shape
    d = scales.to(torch.float16).numpy().reshape(rows, cols // BLOCK, 1).view(np.uint8)
    q = levels.numpy().reshape(rows, cols // BLOCK, BLOCK)
    if kind == "Q8_0":
        values = q.astype(np.int8).view(np.uint8)
    elif kind == "Q4_0":
        nibbles = (q + 8).astype(np.uint8)
        values = nibbles[..., :16] | (nibbles[..., 16:] << 4)
    else:
        raise ValueError(f"calibrated rounding supports Q8_0 and Q4_0, not {kind}")
    return np.concatenate([d, values], axis=-1).reshape(rows, -1)


def quantize_calibrated(weights: np.ndarray, hessian: torch.Tensor, kind: str) -> np.ndarray:
    """A (rows, cols) float matrix in `kind` blocks, rounded by GPTQ against `hessian` (cols x cols)."""
    levels, scales = gptq_levels(torch.from_numpy(np.asarray(weights, dtype=np.float32)), hessian, GRIDS[kind])
    return pack(levels, scales, kind)


def input_hessians(model, tokenizer, prompts: list[str], module_names: set[str], *, batch_size: int = 16) -> dict:
    """{module name: X^T X / tokens} (float64) of each named nn.Linear's inputs over `prompts`.

    Prompts run in padded batches; padding positions are left out. Layers fed the same tensor
    (q/k/v, gate/up) share one product."""
    sums: dict[str, torch.Tensor] = {}
    state = {"rows": None, "tokens": 0, "last": (None, None)}

    def hook_for(name):
        def hook(_module, inputs, _output):
            x = inputs[0]
            last_input, product = state["last"]
            if last_input is not x:
                rows = x.detach().reshape(-1, x.shape[-1])[state["rows"]]
                product = (rows.T @ rows).to(torch.float64)
                state["last"] = (x, product)
            sums[name] = sums.get(name, 0) + product
        return hook

    decoder = model.get_decoder()  # the blocks only: the output head's logits are not needed
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(hook_for(name)) for name in module_names]
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True)
                state["rows"] = batch["attention_mask"].reshape(-1).bool()
                state["tokens"] += int(state["rows"].sum())
                decoder(**batch)
    finally:
        tokenizer.padding_side = padding_side
        for handle in handles:
            handle.remove()
    return {name: total / state["tokens"] for name, total in sums.items()}
