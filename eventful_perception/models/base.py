"""What every model shares: frame -> tokens -> eventful or dense blocks -> features/detections.

Each backbone file only defines its embeddings, its layers' modules (checkpoint names), which
tokens are always computed, optional per-layer position offsets and its head.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..eventful.block import EventfulBlock, FrameStep, LayerOps
from ..eventful.counting import FlopCounter
from ..eventful.gate import TokenLayout
from ..eventful.policy import BudgetFraction, Policy, Prioritized, Threshold, detection_priority
from ..eventful.state import PatchGrid
from ..eventful.stream import Stream, StreamConfig
from ..reuse import Reused
from .preprocess import IMAGENET_MEAN, IMAGENET_STD, ModelInput, preprocess
from .results import Detections, Result, Usage

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}
ConfigT = TypeVar("ConfigT")


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function named `hidden_act` in a Hugging Face config."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def config_from_dict(cls: type[ConfigT], values: dict[str, Any]) -> ConfigT:
    """Build a frozen config dataclass from a config.json dict, ignoring keys it does not use."""
    return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


class ParameterDerived:
    """One tensor computed from a parameter (position embeddings resampled to a patch grid),
    remembered across frames: recomputed when the grid, the parameter's storage or its in-place
    version changes. Only in inference mode, so autograd never sees a remembered tensor."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: torch.Tensor | None = None

    def __call__(self, parameter: torch.Tensor, grid: tuple[int, int],
                 compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if not torch.is_inference_mode_enabled():
            return compute()
        key = (grid, parameter.data_ptr(), parameter._version, parameter.device, parameter.dtype)
        if key != self._key:
            self._key, self._value = key, compute()
        return self._value


def resolve_policy(budget: float, policy: Policy | None, threshold: float | None = None) -> Policy:
    """The policy for a frame: `policy` if given, else `Threshold(threshold)` if given, else the budget."""
    if policy is not None:
        return policy
    if threshold is not None:
        return Threshold(threshold)
    return BudgetFraction(budget)


def translate(pixels: torch.Tensor, x: int, y: int) -> torch.Tensor:
    """`pixels` (B, C, H, W) with the content moved x px right and y px down, edges replicated."""
    if x == 0 and y == 0:
        return pixels
    height, width = pixels.shape[-2:]
    padded = F.pad(pixels, (max(x, 0), max(-x, 0), max(y, 0), max(-y, 0)), mode="replicate")
    top, left = max(-y, 0), max(-x, 0)
    return padded[..., top:top + height, left:left + width]


class EventfulViT(nn.Module):
    """Base class of the models: `model(frame, stream, budget=...)`, `model.dense(frame)`.

    Subclasses set `patch_size`, `short_side`, `max_long_side`, `mean`, `std`, build their
    modules with checkpoint names, then call `_build_blocks(layer_ops)`.
    """

    patch_size: int
    short_side: int
    max_long_side: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    default_score_threshold = 0.5
    first_patch_token = 1  # patch tokens follow the class token (DINOv2 and YOLOS)

    def _build_blocks(self, layer_ops: list[LayerOps]) -> None:
        # Plain list: the blocks only reference modules already registered under checkpoint names.
        self.blocks = [EventfulBlock(ops) for ops in layer_ops]
        # built once per sequence length and device: no host-to-device copies in the frame loop
        self._layouts: dict[tuple[int, torch.device], TokenLayout] = {}

    # Per-model parts ------------------------------------------------------------------------
    def embed(self, pixels: torch.Tensor, counter: FlopCounter) -> tuple[torch.Tensor, tuple[int, int]]:
        """Pixels (B, 3, H, W) -> tokens (B, N, D) with position embeddings, and the patch grid."""
        raise NotImplementedError

    def always_computed(self, n_tokens: int) -> list[int]:
        """Indices of the tokens every gate must update (class, register, detection tokens)."""
        raise NotImplementedError

    def layer_offsets(self, grid: tuple[int, int]) -> list[torch.Tensor | None]:
        """Per-layer tensors added to each layer's output (YOLOS mid position embeddings)."""
        return [None] * len(self.blocks)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def detect(
        self, tokens: torch.Tensor, grid: tuple[int, int], counter: FlopCounter, score_threshold: float
    ) -> tuple[Detections | None, torch.Tensor | None]:
        """Detections in model-input pixels from the final tokens (1, N, D) (None for backbones),
        and each patch token's detection score (1, h*w) where a token head has one (else None)."""
        return None, None

    # Shared machinery -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype; `model.to(torch.bfloat16)` runs frames in bfloat16."""
        return next(self.parameters()).dtype

    def new_stream(self, config: StreamConfig | None = None, name: str = "") -> Stream:
        """A fresh stream (one per camera) holding all the state of the eventful computation."""
        return Stream(config, name)

    def preprocess(self, frame: np.ndarray, short_side: int | None = None) -> ModelInput:
        """RGB uint8 frame (H, W, 3) -> normalised model input (see `models.preprocess`), its
        short side resized to `short_side` (the model's own when None)."""
        return preprocess(frame, short_side or self.short_side, self.patch_size, self.max_long_side,
                          self.device, self.mean, self.std, self.dtype)

    def encode(
        self,
        pixels: torch.Tensor,
        counter: FlopCounter,
        stream: Stream | None = None,
        policy: Policy | None = None,
        reuse: Reused | None = None,
    ) -> tuple[torch.Tensor, tuple[int, int], list[int]]:
        """Final tokens (B, N, D), grid and tokens updated per block; dense when `stream` is None.
        `reuse`: a coarser stage's tokens, added to every layer's input (`reuse.FeatureReuse`)."""
        x, grid = self.embed(pixels, counter)
        reused = [None] * len(self.blocks) if reuse is None else reuse.offsets(
            grid, self.first_patch_token, x.shape[1], counter)
        if stream is not None:
            key = (x.shape[1], x.device)
            if key not in self._layouts:
                self._layouts[key] = TokenLayout.build(x.shape[1], self.always_computed(x.shape[1]), x.device)
            layout = self._layouts[key]
            step = FrameStep(policy, layout, stream.config, counter)
            states = stream.blocks(len(self.blocks))
        per_block = []
        for i, (block, offset) in enumerate(zip(self.blocks, self.layer_offsets(grid))):
            if reused[i] is not None:
                x = x + reused[i]
            if stream is None:
                x, updated = block.dense(x, counter), x.shape[1]
            else:
                x, updated = block.step(x, states[i], step)
            per_block.append(updated)
            if offset is not None:
                x = x + offset
        return self.final_norm(x), grid, per_block

    def forward(
        self,
        frame: np.ndarray,
        stream: Stream,
        budget: float = 0.3,
        policy: Policy | None = None,
        threshold: float | None = None,
        score_threshold: float | None = None,
        motion: tuple[float, float] | None = None,
        short_side: int | None = None,
        reuse: Reused | None = None,
    ) -> Result:
        """Process the next frame of `stream`, recomputing about `budget` of the tokens.

        `policy` (e.g. `TopR(200)`) overrides `budget`; `threshold` selects `Threshold(threshold)`
        instead. A frame after a new stream, a reset, a resolution change or a refresh is exact.
        `motion` (dx, dy): how far the image content moved since the stream's previous frame,
        in frame pixels (camera motion, e.g. from `GlobalMotion`); the stream's state then
        follows the content by whole patches (with `motion_alignment` "pixel" the frame is also
        translated by the remainder), so content that only moved is not recomputed.
        `short_side` overrides the model's input scale (use one stream per scale); `reuse`
        passes a coarser stage's tokens of the same frame on (DVT feature reuse).
        """
        start = time.perf_counter()
        policy = resolve_policy(budget, policy, threshold)
        model_input = self.preprocess(frame, short_side)
        # A new frame size resets the stream even when the model input keeps its size (640x480
        # and 320x240 both become 224x294): a camera mode change may change the field of view.
        full = stream.begin_frame((*model_input.original_size, *model_input.size))
        counter = FlopCounter()
        try:
            with torch.inference_mode():
                translation = (0, 0) if full or motion is None else self._follow(stream, motion, model_input)
                full = stream.empty
                if stream.priority is not None:
                    policy = Prioritized(policy, stream.priority)
                pixels = translate(model_input.pixels, *translation)
                tokens, grid, per_block = self.encode(pixels, counter, stream, policy, reuse)
                detections, scores = self._detections(tokens, grid, model_input, counter,
                                                      score_threshold, translation)
                stream.priority = None if scores is None or not stream.config.score_priority else (
                    detection_priority(scores, grid, stream.config.score_priority))
        except BaseException:
            stream.reset()  # a half-updated state would corrupt every later frame
            raise
        result = self._result(tokens, per_block, detections, grid, model_input, counter, start,
                              stream.frame_index, full)
        stream.end_frame()
        return result

    def _follow(self, stream: Stream, motion: tuple[float, float], model_input: ModelInput) -> tuple[int, int]:
        """Shift the stream's state after the content's `motion` (frame pixels); the translation
        (x, y) in model-input pixels that aligns this frame with it."""
        scale_x, scale_y = model_input.scale
        move, translation = stream.follow_motion(motion[0] / scale_x, motion[1] / scale_y, self.patch_size)
        if move != (0, 0):
            height, width = (side // self.patch_size for side in model_input.size)
            stream.shift(PatchGrid(self.first_patch_token, height, width), *move)
        return (0, 0) if stream.empty or stream.config.motion_alignment == "patch" else translation

    def dense(self, frame: np.ndarray, score_threshold: float | None = None,
              short_side: int | None = None, reuse: Reused | None = None) -> Result:
        """The plain (non-eventful) model on one frame; no state."""
        start = time.perf_counter()
        model_input = self.preprocess(frame, short_side)
        counter = FlopCounter()
        with torch.inference_mode():
            tokens, grid, per_block = self.encode(model_input.pixels, counter, reuse=reuse)
            detections, _ = self._detections(tokens, grid, model_input, counter, score_threshold)
        return self._result(tokens, per_block, detections, grid, model_input, counter, start, 0, True)

    def _detections(self, tokens, grid, model_input: ModelInput, counter: FlopCounter,
                    score_threshold: float | None, translation: tuple[int, int] = (0, 0)
                    ) -> tuple[Detections | None, torch.Tensor | None]:
        threshold = self.default_score_threshold if score_threshold is None else score_threshold
        detections, scores = self.detect(tokens, grid, counter, threshold)
        if detections is None:
            return None, scores
        return detections.shifted(-translation[0], -translation[1]).scaled(*model_input.scale), scores

    @staticmethod
    def _result(tokens, per_block, detections: Detections | None, grid, model_input: ModelInput,
                counter: FlopCounter, start: float, frame_index: int, full: bool) -> Result:
        # outside inference mode: the copy is an ordinary tensor the caller may modify
        features = tokens[0].to("cpu", torch.float32, copy=True)  # (N, D); also waits for an accelerator
        usage = Usage(
            tokens_updated=round(sum(per_block) / len(per_block)),
            tokens_total=tokens.shape[1],
            gflops=counter.gflops,
            gflops_dense=counter.gflops_dense,
            tokens_per_block=tuple(per_block),
            latency_ms=(time.perf_counter() - start) * 1e3,
        )
        return Result(features, usage, detections, grid, model_input.size, frame_index, full)
