"""Per-camera state: every reference, buffer and attention state of one video stream."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .state import BlockState, PatchGrid

# Attention "auto" uses the exact sparse update while at most this fraction of the tokens
# changed and fused dense attention above it: measured with `eventful-perception bench`
# (DINOv2-S, 1377 tokens, 2-core CPU): equal at 15%, sparse 1.6x faster at 10%.
SPARSE_ATTENTION_MAX_FRACTION = 0.15
ATTENTION_MODES = ("query_rows", "sparse", "dense", "auto")
MOTION_ALIGNMENTS = ("pixel", "patch")
_CACHE_DTYPES = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class StreamConfig:
    """How a stream trades accuracy, speed and memory.

    refresh_interval: recompute every token every K frames (0 = never; the library default).
    attention: how a block's attention follows the tokens its q/k/v gate selected. All modes
        are exact at budget 1.0 and on a stream's first frame. Measured with `eventful-perception
        bench` (default detector, vtest.avi, 1377 tokens, 1 CPU thread; README "Performance"):
        "query_rows" (default): recompute the rows of the selected queries against every
            buffered key and value (fused attention, 2*M*N*D), keep every other row's output
            from its last update. An approximation beyond the paper: a query that was not
            selected ignores other tokens' new keys/values until it is selected again. Fastest
            at every budget (4.6x dense at budget 0.15, 6.0x at 0.1; mAP50 vs dense 0.992 and
            0.976); state O(N*D) (~0.23 GB per stream).
        "sparse": the paper's exact update (cached exp-logits, numerator and denominator per
            block and head, updated by deltas from the changed rows and columns): equals dense
            attention over the buffered q/k/v; state O(N^2) per head (~0.8 GB per stream).
        "dense": fused dense attention over the buffered q/k/v (exact, N^2*D per frame, no
            cache; ~0.2 GB per stream).
        "auto": exact and the faster of the two exact modes per frame: "sparse" while at most
            `sparse_max_fraction` of the tokens changed, "dense" above.
    cache_dtype: dtype of the "sparse" mode's N x N cache of exp-logits; bfloat16 halves it at
        ~3 significant digits of attention weights.
    motion_alignment: with camera motion given to the model (motion-compensated gating), the
        state follows the content by whole patches ("patch", the default) and, with "pixel",
        the frame is also translated by the remaining sub-patch motion, so unchanged content
        meets its own reference. Measured with `bench --ladder` (mAP50 vs the dense model on
        the untranslated frames, README "Performance"): "pixel" loses fidelity even on a static
        camera (0.95 at budgets 0.3-0.8: the head's scores depend on the patch grid's phase) and
        on a pan stays near 0.89 at budgets 0.2-0.5 (0.93 vs 0.64 uncompensated at 0.1,
        test_motion.py); "patch" equals no compensation on a static camera and, without
        `score_priority` (and before the head's box voting), kept more on a pan at every budget
        (0.977 vs 0.960 at 0.5), so the granularity controller uses it for a moving camera. With
        `score_priority` it helps at budget 0.2 on the pan and on bikes.mp4 and is mixed above
        (README "Performance").
    score_priority: detection-aware gating (beyond the paper). With a token head, every gate's
        errors are multiplied by 1 + score_priority * the previous frame's highest detection
        score within one patch (`policy.detection_priority`), so at a fixed budget the tokens
        of objects are recomputed before equally changed background. The cost stays the budget.
        Chosen on 120 frames of vtest.avi (0-41, 200-241, 400-441; default detector, scored as
        `bench` scores, mAP50 vs dense at budgets 0.25 / 0.15 / 0.1): 0 gives 0.990 / 0.989 /
        0.985, 4 (the default) 0.9955 / 0.994 / 0.990, 8 0.987 / 0.991 at 0.15 / 0.1.
        0 turns it off. The threshold policy then selects errors above threshold / weight. A
        reset drops the map; a shift (motion-compensated gating) moves it with the state.
    """

    refresh_interval: int = 0
    attention: str = "query_rows"
    sparse_max_fraction: float = SPARSE_ATTENTION_MAX_FRACTION
    cache_dtype: torch.dtype = torch.float32
    motion_alignment: str = "patch"
    score_priority: float = 4.0

    def __post_init__(self) -> None:
        if not isinstance(self.refresh_interval, int) or self.refresh_interval < 0:
            raise ValueError(f"refresh_interval must be an int >= 0, got {self.refresh_interval!r}")
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        if not 0.0 <= self.sparse_max_fraction <= 1.0:
            raise ValueError(f"sparse_max_fraction must be in [0, 1], got {self.sparse_max_fraction!r}")
        if self.motion_alignment not in MOTION_ALIGNMENTS:
            raise ValueError(f"motion_alignment must be one of {MOTION_ALIGNMENTS}, got {self.motion_alignment!r}")
        if not float(self.score_priority) >= 0.0:
            raise ValueError(f"score_priority must be >= 0, got {self.score_priority!r}")
        if self.cache_dtype not in _CACHE_DTYPES:
            raise ValueError(f"cache_dtype must be one of {_CACHE_DTYPES}, got {self.cache_dtype!r}")


@dataclass
class Alignment:
    """Content displacement (x, y) in model-input pixels since the last reset, and the whole grid
    cells (rows, cols) the state has been moved by to follow it."""

    x: float = 0.0
    y: float = 0.0
    rows: int = 0
    cols: int = 0


class Stream:
    """All state of one video stream (one camera); the model's weights are shared and stateless.

    A new or reset stream computes every token of its next frame. The model resets a stream by
    itself when the input resolution changes and, with `config.refresh_interval` K > 0, every K
    frames. Use one stream per camera; the same model can serve any number of streams.
    """

    def __init__(self, config: StreamConfig | None = None, name: str = "") -> None:
        self.config = config or StreamConfig()
        self.name = name
        self._blocks: list[BlockState] = []
        self._input_size: tuple[int, ...] | None = None
        self._frame_index = 0
        self._frames_since_reset = 0
        self._alignment = Alignment()
        # Gate-error weights (B, gated tokens) from the last frame's detections; None: plain policy.
        self.priority: torch.Tensor | None = None

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
        self._blocks = []
        self._frames_since_reset = 0
        self._alignment = Alignment()
        self.priority = None

    def memory_bytes(self) -> int:
        """Bytes held by this stream's tensors."""
        return sum(t.numel() * t.element_size() for _, t in self._named_tensors())

    def snapshot(self) -> dict[str, torch.Tensor]:
        """Copies of every state tensor (`block<i>.<field>`, and `priority`), for inspection."""
        return {name: tensor.clone() for name, tensor in self._named_tensors()}

    @property
    def empty(self) -> bool:
        """True when the next frame recomputes every token (new, reset or shifted off the grid)."""
        return not self._blocks

    def begin_frame(self, input_size: tuple[int, ...]) -> bool:
        """Prepare for a frame of `input_size`; True when every token will be recomputed."""
        interval = self.config.refresh_interval
        if input_size != self._input_size or (interval and self._frames_since_reset % interval == 0):
            self.reset()
        self._input_size = tuple(input_size)
        return self.empty

    def end_frame(self) -> None:
        self._frame_index += 1
        self._frames_since_reset += 1

    def blocks(self, count: int) -> list[BlockState]:
        """The state of each of `count` blocks (created empty after a reset)."""
        if not self._blocks:
            self._blocks = [BlockState() for _ in range(count)]
        assert len(self._blocks) == count, "a stream serves one model"
        return self._blocks

    def follow_motion(self, dx: float, dy: float, patch_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Camera motion compensation. The content moved by (dx, dy) model-input pixels since
        the previous frame; returns the grid cells (rows, cols) the state must move now so that
        its tokens follow the content, and the whole-pixel translation (x, y) that puts this
        frame's content on the shifted grid (the rest of the motion, under half a patch)."""
        a = self._alignment
        a.x, a.y = a.x + dx, a.y + dy
        cols, rows = round(a.x / patch_size), round(a.y / patch_size)
        move = (rows - a.rows, cols - a.cols)
        a.rows, a.cols = rows, cols
        return move, (round(cols * patch_size - a.x), round(rows * patch_size - a.y))

    def shift(self, grid: PatchGrid, rows: int, cols: int) -> None:
        """Move every block's per-token state by (rows, cols) grid cells (see `BlockState.shift`);
        resets instead when the move leaves the grid or a block holds the exact sparse cache."""
        if abs(rows) >= grid.height or abs(cols) >= grid.width or any(
                block.attention.sparse is not None for block in self._blocks):
            self.reset()
            return
        for block in self._blocks:
            block.shift(grid, rows, cols)
        if self.priority is not None:  # the detections move with the content; new cells weigh 1
            PatchGrid(0, grid.height, grid.width).shift_(self.priority.unsqueeze(-1), rows, cols, fill=1.0)

    def _named_tensors(self):
        for i, block in enumerate(self._blocks):
            for name, tensor in block.tensors():
                yield f"block{i}.{name}", tensor
        if self.priority is not None:
            yield "priority", self.priority
