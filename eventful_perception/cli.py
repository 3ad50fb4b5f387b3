"""`eventful-perception` command line: one subcommand per module, no ROS needed except for `replay`."""
from __future__ import annotations

import argparse
import importlib
import sys

# Each module exposes `add_parser(subparsers)`, which registers its subcommand(s) and sets
# `func(args) -> int` as the handler.
_COMMAND_MODULES = (
    "eventful_perception.assets",
    "eventful_perception.detect",
    "eventful_perception.bags",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventful-perception",
        description="Eventful Transformer object detection: set-up, offline detection, bag tools.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
