"""Write a YOLOS-small-sized checkpoint folder with random weights (for speed and state size).

`hustvl/yolos-small` cannot be downloaded on the development machines; this folder has its
shapes (ViT-S: 12 layers, width 384, 6 heads, 100 detection tokens, no mid position embeddings,
800/1333 preprocessing), written by transformers, so `bench` measures the speed and the stream
state of a real COCO checkpoint's size (a 768x576 frame -> 3451 tokens). Its detections mean
nothing; compare features (`feature_cosine`). Needs transformers (a dev dependency). Example:

    python benchmarks/random_yolos_small.py out/yolos-small-random
    eventful-perception bench vtest.avi --model out/yolos-small-random --budgets 1.0,0.1 --frames 6 --json out/yolos.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def write(folder: Path) -> Path:
    from transformers import YolosConfig, YolosForObjectDetection

    torch.manual_seed(0)
    config = YolosConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                         image_size=[800, 1333], num_detection_tokens=100, use_mid_position_embeddings=False)
    YolosForObjectDetection(config).eval().save_pretrained(folder)
    processor = {"size": {"shortest_edge": 800, "longest_edge": 1333}, "image_processor_type": "YolosImageProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="checkpoint folder to write")
    print(f"wrote {write(parser.parse_args().folder).resolve()}")


if __name__ == "__main__":
    main()
