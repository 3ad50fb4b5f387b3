"""Background tightening of label boxes on a static camera, on synthetic frames (closed forms)."""
import numpy as np
import pytest

from eventful_perception.training.background import median_background, tighten_boxes


def _scene(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(90, 110, size=(120, 160, 3), dtype=np.uint8)  # noise below the threshold


def test_a_loose_box_shrinks_to_the_object():
    rng = np.random.default_rng(0)
    background = _scene(rng)
    frame = background.copy()
    frame[30:90, 70:90] = 10  # a dark walker 20 px wide, 60 px tall
    tight = tighten_boxes(frame, np.array([[50.0, 20.0, 110.0, 100.0]]), background)
    assert tight[0] == pytest.approx([70, 30, 90, 90], abs=1.0)


def test_boxes_without_foreground_or_beyond_it_keep_their_extent():
    rng = np.random.default_rng(1)
    background = _scene(rng)
    frame = background.copy()
    frame[10:110, 0:160] = 10  # the object is larger than the box
    boxes = np.array([[40.0, 30.0, 80.0, 60.0], [0.0, 0.0, 160.0, 8.0]])
    tight = tighten_boxes(frame, boxes, background)
    assert tight[0] == pytest.approx(boxes[0])  # never grown past the box
    assert tight[1] == pytest.approx(boxes[1])  # no foreground inside: left alone


def test_the_median_of_moving_objects_is_the_empty_scene():
    rng = np.random.default_rng(2)
    empty = _scene(rng)
    frames = []
    for k in range(7):
        frame = empty.copy()
        frame[40:80, 10 + 20 * k:30 + 20 * k] = 0  # a walker crossing
        frames.append(frame)
    assert np.array_equal(median_background(frames), empty)


def test_bad_inputs_are_refused():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="at least 5 frames"):
        median_background([_scene(rng)] * 3)
    with pytest.raises(ValueError, match="differ in size"):
        tighten_boxes(_scene(rng), np.zeros((1, 4)), _scene(rng)[:60])
