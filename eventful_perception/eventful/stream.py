"""Per-camera state: every reference, buffer and attention cache of one video stream."""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Above this fraction of changed tokens torch's fused dense attention is faster: measured with
# benchmarks/bench_core.py (DINOv2-S, 1377 tokens, 2-core CPU): equal at 15%, sparse 1.6x at 10%.
SPARSE_ATTENTION_MAX_FRACTION = 0.15
_ATTENTION_MODES = ("auto", "sparse", "dense")
_CACHE_DTYPES = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class StreamConfig:
    """How a stream trades accuracy, speed and memory.

    refresh_interval: recompute every token every K frames (0 = never; the library default).
    attention: "auto" picks the sparse attention update while at most `sparse_max_fraction` of
        the tokens changed and torch's fused dense attention otherwise; "sparse" / "dense" force one.
    cache_dtype: dtype of the sparse attention's N x N cache of exp-logits (per block and head:
        N^2 values, ~0.55 GB per stream in float32 for DINOv2-S at 1377 tokens); bfloat16 halves it
        at ~3 significant digits of attention weights.
    """

    refresh_interval: int = 0
    attention: str = "auto"
    sparse_max_fraction: float = SPARSE_ATTENTION_MAX_FRACTION
    cache_dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if not isinstance(self.refresh_interval, int) or self.refresh_interval < 0:
            raise ValueError(f"refresh_interval must be an int >= 0, got {self.refresh_interval!r}")
        if self.attention not in _ATTENTION_MODES:
            raise ValueError(f"attention must be one of {_ATTENTION_MODES}, got {self.attention!r}")
        if not 0.0 <= self.sparse_max_fraction <= 1.0:
            raise ValueError(f"sparse_max_fraction must be in [0, 1], got {self.sparse_max_fraction!r}")
        if self.cache_dtype not in _CACHE_DTYPES:
            raise ValueError(f"cache_dtype must be one of {_CACHE_DTYPES}, got {self.cache_dtype!r}")


class Scope:
    """The slice of a stream's state that belongs to one module (keys prefixed by its name)."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        self._state = state
        self._prefix = prefix

    def get(self, key: str) -> torch.Tensor | None:
        return self._state.get(f"{self._prefix}.{key}")

    def put(self, key: str, value: torch.Tensor) -> None:
        self._state[f"{self._prefix}.{key}"] = value

    def drop(self, *keys: str) -> None:
        for key in keys:
            self._state.pop(f"{self._prefix}.{key}", None)


class Stream:
    """All state of one video stream (one camera); the model's weights are shared and stateless.

    A new or reset stream computes every token of its next frame. The model resets a stream by
    itself when the input resolution changes and, with `config.refresh_interval` K > 0, every K
    frames. Use one stream per camera; the same model can serve any number of streams.
    """

    def __init__(self, config: StreamConfig | None = None, name: str = "") -> None:
        self.config = config or StreamConfig()
        self.name = name
        self._state: dict[str, torch.Tensor] = {}
        self._input_size: tuple[int, ...] | None = None
        self._frame_index = 0
        self._frames_since_reset = 0

    @property
    def frame_index(self) -> int:
        """Frames processed by this stream since it was created."""
        return self._frame_index

    @property
    def frames_since_reset(self) -> int:
        """Frames processed since the last reset (automatic resets included)."""
        return self._frames_since_reset

    def reset(self) -> None:
        """Forget all state; the next frame recomputes every token."""
        self._state.clear()
        self._frames_since_reset = 0

    def memory_bytes(self) -> int:
        """Bytes held by this stream's tensors."""
        return sum(t.numel() * t.element_size() for t in self._state.values())

    def snapshot(self) -> dict[str, torch.Tensor]:
        """Copies of every state tensor, for inspection."""
        return {key: value.clone() for key, value in self._state.items()}

    def begin_frame(self, input_size: tuple[int, ...]) -> bool:
        """Prepare for a frame of `input_size`; True when every token will be recomputed."""
        interval = self.config.refresh_interval
        if input_size != self._input_size or (interval and self._frames_since_reset % interval == 0):
            self.reset()
        self._input_size = tuple(input_size)
        return not self._state

    def end_frame(self) -> None:
        self._frame_index += 1
        self._frames_since_reset += 1

    def scope(self, prefix: str) -> Scope:
        """The state of the module named `prefix` (used by eventful blocks)."""
        return Scope(self._state, prefix)
