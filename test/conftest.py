"""Test-session set-up shared by all test files."""
import os

# Every DDS participant of this run (this process and the nodes it starts) stays on loopback and
# in a domain of its own, so parallel runs on one machine never see each other.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))


# --- Eventful core and models: tiny random Hugging Face checkpoints and real video frames ---
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tiny_models import save_random  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dinov2_dir(tmp_path_factory) -> Path:
    """A 3-layer, width-32 random `Dinov2Model` checkpoint folder written by transformers."""
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, image_size=56,
                          patch_size=14, layerscale_value=0.5)
    return save_random(Dinov2Model, config, tmp_path_factory.mktemp("tiny_dinov2"))


@pytest.fixture(scope="session")
def tiny_yolos_dir(tmp_path_factory) -> Path:
    """A 3-layer random `YolosForObjectDetection` folder (5 detection tokens, 3 labels)."""
    from transformers import YolosConfig, YolosForObjectDetection

    labels = {0: "N/A", 1: "person", 2: "car"}
    config = YolosConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                         image_size=[64, 96], num_detection_tokens=5, id2label=labels,
                         label2id={v: k for k, v in labels.items()})
    folder = save_random(YolosForObjectDetection, config, tmp_path_factory.mktemp("tiny_yolos"))
    processor = {"size": {"shortest_edge": 128, "longest_edge": 200}, "image_processor_type": "YolosImageProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


@pytest.fixture(scope="session")
def vtest_frames() -> list[np.ndarray]:
    """The first 12 RGB frames of vtest.avi (768x576, static-camera pedestrians)."""
    import cv2

    from eventful_perception.assets import video_path

    capture = cv2.VideoCapture(str(video_path("vtest.avi")))
    frames = []
    while len(frames) < 12:
        ok, frame = capture.read()
        assert ok, "vtest.avi missing or short; run `make setup`"
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    return frames


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tiny-model tests on one torch thread: on a loaded 2-core machine, idle
    intra-op threads spinning on busy cores make ops on small tensors up to 50x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
