"""Training pieces: mAP50, token targets, label clean-up, samples, the token table, a head fit."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from eventful_perception.models.results import Detections
from eventful_perception.models.token_head import token_centers
from eventful_perception.training.features import SampleFeatures
from eventful_perception.training.labels import FrameLabels, LabelConfig, clean, temporal_filter
from eventful_perception.training import footage
from eventful_perception.training.samples import NEGATIVE_CROPS, SampleSpec, plan, render, zoom_crop
from eventful_perception.training.teacher import TeacherBoxes
from eventful_perception.training.metrics import (GroundTruth, mean_average_precision, precision_by_score,
                                                   precision_recall)
from eventful_perception.training.targets import assign
from eventful_perception.training.train import TrainConfig, token_table, train_head

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


def test_precision_by_score_bins_the_matched_share():
    # Frame 1: a hit at 0.9, a miss at 0.6, a miss at 0.55 inside an ignore region (not counted),
    # and a duplicate of the hit at 0.75 (a miss: its person is taken). Frame 2: a hit at 0.65.
    preds = [detections([BOX[0], [200, 200, 240, 280], [300, 300, 340, 380], BOX[0]],
                        [0.9, 0.6, 0.55, 0.75]),
             detections(BOX, [0.65])]
    truths = [truth(BOX, ignore=[[290, 290, 350, 390]]), truth(BOX)]
    bins = precision_by_score(preds, truths, (0.5, 0.6, 0.8, 1.0))
    assert [b["detections"] for b in bins] == [0, 3, 1]
    assert bins[0]["precision"] is None
    assert bins[1]["precision"] == pytest.approx(1 / 3)  # 0.6 miss, 0.65 hit, 0.75 duplicate
    assert bins[2]["precision"] == 1.0
    # The last bin is closed: 0.75 (exact in float32) is in [0.5, 0.75]; 0.9 is not.
    assert precision_by_score(preds, truths, (0.5, 0.75))[0]["detections"] == 3
    # Inner bins are half-open: 0.75 counts once, in the bin it starts.
    assert [b["detections"] for b in precision_by_score(preds, truths, (0.5, 0.75, 1.0))] == [2, 2]


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


def synthetic_samples(n=24, grid=(6, 8), dim=16, seed=0):
    """Tokens inside one moving 2x4-patch box per sample carry a 'person' direction plus their
    offset from the box centre (real features know which part of a person they see)."""
    generator = torch.Generator().manual_seed(seed)
    person, offset_x, offset_y = torch.randn(3, dim, generator=generator)
    centers = token_centers(grid, 14)
    samples = []
    for f in range(n):
        tokens = 0.3 * torch.randn(grid[0] * grid[1], dim, generator=generator)
        x = 7.0 + 14 * (f % 5)
        box = torch.tensor([x, 7.0, x + 28, 63.0])
        inside = ((centers >= box[:2]) & (centers <= box[2:])).all(1)
        offsets = (centers[inside] - (box[:2] + box[2:]) / 2) / 14  # (P, 2) in patches
        tokens[inside] += person + offsets[:, :1] * offset_x + offsets[:, 1:] * offset_y
        samples.append((SampleFeatures(tokens.half(), grid, (1.0, 1.0)),
                        FrameLabels(box[None].numpy(), np.zeros((0, 4), np.float32))))
    return samples


def test_train_head_end_to_end_on_planted_features(single_thread):
    samples = synthetic_samples()
    config = TrainConfig(epochs=60, batch_tokens=256, mlp_dim=32, learning_rate=3e-3)
    head = train_head(token_table(samples[:18]), config)
    found = [head.predict(f.tokens[None].float(), f.grid, 14, 0.05)[0] for f, _ in samples[18:]]
    truths = [GroundTruth(l.boxes, ["person"], l.ignore) for _, l in samples[18:]]
    assert mean_average_precision(found, truths) >= 0.9
    # Scores estimate the IoU of the token's box: the kept box of each held-out sample is good.
    precision, recall = precision_recall(found, truths, 0.5)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


def test_token_table_flattens_samples_of_different_grids():
    small, _ = synthetic_samples(n=1, grid=(6, 8))[0]
    large, _ = synthetic_samples(n=1, grid=(12, 16))[0]
    box = FrameLabels(np.array([[14.0, 14.0, 56.0, 70.0]], np.float32), np.zeros((0, 4), np.float32))
    table = token_table([(small, box), (large, box)])
    assert len(table.tokens) == 48 + 192
    assert torch.equal(table.centers[48:], token_centers((12, 16), 14))
    assert int(table.positive[:48].sum()) == int(table.positive[48:].sum()) == 3 * 4  # 3 x 4 patches


def test_training_cli_help():
    out = subprocess.run([sys.executable, "-m", "eventful_perception.training", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "labels" in out and "evaluate" in out and "--epochs" in out and "teacher" in out


def test_samples_crop_flip_keep_labels_in_sample_pixels():
    labels = FrameLabels(np.array([[100, 50, 140, 150], [0, 0, 30, 40]], np.float32),
                         np.array([[300, 10, 320, 30]], np.float32))
    rgb = np.zeros((200, 400, 3), np.uint8)
    spec = SampleSpec("x", 0, 224, crop=(80, 40, 280, 140), flip=True)
    image, out = render(spec, rgb, labels)
    assert image.shape == (100, 200, 3)
    # The first person is cut to 90 of its 100 rows (kept), then mirrored in the 200-px crop.
    assert out.boxes.tolist() == [[140.0, 10.0, 180.0, 100.0]]
    assert len(out.ignore) == 0  # the second person and the ignore region fall outside the crop
    rng = np.random.default_rng(0)
    for _ in range(20):
        x1, y1, x2, y2 = zoom_crop(np.array([100, 50, 140, 150]), (200, 400), rng)
        assert 0 <= x1 < x2 <= 400 and 0 <= y1 < y2 <= 200
        assert 0.3 <= 100 / (y2 - y1) <= 1.0  # the person spans 35-95 % of the crop height


def test_plan_uses_negatives_whole_and_as_zoom_crops_anywhere():
    person = FrameLabels(np.array([[100, 50, 140, 150]], np.float32), np.zeros((0, 4), np.float32))
    empty = FrameLabels(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))
    labels = {"walkers": {0: person}, "street": {0: empty}, "still": {0: empty}}
    sizes = {"walkers": (200, 400), "street": (300, 600), "still": (300, 600)}
    specs = plan(labels, sizes, seed=3, negatives={"street"})
    assert specs == plan(labels, sizes, seed=3, negatives={"street"})  # seeded
    street = [s for s in specs if s.source == "street"]
    assert [s.crop is None for s in street] == [True] + [False] * NEGATIVE_CROPS
    for spec in street[1:]:
        x1, y1, x2, y2 = spec.crop
        assert 0 <= x1 < x2 <= 600 and 0 <= y1 < y2 <= 300
        assert 1.5 <= 300 / (y2 - y1) <= 4.05 and abs((x2 - x1) / (y2 - y1) - 2) < 0.05  # zoom, aspect kept
    # Other people-free stills keep the plain plan: whole at 224 and 448, once flipped, no crop.
    still = [s for s in specs if s.source == "still"]
    assert [(s.short_side, s.crop, s.flip) for s in still[:2]] == [(224, None, False), (448, None, False)]
    assert len(still) == 3 and still[2].flip and still[2].crop is None
    walkers = [s for s in specs if s.source == "walkers"]
    assert len(walkers) == 4 and walkers[3].crop is not None  # a zoom crop around the person


def test_negative_images_are_new_opencv_doc_files():
    shas = [sha for _, sha in footage.NEGATIVE_IMAGES.values()]
    assert len(shas) == len(set(shas)) > 100
    assert not set(shas) & set(footage.OPENCV_DOC_IMAGES.values())  # no still is used twice
    assert all(footage.path(name).name == name for name in footage.NEGATIVE_IMAGES)


def test_clean_thresholds_classes_and_lonely_boxes():
    raw = TeacherBoxes(np.array([[0, 0, 20, 60], [50, 0, 70, 60], [100, 0, 160, 30], [200, 0, 210, 8]], np.float32),
                       np.array([0.6, 0.2, 0.5, 0.9], np.float32), np.array([0, 0, 1, 0]))
    labels = clean(raw, LabelConfig())
    assert labels.boxes.tolist() == [[0, 0, 20, 60]]  # lying at 0.5 < 0.55; 8 px is too short
    assert labels.ignore.tolist() == [[50, 0, 70, 60], [100, 0, 160, 30], [200, 0, 210, 8]]
    still = FrameLabels(np.array([[0, 0, 20, 60]], np.float32), np.zeros((0, 4), np.float32))
    walked = FrameLabels(still.boxes + [40, 0, 40, 0], np.zeros((0, 4), np.float32))  # no overlap, 2/3 height away
    flicker = FrameLabels(np.array([[300, 0, 320, 60]], np.float32), np.zeros((0, 4), np.float32))
    out = temporal_filter({0: still, 2: FrameLabels(walked.boxes, flicker.boxes), 4: still}, 2, LabelConfig())
    assert [len(out[i].boxes) for i in (0, 2, 4)] == [1, 1, 1]
    out = temporal_filter({0: still, 2: flicker, 4: still}, 2, LabelConfig())
    assert len(out[2].boxes) == 0 and out[2].ignore.tolist() == flicker.boxes.tolist()
    tiny = FrameLabels(np.array([[300, 0, 310, 20]], np.float32), np.zeros((0, 4), np.float32))
    out = temporal_filter({0: tiny, 2: flicker}, 2, LabelConfig())  # same place, a third of the size
    assert len(out[0].boxes) == len(out[2].boxes) == 0
