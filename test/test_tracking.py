"""StreamTracker (ByteTrack from supervision) on synthetic boxes: IDs follow objects, crossing
objects keep theirs, ended IDs are not handed out again, and tracks restart with the stream.

Every property check is also run against a plausible wrong tracker, to show it can fail."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from eventful_perception.clips import pan_offset, panning
from eventful_perception.tracking import UNTRACKED, StreamTracker, TrackerConfig
from eventful_perception.training.metrics import iou_matrix

SIZE = (480, 640)  # frame (H, W)
FPS = 10.0


class ByOrder:
    """Wrong: IDs by detection order (what an untracked detector's index would give)."""

    def update(self, boxes, scores, frame_size, stamp):
        return [str(i + 1) for i in range(len(boxes))]


class LastBoxIoU:
    """Wrong: Hungarian IoU matching to each track's last box, no motion model, and a new track
    takes the smallest free ID (IDs of ended tracks are reused at once)."""

    def __init__(self):
        self.tracks: dict[int, np.ndarray] = {}

    def update(self, boxes, scores, frame_size, stamp):
        ids = [0] * len(boxes)
        previous = list(self.tracks)
        iou = iou_matrix(np.array([self.tracks[t] for t in previous]).reshape(-1, 4), boxes)
        rows, cols = linear_sum_assignment(-iou) if iou.size else ([], [])
        for r, c in zip(rows, cols):
            if iou[r, c] > 0.1:
                ids[c] = previous[r]
        for c in range(len(boxes)):
            if not ids[c]:
                ids[c] = min(set(range(1, len(boxes) + len(previous) + 2)) - set(ids))
        self.tracks = {track_id: box for track_id, box in zip(ids, boxes)}
        return [str(i) for i in ids]


def box(x: float, y: float, w: float = 40, h: float = 80) -> list[float]:
    return [x, y, x + w, y + h]


def run(tracker, frames: list[list[list[float]]], start: int = 0) -> list[list[str]]:
    """IDs per frame for frames of boxes (all scoring 0.9), stamped at FPS."""
    out = []
    for index, boxes in enumerate(frames):
        boxes = np.array(boxes, np.float32).reshape(-1, 4)
        out.append(tracker.update(boxes, np.full(len(boxes), 0.9, np.float32), SIZE,
                                  (start + index) / FPS))
    return out


# --- the properties, each a function of a tracker, so wrong trackers can be shown to fail ---

def ids_follow_moving_boxes(tracker) -> bool:
    """Three objects moving at different velocities, detections in a shuffled order each frame."""
    rng = np.random.default_rng(0)
    start = np.array([[50, 50], [300, 200], [500, 350]], float)
    velocity = np.array([[8, 2], [-5, 4], [3, -6]], float)
    frames, orders = [], []
    for t in range(20):
        order = rng.permutation(3)
        positions = start + t * velocity
        frames.append([box(*positions[i]) for i in order])
        orders.append(order)
    ids = run(tracker, frames)
    per_object = [{ids[t][list(orders[t]).index(obj)] for t in range(20)} for obj in range(3)]
    return all(len(s) == 1 and UNTRACKED not in s for s in per_object) and \
        len(set.union(*per_object)) == 3


def crossing_boxes_keep_ids(tracker) -> bool:
    """Two equal boxes at the same height moving through each other at 10 px/frame (identical
    at the crossing frame); detections sorted left to right, as a detector often lists them."""
    frames = []
    for t in range(21):
        a, b = 100 + 10 * t, 300 - 10 * t  # a moves right, b left; equal at t = 10
        frames.append(sorted([box(a, 200), box(b, 200)]))
    ids = run(tracker, frames)
    # before the crossing a is left (index 0); after it a is right (index 1)
    a_ids = {ids[t][0] for t in range(10)} | {ids[t][1] for t in range(11, 21)}
    b_ids = {ids[t][1] for t in range(10)} | {ids[t][0] for t in range(11, 21)}
    return len(a_ids) == len(b_ids) == 1 and a_ids != b_ids and UNTRACKED not in a_ids | b_ids


def ended_id_not_reused(tracker) -> bool:
    """Object A leaves after 10 frames; B appears elsewhere 3 frames later; A comes back
    within the lost-track buffer. B must get a new ID, A its old one."""
    a = [box(100 + 2 * t, 100) for t in range(30)]
    b = [box(450, 300 + t) for t in range(30)]
    frames = [[a[t]] for t in range(10)] + [[] for _ in range(3)] + \
        [[b[t]] for t in range(13, 18)] + [[b[t], a[t]] for t in range(18, 24)]
    ids = run(tracker, frames)
    a_id = ids[0][0]
    b_ids = {frame_ids[0] for frame_ids in ids[14:24]}  # from B's second frame on
    a_back = {frame_ids[1] for frame_ids in ids[19:24]}
    return len(b_ids) == 1 and a_id not in b_ids and a_back == {a_id}


PROPERTIES = [ids_follow_moving_boxes, crossing_boxes_keep_ids, ended_id_not_reused]


@pytest.mark.parametrize("check", PROPERTIES, ids=lambda f: f.__name__)
def test_bytetrack_has_the_property(check):
    assert check(StreamTracker())


@pytest.mark.parametrize("check, wrong", [
    (ids_follow_moving_boxes, ByOrder), (crossing_boxes_keep_ids, ByOrder),
    (crossing_boxes_keep_ids, LastBoxIoU), (ended_id_not_reused, ByOrder),
    (ended_id_not_reused, LastBoxIoU)], ids=lambda x: getattr(x, "__name__", ""))
def test_a_wrong_tracker_fails_the_property(check, wrong):
    assert not check(wrong())


def test_new_objects_get_an_id_once_confirmed_and_ids_are_strings():
    tracker = StreamTracker()
    ids = run(tracker, [[box(10, 10)], [box(12, 10), box(300, 300)],
                        [box(14, 10), box(302, 300)]])
    assert ids == [["1"], ["1", UNTRACKED], ["1", "2"]]  # the second object on its 2nd frame
    assert run(StreamTracker(TrackerConfig(min_frames=3)),
               [[box(10, 10)], [box(12, 10)], [box(14, 10)]]) == [[""], [""], ["1"]]


# --- tracks restart with the stream ---

def test_ids_restart_on_reset_resolution_change_and_time_jumps():
    tracker = StreamTracker(TrackerConfig(max_gap_s=2.0))
    steady = [[box(10 + 5 * t, 10), box(300 + 5 * t, 200)] for t in range(5)]
    run(tracker, steady)
    run(tracker, [[box(100, 300)], [box(102, 300)]], start=5)  # a third object gets ID 3
    # No jump: the first two, missed for 2 frames, are found again where they moved to.
    assert run(tracker, [[box(45, 10), box(335, 200)]], start=7) == [["1", "2"]]
    assert tracker.resets == 0

    def first_ids_after(update) -> list[str]:
        update()
        return tracker.update(np.array([box(10, 10), box(300, 200)], np.float32),
                              np.array([0.9, 0.9]), SIZE, 100.0)

    assert first_ids_after(tracker.reset) == ["1", "2"] and tracker.resets == 1
    # A bigger frame: the old boxes mean nothing in it.
    tracker.update(np.array([box(0, 0)], np.float32), np.array([0.9]), (960, 1280), 100.1)
    assert tracker.resets == 2
    # Stamps going backwards (a bag looping) and forward by more than max_gap_s both restart.
    for stamp in (50.0, 52.5):
        before = tracker.resets
        assert tracker.update(np.array([box(0, 0)], np.float32), np.array([0.9]), (960, 1280),
                              stamp) == ["1"]
        assert tracker.resets == before + 1
    assert tracker.update(np.array([box(2, 0)], np.float32), np.array([0.9]), (960, 1280),
                          54.0) == ["1"] and tracker.resets == 4  # 1.5 s: within max_gap_s


def test_a_tracker_without_reset_fails_the_restart_check():
    """The check above would catch a tracker that ignores resolution changes: the same boxes
    scaled to a new frame size get no confirmed ID on their first frame without a restart."""
    config = TrackerConfig()
    tracker = StreamTracker(config)
    run(tracker, [[box(100, 100), box(300, 200)] for _ in range(3)])
    tracker._jumped = lambda frame_size, stamp: False  # the wrong tracker: never restarts
    ids = tracker.update(np.array([box(200, 200, 80, 160), box(600, 400, 80, 160)], np.float32),
                         np.array([0.9, 0.9]), (960, 1280), 0.3)
    assert ids == [UNTRACKED, UNTRACKED]


@pytest.mark.parametrize("field, value", [("activation_threshold", 1.5), ("lost_frames", 0),
                                          ("matching_threshold", -0.1), ("min_frames", 0),
                                          ("max_gap_s", 0.0), ("lost_frames", 2.5)])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        TrackerConfig(**{field: value})


def test_update_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="2 boxes and 1 scores"):
        StreamTracker().update(np.zeros((2, 4)), np.zeros(1), SIZE, 0.0)


def test_tracking_module_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, eventful_perception.tracking, eventful_perception.clips; "
            "print('torch' in sys.modules, 'rclpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- the panning clip helper ---

def test_pan_offsets_slide_and_turn_at_the_edges():
    assert [pan_offset(i, 9, 3) for i in range(8)] == [0, 3, 6, 9, 6, 3, 0, 3]
    assert [pan_offset(i, 0, 3) for i in range(3)] == [0, 0, 0]
    frames = [np.arange(20)[None, :, None].repeat(2, 0) for _ in range(5)]  # (2, 20, 1) x = column
    crops = list(panning(frames, width=14, step=3))
    assert [c.shape for c in crops] == [(2, 14, 1)] * 5
    assert [int(c[0, 0, 0]) for c in crops] == [0, 3, 6, 3, 0]
    with pytest.raises(ValueError, match="crop width"):
        next(panning(frames, width=21))


def test_drawn_boxes_carry_their_track_id():
    from eventful_perception import drawing

    image = np.zeros((120, 200, 3), np.uint8)
    boxes = np.array([[20, 50, 80, 110], [120, 50, 180, 110]])
    drawn = drawing.draw_detections(image, boxes, np.array([0.9, 0.8]), ["person"] * 2, ["7", ""])
    assert tuple(drawn[80, 20]) == drawing.track_color("7")  # tracked: the ID's colour
    assert tuple(drawn[80, 120]) == drawing.label_color("person")  # untracked: the label's
    assert len({drawing.track_color(str(i)) for i in range(1, 30)}) == 29
    # The caption "#7 person 0.90" is wider than "person 0.90": its filled panel reaches further.
    plain = drawing.draw_detections(image, boxes[:1], np.array([0.9]), ["person"])
    captioned = drawing.draw_detections(image, boxes[:1], np.array([0.9]), ["person"], ["7"])
    assert (captioned[40] != 0).any(axis=1).sum() > (plain[40] != 0).any(axis=1).sum()
