"""HOG people detector from OpenCV 4, run in a subprocess.

OpenCV 5 (this package's runtime OpenCV) no longer ships `HOGDescriptor`, so the labelling step
installs the pinned OpenCV 4 wheel into the cache (`pip install --target`, no dependencies) and
runs this module there; both OpenCVs cannot share one process.
Run as `python -m eventful_perception.training.hog VIDEO OUT.json --frames 0 2 4 ...`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from eventful_perception.assets import cache_dir, sha256

OPENCV4 = "opencv-python-headless==4.12.0.88"
# People shorter than HOG's 128-pixel window (minus margins) are missed; vtest's are 60-110 px.
UPSCALE = 1.5


def opencv4_dir() -> Path:
    """Where the pinned OpenCV 4 wheel is installed in the cache."""
    return cache_dir() / "opencv4" / OPENCV4.split("==")[1]


def ensure_opencv4() -> Path:
    """Install the pinned OpenCV 4 wheel into the cache once; returns its folder."""
    folder = opencv4_dir()
    if not (folder / "cv2" / "__init__.py").is_file():
        print(f"[labels] installing {OPENCV4} into {folder} (HOG is not in OpenCV 5)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                        "--target", str(folder), OPENCV4], check=True)
    return folder


def run_hog(video: Path, frames: list[int]) -> dict[int, list[list[float]]]:
    """HOG detections `frame -> [[x1, y1, x2, y2, weight], ...]` in original pixels (cached)."""
    out = cache_dir() / "training" / f"hog_{video.stem}_{sha256(video)[:12]}_{OPENCV4.split('==')[1]}.json"
    if out.is_file() and sorted(map(int, json.loads(out.read_text()))) == sorted(frames):
        return {int(k): v for k, v in json.loads(out.read_text()).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ensure_opencv4()), str(Path(__file__).resolve().parents[2])]))
    subprocess.run([sys.executable, "-m", "eventful_perception.training.hog", str(video), str(out),
                    "--frames", *map(str, frames)], env=env, check=True)
    return {int(k): v for k, v in json.loads(out.read_text()).items()}


def _detect_all(video: Path, frames: list[int]) -> dict[int, list[list[float]]]:
    import cv2
    import numpy as np
    from tqdm import tqdm

    cv2.setNumThreads(1)
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    capture, wanted, found = cv2.VideoCapture(str(video)), set(frames), {}
    for index in tqdm(range(max(frames) + 1), desc=f"HOG {video.name}", unit="frame"):
        ok, frame = capture.read()
        if not ok:
            break
        if index in wanted:
            image = cv2.resize(frame, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_LINEAR)
            rects, weights = hog.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=1.05)
            rects = np.asarray(rects, np.float64).reshape(-1, 4) / UPSCALE  # (K, 4) x, y, w, h
            found[index] = [[x, y, x + w, y + h, float(s)]
                            for (x, y, w, h), s in zip(rects.tolist(), np.reshape(weights, -1).tolist())]
    return found


def main() -> None:
    """Subprocess entry point: HOG detections of the given frames as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("video", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=int, nargs="+", required=True)
    args = parser.parse_args()
    args.out.write_text(json.dumps(_detect_all(args.video, args.frames)))


if __name__ == "__main__":
    main()
