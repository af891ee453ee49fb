"""Training with LoRA in the top blocks only: the frozen blocks below run once per example.

With LoRA in blocks K..L-1 of an L-block decoder, blocks 0..K-1 are the frozen base model: the
hidden state entering block K is a fixed function of the example. So we compute it once (no
grad), keep it ([tokens, hidden] floats, ~70 KB per review for SmolLM2), and every later epoch,
validation pass and the final test scoring (fine-tuned and zero-shot alike) start from it. No
backward runs below block K either. It is exact: the same function, only computed once.

The blocks are run by our own code rather than transformers' forward (like mlcore.fused, for
Llama-family decoders), calling the model's modules so that peft's LoRA layers apply:
- the shared system-prompt prefix runs once per batch and its keys/values are broadcast to
  every row (the gradient of the expand() sums the rows' contributions into the one pass);
- rows are right-padded with a plain causal mask: a real token never sees a later pad;
- the last block computes its attention output and MLP only at the positions whose output is
  read (the supervised ones: 2 of ~30 per review), its keys/values at all of them.

tests/mlcore/test_training.py checks loss and gradients against transformers' forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")


def supports(causal_lm) -> bool:
    """Whether our block code computes exactly what this model's own forward computes."""
    config = causal_lm.config
    return (
        getattr(config, "model_type", None) in SUPPORTED_MODEL_TYPES
        and config.hidden_act == "silu"
        and getattr(config, "pretraining_tp", 1) == 1
        and not getattr(config, "use_sliding_window", False)
    )


def first_trainable_block(causal_lm) -> int:
    """Index of the lowest block holding a trainable parameter (len(layers) if none)."""
    layers = causal_lm.get_decoder().layers
    for index, layer in enumerate(layers):
        if any(p.requires_grad for p in layer.parameters()):
            return index
    return len(layers)


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _block(layer, x, cos, sin, mask, past=None, rows=None, kv_only=False):
    """One decoder block on x [B, T, d]. Returns (output, (keys, values) incl. `past`).

    past: (keys, values) [1, kv_heads, P, head_dim] of a shared prefix, broadcast to B rows.
    rows: a [B, T] bool mask; the output is then [n_rows, d], those positions only.
    kv_only: return (None, kv) without the attention output and MLP (the prefix's last block).
    """
    attn = layer.self_attn
    batch, width, _ = x.shape
    head_dim = attn.head_dim
    h = layer.input_layernorm(x)
    k = _rotate(attn.k_proj(h).view(batch, width, -1, head_dim).transpose(1, 2), cos, sin)
    v = attn.v_proj(h).view(batch, width, -1, head_dim).transpose(1, 2)
    if past is not None:
        k = torch.cat((past[0].expand(batch, -1, -1, -1), k), dim=2)
        v = torch.cat((past[1].expand(batch, -1, -1, -1), v), dim=2)
    if kv_only:
        return None, (k, v)
    q = _rotate(attn.q_proj(h).view(batch, width, -1, head_dim).transpose(1, 2), cos, sin)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling, enable_gqa=True)
    out = out.transpose(1, 2).reshape(batch, width, -1)
    if rows is not None:
        out, x = out[rows], x[rows]
    x = x + attn.o_proj(out)
    return x + layer.mlp(layer.post_attention_layernorm(x)), (k, v)


class SplitDecoder:
    """The decoder cut at block `start`: frozen below (run once per example), trained above."""

    def __init__(self, causal_lm, start: int, prefix_ids: list[int]):
        body = causal_lm.get_decoder()
        self.embed, self.rotary, self.norm = body.embed_tokens, body.rotary_emb, body.norm
        self.lower, self.upper = list(body.layers[:start]), list(body.layers[start:])
        self.start = start
        self.prefix_len = len(prefix_ids)
        self.device = self.embed.weight.device
        self.prefix_kv: list = []  # the prefix's keys/values in the frozen blocks
        self.prefix_hidden = None  # [1, P, d] entering block `start`
        if prefix_ids:
            with torch.no_grad():
                x = self.embed(torch.tensor([prefix_ids], device=self.device))
                cos, sin = self._rotary(x, 0, self.prefix_len)
                mask = self._mask(self.prefix_len, 0)
                for layer in self.lower:
                    x, kv = _block(layer, x, cos, sin, mask)
                    self.prefix_kv.append(kv)
                self.prefix_hidden = x

    def _rotary(self, x, offset: int, width: int):
        positions = torch.arange(offset, offset + width, device=self.device)[None]
        return tuple(t.unsqueeze(1) for t in self.rotary(x, positions))

    def _mask(self, width: int, past: int):
        """[width, past + width]: the prefix is visible to all; causal after it."""
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
        return torch.cat((causal.new_ones(width, past), causal), dim=1)

    @torch.no_grad()
    def frozen_hidden(self, rows: list[list[int]]) -> list[torch.Tensor]:
        """Per row of token ids (what follows the prefix): [len, d] entering block `start`."""
        width = max(map(len, rows))
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)  # right padding: never seen by a real token
        x = self.embed(ids.to(self.device))
        cos, sin = self._rotary(x, self.prefix_len, width)
        mask = self._mask(width, self.prefix_len)
        for layer, past in zip(self.lower, self.prefix_kv or [None] * len(self.lower), strict=True):
            x, _ = _block(layer, x, cos, sin, mask, past)
        return [x[i, : len(row)].clone() for i, row in enumerate(rows)]

    def forward(self, hidden: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states [n, d] at the `rows` positions ([B, T] bool mask).

        hidden: per example, frozen_hidden()'s [len, d]; T is their longest length.
        """
        width = rows.shape[1]
        x = torch.zeros(len(hidden), width, hidden[0].shape[-1], dtype=hidden[0].dtype, device=self.device)
        for i, h in enumerate(hidden):
            x[i, : len(h)] = h
        pasts = self._prefix_upper() if self.prefix_len else [None] * len(self.upper)
        cos, sin = self._rotary(x, self.prefix_len, width)
        mask = self._mask(width, self.prefix_len)
        last = len(self.upper) - 1
        for index, (layer, past) in enumerate(zip(self.upper, pasts, strict=True)):
            x, _ = _block(layer, x, cos, sin, mask, past, rows=rows if index == last else None)
        if not self.upper:
            x = x[rows]
        return self.norm(x)

    def _prefix_upper(self) -> list:
        """The prefix's keys/values in the trained blocks: once per batch, with grad."""
        x = self.prefix_hidden
        cos, sin = self._rotary(x, 0, self.prefix_len)
        mask = self._mask(self.prefix_len, 0)
        kvs = []
        for index, layer in enumerate(self.upper):
            x, kv = _block(layer, x, cos, sin, mask, kv_only=index == len(self.upper) - 1)
            kvs.append(kv)
        return kvs
