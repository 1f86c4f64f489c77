"""CLI: ``calibrate conformal``, ``eval conformal`` and ``conformal eval-data``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .calibration import SCORE_KINDS


def _retriever(args: argparse.Namespace):
    from ..embeddings import default_embedder
    from ..errors import InputError
    from .data import read_chunks, read_pairs
    from .retriever import EmbeddingRetriever

    chunks = read_chunks(args.corpus)
    retriever = EmbeddingRetriever(default_embedder(), chunks)
    if args.pairs is not None:
        return retriever, read_pairs(args.pairs, chunks)
    if not getattr(args, "llm", None):
        raise InputError("give --pairs (labelled) or --llm with --questions (generated)", source="calibrate conformal")
    from ..models import text_asker
    from .questions import generate_pairs

    ask = text_asker(args.llm, args.model, api_key_env=args.api_key_env, max_tokens=64)
    pairs = generate_pairs(chunks, ask, n=args.questions, seed=args.seed, retrieve=retriever, judge=args.judge)
    if not pairs:
        raise InputError("the LLM produced no usable question", source=str(args.llm))
    return retriever, pairs


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibration import ConformalCalibrator, calibrate

    retriever, pairs = _retriever(args)
    if args.engine == "ray":
        from ..call import ScoredDocument
        from ..ray_engine import scored_lists_with_ray

        chunks = dict(zip(retriever.ids, retriever.texts, strict=True))
        scored = scored_lists_with_ray(chunks, pairs)
        calibrator = ConformalCalibrator(score_kind=args.score_kind, fingerprint=retriever.fingerprint).fit(
            ([ScoredDocument(id=i, score=s) for i, s in ranked] for ranked, _ in scored),
            (relevant for _, relevant in scored),
        )
    else:
        calibrator = calibrate(retriever, pairs, score_kind=args.score_kind, fingerprint=retriever.fingerprint)
    calibrator.save(args.output)
    print(
        f"calibrated on {calibrator.n_calibration_} queries ({args.score_kind}); thresholds: "
        + ", ".join(f"alpha={a}: {calibrator.threshold(a, warn=False):.4g}" for a in (0.05, 0.1, 0.2))
        + f"; wrote {args.output}"
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import RetrievedSet, evaluate

    retriever, pairs = _retriever(args)
    scores, positions = retriever.search_many([p.query for p in pairs])
    flags = [[retriever.ids[c] in p.relevant for c in row] for p, row in zip(pairs, positions, strict=True)]
    data = RetrievedSet.from_lists(scores.tolist(), flags)
    kinds = SCORE_KINDS if args.score_kind == "all" else (args.score_kind,)
    alphas = [float(a) for a in args.alpha.split(",")]
    report = evaluate(data, alphas, splits=args.splits, kinds=kinds, max_kept=args.max_kept, seed=args.seed)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{len(pairs)} queries, {len(retriever.ids)} chunks, {args.splits} random 50/50 splits")
    head = f"{'score kind':<11} {'alpha':>6} {'coverage':>9} {'± std':>7} {'kept mean':>10} {'kept median':>12}"
    if args.max_kept:
        head += f" {'cov. capped':>12} {'kept capped':>12}"
    print(head)
    for row in report["results"]:
        line = (
            f"{row['score_kind']:<11} {row['alpha']:>6.2f} {row['coverage_mean']:>9.3f} {row['coverage_std']:>7.3f} "
            f"{row['kept_mean']:>10.1f} {row['kept_median']:>12.1f}"
        )
        if args.max_kept:
            line += f" {row['coverage_capped_mean']:>12.3f} {row['kept_capped_mean']:>12.1f}"
        print(line)
    print("baselines (all queries):")
    for row in report["baselines"]:
        print(f"  {row['baseline']:<18} coverage {row['coverage']:.3f}  kept mean {row['kept_mean']:.1f}")
    return 0


def _cmd_eval_data(args: argparse.Namespace) -> int:
    from .data import write_chatterbot

    chunks, pairs = write_chatterbot(args.output)
    print(f"wrote {chunks} and {pairs}")
    return 0


def register_cli(commands: argparse._SubParsersAction, groups: dict) -> None:  # type: ignore[type-arg]
    def common(p: argparse.ArgumentParser, *, pairs_required: bool = True) -> None:
        p.add_argument("--corpus", required=True, type=Path, help='chunks JSONL: {"id", "text"} per line')
        p.add_argument("--pairs", required=pairs_required, type=Path, help='pairs JSONL: {"query", "relevant": [ids]}')

    p = groups["calibrate"].add_parser(
        "conformal", help="calibrate a CONFLARE threshold from labelled pairs, or from LLM-generated questions"
    )
    common(p, pairs_required=False)
    p.add_argument("--llm", default=None, help="without --pairs: 'local' or an OpenAI-compatible base URL")
    p.add_argument("--model", default="default", help="model name sent to --llm")
    p.add_argument("--api-key-env", default=None)
    p.add_argument("--questions", type=int, default=200, help="chunks to write a question for")
    p.add_argument("--judge", action="store_true", help="LLM-judge chunks ranked above the source chunk")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--score-kind", choices=SCORE_KINDS, default="similarity")
    p.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="score the pairs locally or as a Ray Data job"
    )
    p.set_defaults(handler=_cmd_calibrate)

    p = groups["eval"].add_parser("conformal", help="coverage and chunks kept over random splits, vs baselines")
    common(p)
    p.add_argument("--alpha", default="0.05,0.1,0.2", help="comma-separated levels")
    p.add_argument("--splits", type=int, default=100)
    p.add_argument("--score-kind", choices=(*SCORE_KINDS, "all"), default="all")
    p.add_argument("--max-kept", type=int, default=None, help="also report coverage with the kept set capped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(handler=_cmd_eval)

    parser = commands.add_parser("conformal", help="conformal retrieval data helpers")
    sub = parser.add_subparsers(dest="conformal_command", required=True)
    p = sub.add_parser("eval-data", help="write chunks.jsonl and pairs.jsonl from chatterbot-corpus")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.set_defaults(handler=_cmd_eval_data)
