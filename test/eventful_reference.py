"""A plain Eventful Transformer, written from the paper's equations over transformers' DINOv2.

Independent of `eventful_perception.eventful`: the oracle for partial budgets. Per layer
(Dutson, Li, Gupta, ICCV 2023, Sec. 3-4), with r = ceil(budget * patch tokens):
  gate    e_i = ||x_i - ref_i||_2; select the r patch tokens of largest e (the class token
          always); ref_i = x_i for the selected tokens only
  buffer  out_i = f(x_i) for the selected tokens; every other row keeps its last value
  attention  softmax(q k^T / sqrt(d_h)) v over the buffered q, k, v, every row
Gates sit before q/k/v (after norm1), before the output projection and before the MLP
(after norm2). The first frame computes every token.
"""
from __future__ import annotations

import math

import torch


class ReferenceEventfulDinov2:
    """One stream of a Hugging Face `Dinov2Model` run eventfully at a fixed budget."""

    def __init__(self, hf_model, budget: float) -> None:
        self.hf, self.budget = hf_model, budget
        self.references: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (1, 3, H, W) -> final normalised tokens (N, D)."""
        x = self.hf.embeddings(pixels)[0]  # (N, D), class token first
        for i, layer in enumerate(self.hf.encoder.layer):
            x = self._layer(i, layer, x)
        return self.hf.layernorm(x)

    def _layer(self, i: int, layer, x: torch.Tensor) -> torch.Tensor:
        attention = layer.attention
        qkv = self._gated(f"{i}.qkv", layer.norm1(x), lambda t: torch.cat(
            [attention.q_proj(t), attention.k_proj(t), attention.v_proj(t)], dim=-1))
        attended = _attention(qkv, self.hf.config.num_attention_heads)
        x = x + self._gated(f"{i}.proj", attended, lambda t: layer.layer_scale1(attention.o_proj(t)))
        return x + self._gated(f"{i}.mlp", layer.norm2(x), lambda t: layer.layer_scale2(layer.mlp(t)))

    def _gated(self, key: str, x: torch.Tensor, op) -> torch.Tensor:
        reference = self.references.get(key)
        if reference is None:
            self.references[key] = x.clone()
            self.buffers[key] = op(x)
            return self.buffers[key].clone()
        errors = torch.linalg.vector_norm(x - reference, dim=-1)  # (N,)
        errors[0] = math.inf  # the class token is always updated
        selected = errors.topk(1 + math.ceil(self.budget * (x.shape[0] - 1))).indices
        reference[selected] = x[selected]
        self.buffers[key][selected] = op(x[selected])
        return self.buffers[key].clone()


def _attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    # qkv (N, 3D) -> (N, D), softmax written out rather than torch's fused kernel
    n, d = qkv.shape[0], qkv.shape[1] // 3
    q, k, v = (part.reshape(n, heads, -1).transpose(0, 1) for part in qkv.split(d, dim=-1))  # (H, N, dh)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # (H, N, N)
    return (weights @ v).transpose(0, 1).reshape(n, d)
