"""Token head: box coding, IoU, NMS, thresholding, token-wise independence, save/load."""
import math

import pytest
import torch

from eventful_perception.models.token_head import (
    TokenHead,
    TokenHeadConfig,
    batched_nms,
    box_iou,
    decode_boxes,
    encode_boxes,
    nms,
    token_centers,
)

D = 8
PATCH = 14


def planted_head(labels=("person",)) -> TokenHead:
    """A head that scores tokens by feature 0 (0.007 where it is 0) and predicts 4x4-patch boxes."""
    head = TokenHead(TokenHeadConfig(labels, hidden_size=D, mlp_dim=D))
    with torch.no_grad():
        for module in (head.mlp[0], head.mlp[2]):
            module.weight.copy_(torch.eye(D))
            module.bias.zero_()
        head.objectness.weight.zero_()
        head.objectness.weight[0, 0] = 2.0
        head.objectness.bias.fill_(-5.0)
        head.classes.weight.zero_()
        head.classes.bias.zero_()
        head.box.weight.zero_()
        head.box.bias.fill_(math.log(2.0))  # 2 patches from the centre to every side
    return head.eval()


def test_token_centers_row_major():
    centers = token_centers((2, 3), PATCH)
    assert centers.shape == (6, 2)
    assert centers[0].tolist() == [7.0, 7.0]
    assert centers[1].tolist() == [21.0, 7.0]  # next column
    assert centers[3].tolist() == [7.0, 21.0]  # next row


def test_encode_decode_roundtrip():
    grid = (3, 4)
    centers = token_centers(grid, PATCH)
    boxes = torch.cat([centers - torch.tensor([5.0, 9.0]), centers + torch.tensor([30.0, 2.0])], dim=1)
    assert torch.allclose(decode_boxes(encode_boxes(boxes, grid, PATCH), grid, PATCH), boxes, atol=1e-4)


def test_box_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[50 / 150, 0.0, 1.0]]))


def test_nms_suppresses_overlaps_keeps_order():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 1, 10, 11]])
    scores = torch.tensor([0.6, 0.9, 0.8, 0.3])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.95).tolist() == [1, 2, 0, 3]


def test_batched_nms_never_suppresses_across_classes():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    classes = torch.tensor([0, 0, 1])
    assert sorted(batched_nms(boxes, scores, classes, 0.5).tolist()) == [0, 2]
    assert batched_nms(boxes[:0], scores[:0], classes[:0], 0.5).tolist() == []


def test_predict_planted_tokens():
    grid = (6, 8)
    tokens = torch.zeros(1, 48, D)
    tokens[0, 2 * 8 + 3, 0] = 3.0  # row 2, column 3: centre (49, 35), score 0.73
    tokens[0, 2 * 8 + 4, 0] = 2.5  # its neighbour, score 0.49: IoU 0.6 with the first -> suppressed
    tokens[0, 5 * 8 + 0, 0] = 3.5  # bottom-left corner, score 0.88: box clipped to the image
    (detections,) = planted_head().predict(tokens, grid, PATCH, score_threshold=0.3)
    assert detections.labels == ["person", "person"]
    assert detections.scores == pytest.approx([0.881, 0.727], abs=2e-3)
    expected = torch.tensor([[0.0, 49.0, 35.0, 84.0], [21.0, 7.0, 77.0, 63.0]])
    assert torch.allclose(torch.from_numpy(detections.boxes), expected, atol=1e-3)


def test_predict_threshold_and_empty():
    tokens = torch.zeros(2, 12, D)
    tokens[1, 5, 0] = 3.0
    empty, one = planted_head().predict(tokens, (3, 4), PATCH, score_threshold=0.5)
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)
    assert len(one) == 1
    (everything, _) = planted_head().predict(tokens, (3, 4), PATCH, score_threshold=0.0)
    assert len(everything) >= 1  # all tokens pass, NMS merges the overlapping boxes


def test_predictions_are_token_wise():
    torch.manual_seed(0)
    head = TokenHead(TokenHeadConfig(("person", "car"), hidden_size=D, mlp_dim=16)).eval()
    tokens = torch.randn(1, 20, D)
    changed = tokens.clone()
    changed[0, 7] += 1.0
    before, after = head(tokens), head(changed)
    for name in ("objectness", "class_logits", "log_distances"):
        a, b = getattr(before, name)[0], getattr(after, name)[0]
        differs = (a != b).reshape(20, -1).any(dim=1)
        assert differs.tolist() == [i == 7 for i in range(20)], name


def test_save_and_load_roundtrip(tmp_path):
    torch.manual_seed(1)
    head = TokenHead(TokenHeadConfig(("person",), hidden_size=D, mlp_dim=16, nms_iou=0.4))
    head.save(tmp_path)
    loaded = TokenHead.from_folder(tmp_path)
    assert loaded.config == head.config and loaded.labels == ["person"]
    tokens = torch.randn(1, 6, D)
    assert torch.equal(loaded(tokens).objectness, head.eval()(tokens).objectness)


def test_user_errors_raise_value_error(tmp_path):
    head = planted_head()
    with pytest.raises(ValueError, match="grid"):
        head.predict(torch.zeros(1, 10, D), (3, 4), PATCH)
    with pytest.raises(ValueError, match="score_threshold"):
        head.predict(torch.zeros(1, 12, D), (3, 4), PATCH, score_threshold=1.5)
    with pytest.raises(ValueError, match="config.json"):
        TokenHead.from_folder(tmp_path)
    with pytest.raises(ValueError, match="label"):
        TokenHeadConfig((), hidden_size=D)


def test_detection_cap_keeps_the_best_scoring_boxes():
    head = planted_head()
    head.config = TokenHeadConfig(("person",), hidden_size=D, mlp_dim=D, max_detections=2)
    grid = (6, 16)
    tokens = torch.zeros(1, 96, D)
    for i, column in enumerate((1, 6, 11)):  # three far-apart tokens, scores rising to the right
        tokens[0, 2 * 16 + column, 0] = 3.0 + i
    (detections,) = head.predict(tokens, grid, PATCH, score_threshold=0.5)
    assert len(detections) == 2 and detections.scores[0] > detections.scores[1]
    assert sorted(detections.boxes[:, 0].tolist()) == [63.0, 133.0]  # columns 6 and 11 (centre - 28)
