"""CLI: ``provenance index``, ``provenance eval-data``, ``calibrate provenance`` and ``eval provenance``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..jsonsafe import dumps


def _cmd_index(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from .index import DEFAULT_SHARD_TOKENS, BuildReport, build_index

    report: BuildReport
    if args.engine == "ray":
        if args.shard_size is not None:
            raise InputError("--engine ray cuts shards by bytes: use --shard-bytes, not --shard-size")
        from .distributed import DEFAULT_SHARD_BYTES, build_index_ray

        shard_bytes = args.shard_bytes if args.shard_bytes is not None else DEFAULT_SHARD_BYTES
        report = build_index_ray(args.corpus, args.output, shard_bytes=shard_bytes, progress=not args.quiet)
    else:
        if args.shard_bytes is not None:
            raise InputError("--shard-bytes is for --engine ray; the local build cuts shards with --shard-size")
        shard_tokens = args.shard_size if args.shard_size is not None else DEFAULT_SHARD_TOKENS
        if len(args.corpus) > 1:
            raise InputError("the local build takes one corpus file: concatenate them, or use --engine ray")
        report = build_index(args.corpus[0], args.output, shard_tokens=shard_tokens, progress=not args.quiet)
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


def _eval_check(args: argparse.Namespace) -> Any:
    """The check ``eval provenance`` measures: the policy's, the calibration's, or index + threshold."""
    from ..errors import InputError
    from .calibration import ThresholdOrigin
    from .check import DEFAULT_THRESHOLD, ProvenanceCheck
    from .evaluate import check_from_calibration, check_from_policy
    from .index import CorpusIndex

    if args.policy is not None:
        if args.index is not None or args.calibration is not None or args.threshold is not None:
            raise InputError("--policy sets the index and threshold: drop --index, --calibration and --threshold")
        return check_from_policy(args.policy)
    if args.index is None:
        raise InputError("name the index (--index DIR) or a policy that has one (--policy FILE)")
    if args.calibration is not None:
        if args.threshold is not None:
            raise InputError("--calibration sets the threshold: drop --threshold")
        return check_from_calibration(args.index, args.calibration)
    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    kind = "default" if args.threshold is None else "policy"
    return ProvenanceCheck(
        CorpusIndex.load(args.index),
        min_span=args.min_span,
        threshold=threshold,
        origin=ThresholdOrigin(kind, threshold),
    )


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, read_answers

    result = evaluate(_eval_check(args), read_answers(args.answers))
    if args.json:
        print(dumps({k: v for k, v in result.items() if k != "roc"} | {"roc": result["roc"]}))
        return 0
    print(f"answers: {result['n_copied']} copied, {result['n_clean']} clean; min_span {result['min_span']}")
    print(result["threshold_origin"])
    print(
        f"threshold {result['threshold']:g}: detection rate {result['detection_rate']:.3f}, "
        f"false-positive rate {result['false_positive_rate']:.3f}"
    )
    print(f"AUROC of provenance.score: {result['auroc']:.4f}")
    print(f"{'threshold':>10} {'detection':>10} {'false pos':>10}")
    roc = result["roc"]
    step = max(1, len(roc) // 12)
    for point in roc[::step]:
        print(f"{point['threshold']:>10.2f} {point['tpr']:>10.3f} {point['fpr']:>10.3f}")
    return 0


def _read_benign(path: Path) -> list[str]:
    from .corpus import read_documents

    return [text for _, text in read_documents(path)]


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibration import ProvenanceCalibration
    from .index import CorpusIndex

    started = time.perf_counter()
    index = CorpusIndex.load(args.index)
    settings = {k: v for k, v in (("gram", args.gram), ("long_span", args.long_span)) if v is not None}
    calibration = ProvenanceCalibration(
        target_fpr=args.target_fpr,
        min_span=args.min_span,
        template_fraction=args.template_fraction,
        seed=args.seed,
        **settings,
    ).fit(index, _read_benign(args.benign))
    calibration.save(args.output)
    seconds = time.perf_counter() - started
    if args.json:
        fields = ("target_fpr", "n", "n_templates", "threshold", "achieved_fpr", "index_fingerprint")
        data = calibration.to_dict()
        print(dumps({k: data[k] for k in fields} | {"output": str(args.output), "seconds": round(seconds, 3)}))
        return 0
    print(
        f"threshold {calibration.threshold_:.4g} on provenance.score for target false-positive rate "
        f"{calibration.target_fpr:g}: {calibration.n_} calibration texts ({calibration.n_templates_} more gave "
        f"{len(calibration.settings_.templates)} template n-grams), in-sample rate {calibration.achieved_fpr_:.4f}"
    )
    print(f"wrote {args.output} (index {calibration.index_fingerprint_}) in {seconds:.1f} s")
    return 0


def register_cli(commands: argparse._SubParsersAction, groups: dict) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("provenance", help="build and inspect provenance (TraceShield) indexes")
    sub = parser.add_subparsers(dest="provenance_command", required=True)
    p = sub.add_parser("index", help="index a JSONL(.gz) corpus into suffix-array shards")
    p.add_argument(
        "--corpus", required=True, type=Path, nargs="+",
        help='JSONL(.gz), one {"id", "text"} per line (several files with --engine ray)',
    )  # fmt: skip
    p.add_argument("-o", "--output", required=True, type=Path, help="index folder")
    p.add_argument(
        "--shard-size", type=int, default=None,
        help="tokens per shard (default 250M): bounds the build's memory, ~9 bytes per token",
    )  # fmt: skip
    p.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local: this machine's cores; ray: shards built as Ray tasks (extra `ray`, docs/provenance-at-scale.md)",
    )  # fmt: skip
    p.add_argument("--shard-bytes", type=int, default=None, help="with --engine ray: corpus bytes per shard")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_index)
    p = sub.add_parser("eval-data", help="write an evaluation corpus and answers from offline unsafe texts")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_cmd_eval_data)

    p = groups["eval"].add_parser("provenance", help="detection and false-positive rates, AUROC, ROC")
    p.add_argument("--index", type=Path, help="index folder (not with --policy)")
    p.add_argument("--answers", required=True, type=Path, help='JSONL: {"text": ..., "copied": true|false}')
    p.add_argument("--calibration", type=Path, help="use this calibration's threshold and score settings")
    p.add_argument("--policy", type=Path, help="use this policy's index, min_span and threshold")
    p.add_argument("--threshold", type=float, help="hand-set threshold on provenance.score (default: 20)")
    p.add_argument("--min-span", type=int, default=8, help="with --threshold (a calibration or policy sets its own)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(handler=_cmd_eval)

    p = groups["calibrate"].add_parser(
        "provenance", help="threshold for a target false-positive rate on benign text (split conformal)"
    )
    p.add_argument("--index", required=True, type=Path, help="the index the policy will use")
    p.add_argument(
        "--benign", required=True, type=Path, help='JSONL(.gz) of {"id", "text"}: text that must not be flagged'
    )
    p.add_argument(
        "--target-fpr", type=float, default=0.01, help="bound on the false-positive rate on benign text (0.01)"
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="calibration artifact (JSON)")
    p.add_argument("--min-span", type=int, default=8, help="must equal the policy's provenance.min_span")
    p.add_argument("--gram", type=int, help="n-gram length of the templates learned from benign text (4)")
    p.add_argument("--long-span", type=int, help="copied spans this long count in full, whatever the templates (16)")
    p.add_argument(
        "--template-fraction",
        type=float,
        default=0.5,
        help="share of the benign texts whose n-grams become templates (the rest calibrate the threshold)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the template/calibration split")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(handler=_cmd_calibrate)
