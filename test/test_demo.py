"""`make demo`'s pipeline on a few frames: bag with a battery ramp -> node -> summary, video, plot."""
import subprocess
import sys

import cv2

from ros_helpers import REPO, ros_env


def test_demo_pipeline_on_a_few_frames(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "eventful_perception.demo", "--frames", "10",
                           "--rate", "0.5", "--out", str(out)], cwd=REPO, env=ros_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "frames processed" in done.stdout and "battery" in done.stdout, done.stdout
    video = cv2.VideoCapture(str(out / "demo_annotated.mp4"))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) >= 1
    assert (video.get(cv2.CAP_PROP_FRAME_WIDTH), video.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (768, 576)
    plot = cv2.imread(str(out / "demo_plot.png"))
    assert plot is not None and plot.std() > 0  # a drawn figure, not a blank file
