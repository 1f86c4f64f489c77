"""CLI: ``answer-harm calibration-data`` (the rows the shipped answer calibration is fitted on)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_calibration_data(args: argparse.Namespace) -> int:
    from .data import write_calibration_data

    print("wrote " + " and ".join(str(p) for p in write_calibration_data(args.output)))
    return 0


def register_cli(commands: argparse._SubParsersAction, groups: dict) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("answer-harm", help="data for the harmful-answer check (policy section answer_harm)")
    sub = parser.add_subparsers(dest="answer_harm_command", required=True)
    p = sub.add_parser(
        "calibration-data",
        help="write harmful.jsonl and benign.jsonl (labelled answers) for `calibrate guidelines`",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="folder")
    p.set_defaults(handler=_cmd_calibration_data)
