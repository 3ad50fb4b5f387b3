"""The model as the node sees it (a Protocol), and loading it with one clear error per fault."""
from __future__ import annotations

import pickle
from typing import Protocol, Sequence

import numpy as np

from eventful_perception.eventful.stream import Stream, StreamConfig
from eventful_perception.models.results import Result


class DetectorModel(Protocol):
    """What the node needs from a model: its labels, streams, and one eventful step per frame
    (at `short_side` for a granularity ladder's stage)."""

    labels: Sequence[str]
    default_score_threshold: float

    def new_stream(self, config: StreamConfig | None = None, name: str = "") -> Stream:
        """A fresh stream holding one camera's state."""

    def __call__(self, frame: np.ndarray, stream: Stream, *, budget: float,
                 threshold: float | None = None, score_threshold: float | None = None,
                 short_side: int | None = None) -> Result:
        """Process the next frame of `stream`."""


class ModelLoadError(Exception):
    """The model cannot be loaded; the message says why in one line."""


def load(path: str, device: str, short_side: int, threads: int = 0) -> DetectorModel:
    """Load `path` ('default' or a checkpoint folder) on `device`; ModelLoadError on any fault.
    `threads` > 0 sets torch's CPU threads for inference (0 keeps torch's default)."""
    import torch

    import eventful_perception

    if threads:
        torch.set_num_threads(threads)

    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' requested but torch sees no CUDA GPU "
                             "(device:=auto falls back to the CPU)")
    try:
        return eventful_perception.load_model(path, device, short_side=short_side or None)
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError,
            _safetensors_error()) as error:
        raise ModelLoadError(f"cannot load model {path!r}: {_one_line(error)}") from None


def release_memory() -> None:
    """After the last reference to a model is dropped: free it now and hand cached GPU memory
    back to the driver, so an unconfigured node holds none."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _safetensors_error() -> type[Exception]:
    from safetensors import SafetensorError

    return SafetensorError


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."

