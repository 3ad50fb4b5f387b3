"""Annotated held-out frames for looking at the head: its `person` boxes and the `hand` labels."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from eventful_perception import drawing
from eventful_perception.models.token_head import TokenHead
from eventful_perception.training import footage
from eventful_perception.training.labels import hand_labels

# Frames worth looking at: the hand-labelled ones, empty street, close-up, cartoon.
EXTRA_FRAMES = {"bikes.mp4": [60, 160, 230], "bigbuckbunny.mp4": [60], "carphone_pristine.mp4": [50]}
SHORT_SIDES = (224, 448)


def write_annotated(head: TokenHead, features, folder: Path, threshold: float) -> list[Path]:
    """PNGs `<video>_<frame>_<short side>.png` of the frames above at short sides 224 and 448."""
    from eventful_perception.training.evaluate import predict

    folder.mkdir(parents=True, exist_ok=True)
    hand = hand_labels()
    wanted = {v: sorted(set(hand.get(v, {})) | set(EXTRA_FRAMES.get(v, []))) for v in set(hand) | set(EXTRA_FRAMES)}
    written = []
    for video, frames in sorted(wanted.items()):
        for frame, rgb in footage.video_frames(video, frames):
            for side in SHORT_SIDES:
                found = predict(head, features.get(video, [frame], side)[frame], threshold)
                image = rgb.copy()
                if frame in hand.get(video, {}):
                    boxes = hand[video][frame].boxes
                    image = drawing.draw_detections(image, boxes, np.ones(len(boxes)), ["hand"] * len(boxes))
                image = drawing.draw_detections(image, found.boxes, found.scores, found.labels)
                written.append(folder / f"{Path(video).stem}_{frame}_{side}.png")
                cv2.imwrite(str(written[-1]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return written
