"""A lean inference forward for Llama-family decoders (SmolLM2, Llama, Qwen2), for classification.

The classifier needs one thing from the model: the final hidden state at each row's last
position, given a cached system-prompt prefix. transformers' generic forward pays, per call,
for flexibility we do not use (mask builders, cache bookkeeping, ~40 small ops per layer), and
it runs the last layer at every position although only the last one is read. On a CPU at
batch 1 that is a sizeable share of a ~100 ms call. This module computes the same function
with fewer, larger operations:

- q/k/v are one matmul and gate/up are one matmul (weights concatenated along the output);
  at ~30 tokens a matmul with a wider output keeps the CPU's vector units busier than three
  narrow ones.
- On a CPU with oneDNN (every x86 build of torch) the matmuls go through oneDNN's linear
  rather than MKL's sgemm. At 40 rows on a 2-core AVX2 EPYC, MKL ran the 576 x 3072 gate/up
  product at ~35 GFLOP/s and oneDNN at ~70; over one layer's four products 3.3 ms against
  5.8 ms. Elsewhere F.linear (the same arithmetic, the usual kernels).
- The last layer computes keys/values for every position (the attention needs them) but its
  query, attention output and MLP for the last position only.

The model's own Linear layers are re-pointed at views of the fused tensors, so the weights
exist once in memory and the transformers forward (used for the prefix cache and for labels of
several tokens) computes with exactly the same numbers. Results agree with the transformers
forward to float32 rounding (tests/mlcore/test_classifier.py compares them).

Only for a plain model in eval mode: a peft model with unmerged LoRA layers keeps the generic
path (its extra branches are not in the fused weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")


def supports(causal_lm) -> bool:
    """Whether FusedDecoder computes exactly what this model's own forward computes."""
    config = causal_lm.config
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES or config.hidden_act != "silu":
        return False
    if getattr(config, "pretraining_tp", 1) != 1 or getattr(config, "use_sliding_window", False):
        return False
    # Anything wrapped (peft LoRA layers, quantized linears) is not a plain nn.Linear.
    for layer in causal_lm.get_decoder().layers:
        attn, mlp = layer.self_attn, layer.mlp
        for module in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            if type(module) is not torch.nn.Linear:
                return False
    return True


def _fuse(linears: list[torch.nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One [sum(out), in] weight (and bias) for several Linear layers reading the same input;
    each layer's weight becomes a view into it (a block of rows), so nothing is stored twice."""
    weight = torch.cat([m.weight.detach() for m in linears]).contiguous()
    biases = [m.bias for m in linears]
    bias = torch.cat([b.detach() for b in biases]) if all(b is not None for b in biases) else None
    if bias is None and any(b is not None for b in biases):
        raise ValueError("cannot fuse linear layers where only some have a bias")
    start = 0
    for module in linears:
        width = module.out_features
        module.weight = torch.nn.Parameter(weight[start : start + width], requires_grad=False)
        if bias is not None:
            module.bias = torch.nn.Parameter(bias[start : start + width], requires_grad=False)
        start += width
    return weight, bias


@dataclass
class _Layer:
    norm1: torch.nn.Module
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    norm2: torch.nn.Module
    gate_up: torch.Tensor
    down: torch.Tensor


def _onednn_linear(x, weight, bias):
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def pick_linear(weight: torch.Tensor):
    """oneDNN's linear for float32 weights on a CPU where torch has it and it computes what
    F.linear does (checked once on this weight); F.linear otherwise."""
    usable = (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )
    if usable:
        probe = torch.randn(2, 3, weight.shape[1], generator=torch.Generator().manual_seed(0))
        try:
            usable = torch.allclose(_onednn_linear(probe, weight, None), F.linear(probe, weight), rtol=1e-4, atol=1e-4)
        except RuntimeError:  # an op that exists but refuses this build or shape
            usable = False
    return _onednn_linear if usable else F.linear


class FusedDecoder:
    @classmethod
    def of(cls, causal_lm) -> FusedDecoder:
        """The model's FusedDecoder, made on first use: several Classifiers on one model (zero-
        and few-shot prompts, say) share it rather than fuse the weights again."""
        fused = getattr(causal_lm, "_tunelab_fused", None)
        if fused is None:
            fused = cls(causal_lm)
            causal_lm._tunelab_fused = fused
        return fused

    def __init__(self, causal_lm):
        if not supports(causal_lm):
            raise ValueError(f"{type(causal_lm).__name__} is not a plain Llama-family model")
        config = causal_lm.config
        body = causal_lm.get_decoder()
        self.embed = body.embed_tokens
        self.rotary = body.rotary_emb
        self.norm = body.norm
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.layers = []
        with torch.no_grad():
            for layer in body.layers:
                attn, mlp = layer.self_attn, layer.mlp
                qkv, qkv_bias = _fuse([attn.q_proj, attn.k_proj, attn.v_proj])
                o, o_bias = _fuse([attn.o_proj])
                gate_up, _ = _fuse([mlp.gate_proj, mlp.up_proj])
                down, down_bias = _fuse([mlp.down_proj])
                if down_bias is not None or mlp.gate_proj.bias is not None:
                    raise ValueError("MLP biases are not supported")
                self.layers.append(
                    _Layer(layer.input_layernorm, qkv, qkv_bias, o, o_bias, layer.post_attention_layernorm, gate_up, down)
                )
        self.scale = self.head_dim**-0.5
        self.linear = pick_linear(self.layers[0].qkv)

    # Two steps written as methods so that mlcore.onnx_serving can export the same function in
    # the form its runtime computes fastest (same maths, other operations).

    def _batch_prefix(self, prefix_kv, batch: int) -> list:
        """Per layer, the prefix's (keys, values) for every row of the batch: views, no copy."""
        return [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in prefix_kv]

    def _attend(self, q, k, v, mask):
        """Attention of q [B, heads, T, D] over k, v [B, kv_heads, S, D]: each group of
        heads // kv_heads query heads reads one key/value head."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=True)

    @staticmethod
    def _rotate(x, cos, sin):
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def last_hidden(self, input_ids, key_mask, position_ids, prefix_kv) -> torch.Tensor:
        """[batch, hidden]: the final-norm hidden state at each row's last position.

        input_ids [B, T] are left-padded; key_mask [B, P + T] marks real tokens (prefix
        included); position_ids [B, T]; prefix_kv is, per layer, (keys, values) of the P
        prefix tokens as transformers caches them ([1, kv_heads, P, head_dim], rotary applied).
        """
        batch, width = input_ids.shape
        prefix_len = key_mask.shape[1] - width
        x = self.embed(input_ids)
        cos, sin = (t.unsqueeze(1) for t in self.rotary(x, position_ids))  # [B, 1, T, D]
        # Query i sees every real key up to its own position; it always sees itself, so a pad
        # row never has an all-masked softmax (its output is never read).
        causal = torch.ones(width, width, dtype=torch.bool, device=x.device).tril()
        visible = key_mask.bool()[:, None, :].repeat(1, width, 1)
        visible[:, :, prefix_len:] &= causal
        visible[:, :, prefix_len:] |= torch.eye(width, dtype=torch.bool, device=x.device)
        visible = visible[:, None]  # [B, 1, T, P + T]
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        last_index = len(self.layers) - 1
        prefix_kv = self._batch_prefix(prefix_kv, batch)
        for index, layer in enumerate(self.layers):
            h = layer.norm1(x)
            qkv = self.linear(h, layer.qkv, layer.qkv_bias)
            q, k, v = qkv.split((q_size, kv_size, kv_size), dim=-1)
            rows = q.shape[1]
            q = q.view(batch, rows, self.n_heads, self.head_dim).transpose(1, 2)
            k = k.view(batch, rows, self.n_kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(batch, rows, self.n_kv_heads, self.head_dim).transpose(1, 2)
            q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
            past_k, past_v = prefix_kv[index]
            k = torch.cat((past_k, k), dim=2)
            v = torch.cat((past_v, v), dim=2)
            mask = visible
            if index == last_index:  # only the last position is read after this layer
                q, x, mask = q[:, :, -1:], x[:, -1:], visible[:, :, -1:]
            out = self._attend(q, k, v, mask)
            out = self.linear(out.transpose(1, 2).reshape(batch, q.shape[2], q_size), layer.o, layer.o_bias)
            x = x + out
            gate, up = self.linear(layer.norm2(x), layer.gate_up, None).chunk(2, dim=-1)
            x = x + self.linear(F.silu(gate) * up, layer.down, None)
        return self.norm(x[:, -1])
