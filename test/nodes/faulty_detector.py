"""The real `eventful_detector` node whose model raises on frames 111 pixels wide (an injected
fault, so the node's error path runs in a real process); every other frame is processed."""
from typing import Any

from eventful_perception.ros import model, node

POISON_WIDTH = 111
_load = model.load


class FaultyModel:
    """Delegates to the real model, except for the poison frames."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.labels = inner.labels

    def new_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.new_stream(*args, **kwargs)

    def __call__(self, frame: Any, stream: Any, **kwargs: Any) -> Any:
        if frame.shape[1] == POISON_WIDTH:
            raise RuntimeError("injected fault: poison frame")
        return self._inner(frame, stream, **kwargs)


def faulty_load(*args: Any) -> FaultyModel:
    return FaultyModel(_load(*args))


if __name__ == "__main__":
    model.load = faulty_load
    node.main()
