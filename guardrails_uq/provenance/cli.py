"""CLI: ``provenance index``, ``provenance eval-data`` and ``eval provenance``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _cmd_index(args: argparse.Namespace) -> int:
    from .index import build_index

    report = build_index(args.corpus, args.output, shard_tokens=args.shard_size, progress=not args.quiet)
    print(
        f"indexed {report.documents:,} documents, {report.tokens:,} tokens into {args.output} "
        f"({report.shards} shard(s), {report.resumed_shards} reused) in {report.seconds:.1f} s"
    )
    return 0


def _cmd_eval_data(args: argparse.Namespace) -> int:
    from .evaldata import build

    corpus, answers = build(args.output, seed=args.seed)
    print(f"wrote {corpus} and {answers}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, read_answers
    from .index import CorpusIndex

    result = evaluate(
        CorpusIndex.load(args.index), read_answers(args.answers), threshold=args.threshold, min_span=args.min_span
    )
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "roc"} | {"roc": result["roc"]}))
        return 0
    print(f"answers: {result['n_copied']} copied, {result['n_clean']} clean; min_span {result['min_span']}")
    print(
        f"threshold {result['threshold']:g}: detection rate {result['detection_rate']:.3f}, "
        f"false-positive rate {result['false_positive_rate']:.3f}"
    )
    print(f"AUROC of bci_max: {result['auroc']:.4f}")
    print(f"{'threshold':>10} {'detection':>10} {'false pos':>10}")
    roc = result["roc"]
    step = max(1, len(roc) // 12)
    for point in roc[::step]:
        print(f"{point['threshold']:>10.2f} {point['tpr']:>10.3f} {point['fpr']:>10.3f}")
    return 0


def register_cli(commands: argparse._SubParsersAction, groups: dict) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("provenance", help="build and inspect provenance (TraceShield) indexes")
    sub = parser.add_subparsers(dest="provenance_command", required=True)
    p = sub.add_parser("index", help="index a JSONL(.gz) corpus into suffix-array shards")
    p.add_argument("--corpus", required=True, type=Path, help='JSONL(.gz), one {"id", "text"} per line')
    p.add_argument("-o", "--output", required=True, type=Path, help="index folder")
    p.add_argument(
        "--shard-size", type=int, default=250_000_000, help="tokens per shard: bounds memory (~16 bytes/token)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_index)
    p = sub.add_parser("eval-data", help="write an evaluation corpus and answers from offline unsafe texts")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_cmd_eval_data)

    p = groups["eval"].add_parser("provenance", help="detection and false-positive rates, AUROC, ROC")
    p.add_argument("--index", required=True, type=Path)
    p.add_argument("--answers", required=True, type=Path, help='JSONL: {"text": ..., "copied": true|false}')
    p.add_argument("--threshold", type=float, default=20.0, help="BCI threshold (TraceShield: 20)")
    p.add_argument("--min-span", type=int, default=8)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(handler=_cmd_eval)
