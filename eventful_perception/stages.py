"""One camera's detection at a fixed or an adaptive token granularity, shared by the node and
`eventful-perception detect`.

fixed: every frame goes through one Eventful stream at the model's own scale (one stage).
adaptive: every frame goes through the granularity ladder (`granularity.Ladder`): at budgets
below its `ladder_below`, the coarsest stage first while the camera moves; otherwise, and while
it is still, the finest stage gated.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eventful_perception.assets import config_file
from eventful_perception.eventful.stream import Stream, StreamConfig
from eventful_perception.granularity import Ladder, LadderConfig, LadderState
from eventful_perception.models.results import Result
from eventful_perception.reuse import load_reuse

if TYPE_CHECKING:
    from eventful_perception.models.base import EventfulViT

GRANULARITIES = ("fixed", "adaptive")
EXIT_THRESHOLDS = "exit_thresholds.json"  # shipped in config/, written by `fit-exits`


def load_ladder_config(path: str | Path = "", score_threshold: float = 0.5) -> LadderConfig:
    """The ladder's stages and exit thresholds from a `fit-exits` JSON file ('' = the shipped
    config/exit_thresholds.json) for detections at `score_threshold`, which the exit rule needs
    between the file's score_low and 1; ValueError naming the file when it cannot be used."""
    shown = str(path) or f"config/{EXIT_THRESHOLDS}"
    try:
        ladder = LadderConfig.from_file(Path(path) if str(path) else config_file(EXIT_THRESHOLDS))
        load_reuse(ladder.reuse, ladder.short_sides)  # the modules the thresholds were fitted with
    except KeyError as error:
        raise ValueError(f"exit thresholds file {shown}: no key {error}") from None
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"exit thresholds file {shown}: {error}") from None
    if not ladder.score_low < score_threshold < 1.0:
        raise ValueError(f"granularity adaptive needs score_threshold above the exit thresholds "
                         f"file's score_low {ladder.score_low} and below 1, got {score_threshold}")
    return ladder


@dataclass(frozen=True)
class StagedResult:
    """A frame's result and the stage it exited at.

    `result.detections`, the tokens and `latency_ms` of `result.usage` are the exiting stage's;
    `usage.gflops` counts every stage run on the frame and `usage.gflops_dense` is the finest
    stage's dense pass (fixed: the one stage's own numbers).
    """

    result: Result
    stage: int  # index into the stages' short sides (always 0 with granularity fixed)
    stages: int  # how many stages the camera's granularity has (1 with fixed)
    stages_run: int  # stages computed on this frame (1 with fixed)

    @property
    def short_side(self) -> int:
        """The model input's short side (pixels) at the exiting stage."""
        return min(self.result.input_size)


class StagedStream:
    """All the state of one camera at one granularity: an Eventful `Stream` (fixed) or a
    `LadderState` (adaptive, `ladder` given); the model's weights are shared."""

    def __init__(self, model: EventfulViT, stream_config: StreamConfig,
                 ladder: LadderConfig | None = None, name: str = "") -> None:
        self.stream_config, self.ladder_config = stream_config, ladder
        self._model = model
        self._ladder = Ladder(model, ladder) if ladder is not None else None
        self._state: Stream | LadderState = (
            self._ladder.new_state(stream_config) if self._ladder is not None
            else model.new_stream(stream_config, name=name))

    def __call__(self, frame: np.ndarray, budget: float, threshold: float | None = None,
                 score_threshold: float | None = None) -> StagedResult:
        """Process the next frame of this camera (`threshold`: the threshold policy, fixed only)."""
        if self._ladder is None:
            result = self._model(frame, self._state, budget=budget, threshold=threshold,
                                 score_threshold=score_threshold)
            return StagedResult(result, 0, 1, 1)
        if threshold is not None:
            raise ValueError("the threshold policy needs granularity fixed: the ladder sets each "
                             "stage's update fraction from the budget")
        out = self._ladder(frame, self._state, budget, score_threshold)
        usage = replace(out.result.usage, gflops=out.gflops, gflops_dense=out.gflops_dense)
        return StagedResult(replace(out.result, usage=usage), out.stage,
                            len(self.ladder_config.short_sides), len(out.confidences))

    def exit_rates(self) -> list[tuple[int, float]]:
        """(short side, fraction of the frames so far that exited there) per stage; [] with
        granularity fixed."""
        if self._ladder is None:
            return []
        return list(zip(self.ladder_config.short_sides, self._state.exit_rates()))

    def reset(self) -> None:
        """Start over, as on a new camera (the exit counts are kept)."""
        self._state.reset()

    def memory_bytes(self) -> int:
        """Memory held by the state tensors (every stage's)."""
        return self._state.memory_bytes()
