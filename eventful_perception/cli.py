"""`eventful-perception` command line: one subcommand per module, no ROS needed except for `replay`."""
from __future__ import annotations

import argparse
import sys

from eventful_perception import assets, bags, bench, detect, fit_exits

# Each module's `add_parser(subparsers)` registers its subcommand(s) and sets `func(args) -> int`.
_COMMAND_MODULES = (assets, detect, bags, bench, fit_exits)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventful-perception",
        description="Eventful Transformer object detection: set-up, offline detection, benchmarks, bag tools.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
