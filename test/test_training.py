"""Training pieces: mAP50, token targets, tracking, foreground labels, an end-to-end head fit."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from eventful_perception.models.results import Detections
from eventful_perception.models.token_head import token_centers
from eventful_perception.training.features import ClipFeatures
from eventful_perception.training.labels import FrameLabels, LabelConfig, _is_single, _perspective_fit, foreground_blobs
from eventful_perception.training.metrics import GroundTruth, mean_average_precision, precision_recall
from eventful_perception.training.targets import assign
from eventful_perception.training.tracking import build_tracks
from eventful_perception.training.train import TrainConfig, build_training_set, evaluate, split, train_head

BOX = np.array([[10.0, 10.0, 50.0, 90.0]], np.float32)


def detections(boxes, scores):
    return Detections(np.array(boxes, np.float32), np.array(scores, np.float32), ["person"] * len(scores))


def truth(boxes, ignore=()):
    return GroundTruth(np.array(boxes, np.float32).reshape(-1, 4), ["person"] * len(boxes),
                       np.array(ignore, np.float32).reshape(-1, 4))


def test_map_perfect_and_by_hand():
    assert mean_average_precision([detections(BOX, [0.9])], [truth(BOX)]) == pytest.approx(1.0)
    # A false positive ranked above the only true positive: precision 1/2 at recall 1.
    preds = [detections([[200, 200, 240, 280], BOX[0]], [0.9, 0.8])]
    assert mean_average_precision(preds, [truth(BOX)]) == pytest.approx(0.5)
    # Two frames, two objects, one found: recall stops at 1/2.
    preds = [detections(BOX, [0.9]), detections([], [])]
    assert mean_average_precision(preds, [truth(BOX), truth(BOX)]) == pytest.approx(0.5)


def test_map_duplicates_ignore_regions_and_no_truth():
    duplicate = [detections([BOX[0], BOX[0] + 1], [0.9, 0.8])]
    assert mean_average_precision(duplicate, [truth(BOX)]) == pytest.approx(1.0)  # FP after full recall
    duplicate_first = [detections([BOX[0] + 30, BOX[0]], [0.9, 0.8])]
    ignored = [truth(BOX, ignore=[[30, 30, 90, 130]])]
    assert mean_average_precision(duplicate_first, ignored) == pytest.approx(1.0)
    assert np.isnan(mean_average_precision([detections(BOX, [0.9])], [truth([])]))
    with pytest.raises(ValueError):
        mean_average_precision([], [truth(BOX)])


def test_precision_recall_at_threshold():
    preds = [detections([BOX[0], [200, 200, 240, 280], [300, 300, 340, 380]], [0.9, 0.6, 0.3]),
             detections([], [])]
    truths = [truth(BOX, ignore=[[290, 290, 350, 390]]), truth(BOX)]
    assert precision_recall(preds, truths, 0.5) == pytest.approx((0.5, 0.5))
    assert precision_recall(preds, truths, 0.2) == pytest.approx((0.5, 0.5))  # the 0.3 one is ignored
    assert precision_recall(preds, truths, 0.95) == pytest.approx((1.0, 0.0))


def test_assign_tokens_inside_box_with_centreness_targets():
    grid, patch = (8, 8), 14
    boxes = torch.tensor([[14.0, 14.0, 56.0, 98.0]])  # 3 x 6 patches
    targets = assign(boxes, torch.tensor([0]), torch.tensor([[84.0, 0.0, 112.0, 28.0]]), grid, patch)
    centers = token_centers(grid, patch)
    inside = ((centers >= boxes[0, :2]) & (centers <= boxes[0, 2:])).all(1)
    assert (targets.positive == inside).all()
    assert (targets.boxes[targets.positive] == boxes[0]).all()
    assert (targets.quality[~inside] == 0).all() and (targets.quality[inside] > 0).all()
    assert targets.quality.max() == pytest.approx(1.0)  # the most central token
    # Centre column, rows from the top border to the middle: quality rises towards the centre.
    column = targets.quality.reshape(grid)[1:4, 2]
    assert column[0] < column[1] < column[2] <= 1.0
    assert (targets.ignore == (centers[:, 0] > 84) & (centers[:, 1] < 28)).all()


def test_assign_narrow_box_gets_its_centre_token_and_smallest_box_wins():
    grid, patch = (4, 4), 14
    boxes = torch.tensor([[0.0, 0.0, 56.0, 56.0], [15.0, 15.0, 25.0, 25.0], [29.0, 40.0, 33.0, 55.0]])
    targets = assign(boxes, torch.tensor([0, 0, 0]), torch.zeros(0, 4), grid, patch)
    assert targets.positive[5] and (targets.boxes[5] == boxes[1]).all()  # token (1, 1)
    assert targets.positive[14] and (targets.boxes[14] == boxes[2]).all()  # centre (35, 49) is outside
    assert targets.quality[14] == pytest.approx(1.0)  # the only token of its box
    empty = assign(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), grid, patch)
    assert not empty.positive.any() and not empty.ignore.any()


def test_tracks_link_moving_boxes_and_fill_gaps():
    step = 2
    moving = {f: (np.array([[f, 0.0, f + 20, 50]], np.float32), np.array([f == 0])) for f in (0, 2, 4, 10)}
    moving[4] = (np.zeros((0, 4), np.float32), np.zeros(0, bool))  # missed once
    (track,) = build_tracks(moving, step)
    assert track.frames == [0, 2, 10] and track.confirmed == [True, False, False]
    filled = dict(track.interpolated(step))
    assert sorted(filled) == [0, 2, 4, 6, 8, 10]
    assert filled[6] == pytest.approx([6.0, 0.0, 26.0, 50.0])


def test_foreground_blob_of_a_synthetic_person():
    background = np.full((120, 160, 3), 128, np.uint8)
    frame = background.copy()
    frame[30:90, 70:90] = 20  # a dark upright 20x60 figure
    blobs = foreground_blobs(frame, background, LabelConfig())
    assert blobs.shape == (1, 4)
    assert blobs[0] == pytest.approx([70, 30, 90, 90], abs=3)
    assert foreground_blobs(background, background, LabelConfig()).shape == (0, 4)


def test_label_clip_on_real_excerpt(tmp_path):
    """HOG (OpenCV 4 in a subprocess) + background subtraction + tracks on 4 s of vtest.avi."""
    import cv2

    from eventful_perception.assets import video_path
    from eventful_perception.training.labels import iter_frames, label_clip

    excerpt = tmp_path / "excerpt.avi"
    writer = cv2.VideoWriter(str(excerpt), cv2.VideoWriter_fourcc(*"MJPG"), 10, (768, 576))
    for _, frame in iter_frames(video_path("vtest.avi"), set(range(300, 340))):
        writer.write(frame)
    writer.release()
    labels = label_clip(excerpt, LabelConfig(background_window=40, background_samples=11))
    assert sorted(labels) == list(range(0, 40, 2))
    assert np.mean([len(frame.boxes) > 0 for frame in labels.values()]) >= 0.7
    boxes = np.concatenate([frame.boxes for frame in labels.values()])
    heights, widths = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    assert ((heights >= 40) & (heights <= 200) & (heights >= 1.3 * widths)).all()  # upright people


def test_perspective_fit_flags_groups():
    rng = np.random.default_rng(0)
    bottoms = rng.uniform(100, 500, 200)
    heights = 0.2 * bottoms + 20
    people = np.stack([np.full(200, 50.0), bottoms - heights, 50 + 0.4 * heights, bottoms], 1)
    groups = people[:20].copy()
    groups[:, 2] = 50 + 0.9 * (groups[:, 3] - groups[:, 1])  # two people side by side
    fit = _perspective_fit(np.concatenate([people, groups]).astype(np.float32))
    assert fit == pytest.approx([0.2, 20.0], rel=0.05)
    assert _is_single(people, fit).all() and not _is_single(groups, fit).any()


def synthetic_clip(n_frames=24, grid=(6, 8), dim=16, seed=0):
    """Tokens inside one moving 2x4-patch box per frame carry a 'person' direction plus their
    offset from the box centre (real features know which part of a person they see)."""
    generator = torch.Generator().manual_seed(seed)
    person, offset_x, offset_y = torch.randn(3, dim, generator=generator)
    tokens = 0.3 * torch.randn(n_frames, grid[0] * grid[1], dim, generator=generator)
    centers = token_centers(grid, 14)
    labels = {}
    for f in range(n_frames):
        x = 7.0 + 14 * (f % 5)
        box = torch.tensor([x, 7.0, x + 28, 63.0])
        inside = ((centers >= box[:2]) & (centers <= box[2:])).all(1)
        offsets = (centers[inside] - (box[:2] + box[2:]) / 2) / 14  # (P, 2) in patches
        tokens[f, inside] += person + offsets[:, :1] * offset_x + offsets[:, 1:] * offset_y
        labels[f] = FrameLabels(box[None].numpy(), np.zeros((0, 4), np.float32))
    return ClipFeatures(tokens.half(), list(range(n_frames)), grid, (1.0, 1.0)), labels


def test_train_head_end_to_end_on_planted_features(single_thread):
    torch.manual_seed(0)
    clip, labels = synthetic_clip()
    train_frames, test_frames = split(sorted(labels), 0.25)
    assert test_frames == list(range(18, 24))
    config = TrainConfig(epochs=60, batch_frames=6, mlp_dim=32, learning_rate=3e-3)
    head = train_head(build_training_set([clip], [labels], [train_frames]), config)
    assert evaluate(head, [clip], [labels], [test_frames], config) >= 0.9


def test_training_cli_help():
    out = subprocess.run([sys.executable, "-m", "eventful_perception.training", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "labels" in out and "eventful" in out and "--frame-step" in out
