"""``guardrails-uq calibrate injection``, ``guardrails-uq eval injection`` and ``guardrails-uq injection ...``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from ..embeddings import default_embedder
    from .calibration import InjectionDetector, read_documents

    detector = InjectionDetector(
        target_fpr=args.target_fpr, calibration_fraction=args.calibration_fraction, l2=args.l2, seed=args.seed
    ).fit(default_embedder(), read_documents(args.benign, label=False), read_documents(args.injected, label=True))
    detector.save(args.output)
    if args.json:
        skip = ("model", "benign_scores", "injected_scores")
        print(
            json.dumps({"output": str(args.output), **{k: v for k, v in detector.to_dict().items() if k not in skip}})
        )
    else:
        print(f"wrote {args.output}\n{detector.describe()}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..guard import Guard
    from .evaluate import evaluate_policy, read_labelled

    rows = read_labelled(args.documents)
    with Guard.from_policy(args.policy, audit=False) as guard:
        report = evaluate_policy(guard, rows, score=args.score)
    print(json.dumps(report) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0


def _cmd_eval_data(args: argparse.Namespace) -> int:
    from .data import write

    print("wrote " + " and ".join(str(p) for p in write(args.output, seed=args.seed)))
    return 0


def _cmd_logo(args: argparse.Namespace) -> int:
    from ..embeddings import default_embedder
    from ..jsonl import read_jsonl
    from .calibration import Document, InjectionDetector
    from .evaluate import leave_one_group_out

    benign = [r for _, r in read_jsonl(args.benign)]
    injected = [r for _, r in read_jsonl(args.injected)]
    report = leave_one_group_out(
        default_embedder(),
        [Document(r["text"], r.get("source", "")) for r in benign],
        [Document(r["text"], r.get("source", ""), r.get("span")) for r in injected],
        {field: [str(r.get(field, "")) for r in injected] for field in args.injected_group_by},
        [str(r.get(args.benign_group_by, "")) for r in benign],
        InjectionDetector(target_fpr=args.target_fpr, l2=args.l2),
    )
    print(json.dumps(report, indent=None if args.json else 1))
    return 0


def register_cli(commands: argparse._SubParsersAction, groups: dict) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("injection", help="data and held-out evaluation of the injection detector")
    sub = parser.add_subparsers(dest="injection_command", required=True)
    p = sub.add_parser(
        "eval-data", help="write benign.jsonl and injected.jsonl (tool results written for this project)"
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="folder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_cmd_eval_data)
    p = sub.add_parser("logo", help="leave-one-group-out recall per injected group and FPR per benign group")
    p.add_argument("--benign", required=True, type=Path)
    p.add_argument("--injected", required=True, type=Path)
    p.add_argument("--injected-group-by", nargs="+", default=["style", "carrier"], help="fields of injected lines")
    p.add_argument("--benign-group-by", default="group", help="field of benign lines")
    p.add_argument("--target-fpr", type=float, default=0.01)
    p.add_argument("--l2", type=float, default=1.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_logo)

    p = groups["calibrate"].add_parser(
        "injection", help="fit the injection detector and calibrate it to a false-positive rate on benign tool results"
    )
    p.add_argument("--benign", required=True, type=Path, help='JSONL: {"text", "source"?} tool results not to flag')
    p.add_argument(
        "--injected", required=True, type=Path, help='JSONL: {"text", "source"?, "span"?} tool results to flag'
    )
    p.add_argument("--target-fpr", type=float, default=0.01, help="false-positive rate on benign tool results")
    p.add_argument("--calibration-fraction", type=float, default=0.4, help="share of each source held for calibration")
    p.add_argument("--l2", type=float, default=1.0, help="L2 penalty of the logistic model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_calibrate)

    p = groups["eval"].add_parser(
        "injection", help="a policy's retrieval phase on labelled tool results: recall, false-positive rate, AUROC"
    )
    p.add_argument("--policy", required=True, type=Path)
    p.add_argument("--documents", required=True, type=Path, help='JSONL: {"text", "injection": true|false, "task"?}')
    p.add_argument("--score", default="injection.score", help="signal whose AUROC to report")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_eval)
