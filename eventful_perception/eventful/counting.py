"""Operation counting from the shapes of the matmuls and linear layers actually executed.

Convention (as fvcore and the Eventful Transformers paper): one multiply-add = one FLOP, and only
matrix products are counted (linear layers, convolutions, attention matmuls); norms, softmax,
activations, gathers and scatters are not. For a ViT block over N tokens of width D with MLP
width D_mlp the dense count is 4*N*D^2 (q, k, v, output projection) + 2*N^2*D (q*k^T and
attention*v) + 2*N*D*D_mlp (MLP); the patch embedding adds N_patches*3*p^2*D and heads their own
linears. Every counted operation also records what it would have cost in the dense model, so each
frame reports both its GFLOPs and the dense-equivalent GFLOPs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FlopCounter:
    """Accumulates executed and dense-equivalent multiply-adds for one frame."""

    def __init__(self) -> None:
        self.macs = 0
        self.macs_dense = 0

    @property
    def gflops(self) -> float:
        return self.macs / 1e9

    @property
    def gflops_dense(self) -> float:
        return self.macs_dense / 1e9

    def add(self, macs: int, macs_dense: int) -> None:
        """Record `macs` executed multiply-adds that the dense model would do as `macs_dense`."""
        self.macs += int(macs)
        self.macs_dense += int(macs_dense)

    def linear(self, layer: nn.Linear, x: torch.Tensor, dense_rows: int) -> torch.Tensor:
        """`layer(x)` for x (..., in), counted; the dense model would apply it to `dense_rows` rows."""
        rows = x.numel() // x.shape[-1]
        per_row = layer.in_features * layer.out_features
        self.add(rows * per_row, dense_rows * per_row)
        return F.linear(x, layer.weight, layer.bias)

    def conv2d(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """`conv(x)`, counted as output elements x (in_channels / groups) x kernel area."""
        y = conv(x)
        per_output = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
        self.add(y.numel() * per_output, y.numel() * per_output)
        return y
