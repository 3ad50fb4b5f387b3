"""YOLOS detector (Hugging Face `YolosForObjectDetection` checkpoints).

A plain ViT whose sequence is [class token, patches, detection tokens]; each detection token
predicts one box (cx, cy, w, h relative to the image) and class logits (last = no object). The
class and detection tokens are always computed; only patch tokens are gated. Preprocessing
follows the checkpoint's `preprocessor_config.json` (short side `shortest_edge`, long side at most
`longest_edge`, its mean/std; transformers' defaults 800/1333 without one), except that both sides
are rounded to a multiple of the patch size instead of padding, so no pixels are dropped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..eventful.block import LayerOps
from ..eventful.counting import FlopCounter
from .base import EventfulViT, ParameterDerived, activation, config_from_dict
from .preprocess import IMAGENET_MEAN, IMAGENET_STD
from .results import Detections


@dataclass(frozen=True)
class YolosConfig:
    """The fields of a Hugging Face `YolosConfig` (config.json) that the model uses."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    image_size: tuple[int, int] = (800, 1333)
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    num_detection_tokens: int = 100
    use_mid_position_embeddings: bool = True
    labels: tuple[str, ...] = ("LABEL_0", "LABEL_1")
    model_type: str = "yolos"

    def __post_init__(self) -> None:
        if self.model_type != "yolos":
            raise ValueError(f"expected model_type 'yolos', got {self.model_type!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        object.__setattr__(self, "image_size", tuple(self.image_size))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> YolosConfig:
        """From config.json; class names come from `id2label` (or `num_labels` generic names)."""
        if "id2label" in values:
            id2label = {int(k): v for k, v in values["id2label"].items()}
            labels = tuple(id2label[i] for i in range(len(id2label)))
        else:
            labels = tuple(f"LABEL_{i}" for i in range(values.get("num_labels", 2)))
        return config_from_dict(cls, {**values, "labels": labels})


@dataclass(frozen=True)
class ImageProcessorSettings:
    """The parts of a YOLOS `preprocessor_config.json` this package follows."""

    short_side: int = 800
    max_long_side: int | None = 1333
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def read_image_processor(folder: Path) -> ImageProcessorSettings:
    """Settings from `folder/preprocessor_config.json`, or transformers' YOLOS defaults."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return ImageProcessorSettings()
    values = json.loads(path.read_text())
    size = values.get("size", {})
    if isinstance(size, int):  # older processors: "size": 800, "max_size": 1333
        size = {"shortest_edge": size, "longest_edge": values.get("max_size")}
    defaults = ImageProcessorSettings()
    return ImageProcessorSettings(
        size.get("shortest_edge", defaults.short_side),
        size.get("longest_edge", defaults.max_long_side),
        tuple(values.get("image_mean", defaults.mean)),
        tuple(values.get("image_std", defaults.std)),
    )


def _interpolate_patches(table: torch.Tensor, config: YolosConfig, grid: tuple[int, int]) -> torch.Tensor:
    """Resample the patch part of position tables (L, S, D) laid out [cls, patches, det] to `grid`."""
    t, p = config.num_detection_tokens, config.patch_size
    base = (config.image_size[0] // p, config.image_size[1] // p)
    if grid == base:
        return table
    layers, _, d = table.shape
    patch = table[:, 1:-t].transpose(1, 2).reshape(layers, d, *base)  # (L, D, h0, w0)
    patch = F.interpolate(patch.float(), size=grid, mode="bicubic", align_corners=False).to(table.dtype)
    patch = patch.flatten(2).transpose(1, 2)  # (L, h*w, D)
    return torch.cat([table[:, :1], patch, table[:, -t:]], dim=1)  # (L, 1 + h*w + T, D)


class PatchEmbeddings(nn.Module):
    def __init__(self, config: YolosConfig) -> None:
        super().__init__()
        p = config.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=p, stride=p)


class Embeddings(nn.Module):
    def __init__(self, config: YolosConfig) -> None:
        super().__init__()
        d, p, t = config.hidden_size, config.patch_size, config.num_detection_tokens
        patches = (config.image_size[0] // p) * (config.image_size[1] // p)
        self.config = config
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.detection_tokens = nn.Parameter(torch.zeros(1, t, d))
        self.patch_embeddings = PatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, 1 + patches + t, d))
        self._positions = ParameterDerived()

    def forward(self, pixels: torch.Tensor, counter: FlopCounter) -> tuple[torch.Tensor, tuple[int, int]]:
        patches = counter.conv2d(self.patch_embeddings.projection, pixels)  # (B, D, h, w)
        grid = (patches.shape[2], patches.shape[3])
        patches = patches.flatten(2).transpose(1, 2)  # (B, h*w, D)
        b = patches.shape[0]
        cls, det = self.cls_token.expand(b, -1, -1), self.detection_tokens.expand(b, -1, -1)
        tokens = torch.cat([cls, patches, det], dim=1)  # (B, 1 + h*w + T, D)
        table = self.position_embeddings
        positions = self._positions(table, grid, lambda: _interpolate_patches(table, self.config, grid))
        return tokens + positions, grid


class SelfAttention(nn.Module):
    def __init__(self, config: YolosConfig) -> None:
        super().__init__()
        d, bias = config.hidden_size, config.qkv_bias
        self.query, self.key, self.value = (nn.Linear(d, d, bias=bias) for _ in range(3))


class Dense(nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class Attention(nn.Module):
    def __init__(self, config: YolosConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(config)
        self.output = Dense(config.hidden_size, config.hidden_size)


class Layer(nn.Module):
    def __init__(self, config: YolosConfig) -> None:
        super().__init__()
        d, eps = config.hidden_size, config.layer_norm_eps
        self.attention = Attention(config)
        self.intermediate = Dense(d, config.intermediate_size)
        self.output = Dense(config.intermediate_size, d)
        self.layernorm_before = nn.LayerNorm(d, eps=eps)
        self.layernorm_after = nn.LayerNorm(d, eps=eps)

    def ops(self, config: YolosConfig) -> LayerOps:
        attention = self.attention.attention
        return LayerOps(
            self.layernorm_before, attention.query, attention.key, attention.value,
            self.attention.output.dense, nn.Identity(), self.layernorm_after, self.intermediate.dense,
            activation(config.hidden_act), self.output.dense, nn.Identity(), config.num_attention_heads,
        )


class Encoder(nn.Module):
    def __init__(self, config: YolosConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        if config.use_mid_position_embeddings:
            p = config.patch_size
            length = 1 + (config.image_size[0] // p) * (config.image_size[1] // p) + config.num_detection_tokens
            self.mid_position_embeddings = nn.Parameter(
                torch.zeros(config.num_hidden_layers - 1, 1, length, config.hidden_size))


class Vit(nn.Module):
    def __init__(self, config: YolosConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class MlpHead(nn.Module):
    def __init__(self, d: int, d_out: int, depth: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(d, d_out if i == depth - 1 else d) for i in range(depth))

    def forward(self, x: torch.Tensor, counter: FlopCounter) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        for i, layer in enumerate(self.layers):
            x = counter.linear(layer, x, rows)
            x = F.relu(x) if i < len(self.layers) - 1 else x
        return x


class YolosForObjectDetection(EventfulViT):
    """YOLOS: ViT + detection tokens + class/box MLP heads; labels from the config's id2label."""

    def __init__(self, config: YolosConfig, processor: ImageProcessorSettings = ImageProcessorSettings(),
                 short_side: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.patch_size = config.patch_size
        self.short_side = short_side or processor.short_side
        self.max_long_side = None if short_side else processor.max_long_side
        self.mean, self.std = processor.mean, processor.std
        self.vit = Vit(config)
        self.class_labels_classifier = MlpHead(config.hidden_size, len(config.labels) + 1)
        self.bbox_predictor = MlpHead(config.hidden_size, 4)
        self._build_blocks([layer.ops(config) for layer in self.vit.encoder.layer])
        self._mid_positions = ParameterDerived()  # 11 bicubic resamplings per frame otherwise

    @property
    def labels(self) -> list[str]:
        """Class names, indexed by class id."""
        return list(self.config.labels)

    def embed(self, pixels: torch.Tensor, counter: FlopCounter) -> tuple[torch.Tensor, tuple[int, int]]:
        return self.vit.embeddings(pixels, counter)

    def always_computed(self, n_tokens: int) -> list[int]:
        return [0, *range(n_tokens - self.config.num_detection_tokens, n_tokens)]

    def layer_offsets(self, grid: tuple[int, int]) -> list[torch.Tensor | None]:
        if not self.config.use_mid_position_embeddings:
            return [None] * len(self.blocks)
        table = self.vit.encoder.mid_position_embeddings  # (L-1, 1, S, D)
        mid = self._mid_positions(table, grid, lambda: _interpolate_patches(table[:, 0], self.config, grid))
        return [*mid.unsqueeze(1), None]  # each (1, S', D)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.layernorm(x)

    def head_outputs(self, tokens: torch.Tensor, counter: FlopCounter) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (B, T, C+1) and boxes (B, T, 4) as cx, cy, w, h in 0..1 from final tokens."""
        det = tokens[:, -self.config.num_detection_tokens:]  # (B, T, D)
        return self.class_labels_classifier(det, counter), self.bbox_predictor(det, counter).sigmoid()

    def detect(self, tokens: torch.Tensor, grid: tuple[int, int], counter: FlopCounter,
               score_threshold: float) -> tuple[Detections, None]:
        logits, boxes = self.head_outputs(tokens, counter)
        scores, classes = logits[0].softmax(dim=-1)[:, :-1].max(dim=-1)  # (T,), no-object excluded
        keep = scores > score_threshold
        cx, cy, w, h = boxes[0, keep].unbind(-1)
        height, width = grid[0] * self.patch_size, grid[1] * self.patch_size
        xyxy = torch.stack([(cx - w / 2) * width, (cy - h / 2) * height,
                            (cx + w / 2) * width, (cy + h / 2) * height], dim=-1)  # (K, 4)
        labels = [self.config.labels[i] for i in classes[keep].tolist()]
        return Detections(xyxy.float().cpu().numpy(), scores[keep].float().cpu().numpy(), labels), None
