"""DINOv2 backbone (Hugging Face `Dinov2Model` checkpoints), optionally with a token head.

Module and parameter names equal the checkpoint keys (`embeddings.*`, `encoder.layer.<i>.*`,
`layernorm.*`), so loading is `load_state_dict(strict=True)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..eventful.block import LayerOps
from ..eventful.counting import FlopCounter
from .base import EventfulViT, ParameterDerived, activation, config_from_dict
from .results import Detections

# The short side DINOv2 frames are resized to: a 768x576 frame gives 32x43 = 1376 patches, the
# resolution the CPU budget was designed for (518, the pretraining size, gives 37x49 = 1813).
DEFAULT_SHORT_SIDE = 448


@dataclass(frozen=True)
class Dinov2Config:
    """The fields of a Hugging Face `Dinov2Config` (config.json) that the model uses."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    mlp_ratio: float = 4
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    qkv_bias: bool = True
    layerscale_value: float = 1.0
    use_swiglu_ffn: bool = False
    use_mask_token: bool = True
    model_type: str = "dinov2"

    def __post_init__(self) -> None:
        if self.model_type != "dinov2":
            raise ValueError(f"expected model_type 'dinov2', got {self.model_type!r}")
        if self.use_swiglu_ffn:
            raise ValueError("DINOv2 checkpoints with use_swiglu_ffn=true (giant) are not supported")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Dinov2Config:
        return config_from_dict(cls, values)


class TokenHeadLike(Protocol):
    """What the model needs from a token head (see `models.token_head.TokenHead`)."""

    labels: list[str]

    def predict_with_scores(self, patch_tokens: torch.Tensor, grid: tuple[int, int], patch_size: int,
                            score_threshold: float) -> tuple[list[Detections], torch.Tensor]: ...


class PatchEmbeddings(nn.Module):
    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        p = config.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=p, stride=p)


class Embeddings(nn.Module):
    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        d, grid = config.hidden_size, config.image_size // config.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if config.use_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, d))  # pretraining only, kept for strict loading
        self.patch_embeddings = PatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, 1 + grid * grid, d))
        self._positions = ParameterDerived()  # the bicubic resampling costs ~2% of a cheap frame

    def forward(self, pixels: torch.Tensor, counter: FlopCounter) -> tuple[torch.Tensor, tuple[int, int]]:
        patches = counter.conv2d(self.patch_embeddings.projection, pixels)  # (B, D, h, w)
        grid = (patches.shape[2], patches.shape[3])
        patches = patches.flatten(2).transpose(1, 2)  # (B, h*w, D)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)  # (B, 1, D)
        tokens = torch.cat([cls, patches], dim=1)  # (B, 1 + h*w, D)
        positions = self._positions(self.position_embeddings, grid, lambda: self.interpolate_positions(grid))
        return tokens + positions, grid

    def interpolate_positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embeddings (1, 1 + h*w, D) for a patch grid (h, w), bicubic in float32."""
        table = self.position_embeddings
        side = round((table.shape[1] - 1) ** 0.5)
        if grid == (side, side):
            return table
        d = table.shape[-1]
        patch = table[:, 1:].reshape(1, side, side, d).permute(0, 3, 1, 2)  # (1, D, side, side)
        # float32: bicubic resampling in half precision visibly shifts the embeddings
        patch = F.interpolate(patch.float(), size=grid, mode="bicubic", align_corners=False)
        patch = patch.to(table.dtype).permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], d)  # (1, h*w, D)
        return torch.cat([table[:, :1], patch], dim=1)


class LayerScale(nn.Module):
    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((config.hidden_size,), config.layerscale_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.lambda1


class SelfAttention(nn.Module):
    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        d, bias = config.hidden_size, config.qkv_bias
        self.query, self.key, self.value = (nn.Linear(d, d, bias=bias) for _ in range(3))


class AttentionOutput(nn.Module):
    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


class Attention(nn.Module):
    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        self.attention = SelfAttention(config)
        self.output = AttentionOutput(config)


class Mlp(nn.Module):
    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        d, hidden = config.hidden_size, int(config.hidden_size * config.mlp_ratio)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)


class Layer(nn.Module):
    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        d, eps = config.hidden_size, config.layer_norm_eps
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.attention = Attention(config)
        self.layer_scale1 = LayerScale(config)
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = Mlp(config)
        self.layer_scale2 = LayerScale(config)

    def ops(self, config: Dinov2Config) -> LayerOps:
        attention = self.attention.attention
        return LayerOps(
            self.norm1, attention.query, attention.key, attention.value, self.attention.output.dense,
            self.layer_scale1, self.norm2, self.mlp.fc1, activation(config.hidden_act), self.mlp.fc2,
            self.layer_scale2, config.num_attention_heads,
        )


class Encoder(nn.Module):
    def __init__(self, config: Dinov2Config) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))


class Dinov2Model(EventfulViT):
    """DINOv2 ViT; `result.features` are the final layer-normed tokens (class token first).

    With a token `head` (the default detector) it also returns detections.
    """

    def __init__(self, config: Dinov2Config, short_side: int = DEFAULT_SHORT_SIDE,
                 head: TokenHeadLike | None = None) -> None:
        super().__init__()
        self.config = config
        self.patch_size = config.patch_size
        self.short_side = short_side
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = head
        self._build_blocks([layer.ops(config) for layer in self.encoder.layer])

    @property
    def labels(self) -> list[str]:
        """Class names the model can detect (empty for a plain backbone)."""
        return [] if self.head is None else list(self.head.labels)

    def embed(self, pixels: torch.Tensor, counter: FlopCounter) -> tuple[torch.Tensor, tuple[int, int]]:
        return self.embeddings(pixels, counter)

    def always_computed(self, n_tokens: int) -> list[int]:
        return [0]

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.layernorm(x)

    def detect(self, tokens: torch.Tensor, grid: tuple[int, int], counter: FlopCounter,
               score_threshold: float) -> tuple[Detections | None, torch.Tensor | None]:
        if self.head is None:
            return None, None
        (detections,), scores = self.head.predict_with_scores(
            tokens[:, 1:], grid=grid, patch_size=self.patch_size, score_threshold=score_threshold)
        return detections, scores
