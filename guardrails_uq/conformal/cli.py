"""CLI: ``calibrate conformal``, ``eval conformal`` and ``conformal eval-data``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..jsonsafe import dumps
from .calibration import KIND_CHOICES, SCORE_KINDS
from .scores import HYBRID_WEIGHT
from .selection import DEFAULT_ALPHAS


def _alphas(text: str) -> tuple[float, ...]:
    return tuple(float(a) for a in text.split(","))


def _kinds(text: str) -> tuple[Any, ...]:
    from ..errors import InputError

    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in SCORE_KINDS]
    if unknown or not kinds:
        raise InputError(
            f"--candidates takes kinds among {', '.join(SCORE_KINDS)}; got {text!r}", source="--candidates"
        )
    return kinds


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


def _calibrator(args: argparse.Namespace, fingerprint: str):
    from .calibration import ConformalCalibrator

    return ConformalCalibrator(
        score_kind=args.score_kind,
        fingerprint=fingerprint,
        hybrid_weight=args.hybrid_weight,
        select_alphas=_alphas(args.select_alpha),
        seed=args.seed,
        candidates=_kinds(args.candidates),
    )


def _describe(calibrator: Any) -> str:
    """One line: the kind in use and, under auto, why."""
    if calibrator.selection_ is None:
        return f"score kind {calibrator.kind} (fixed)"
    selection = calibrator.selection_
    grid = ",".join(f"{a:g}" for a in selection.alphas)
    return (
        f"score kind {calibrator.kind} (auto: {selection.folds}-fold CV x{selection.repeats} at alpha {grid}; "
        f"{selection.reason})"
    )


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from ..call import ScoredDocument

    retriever, pairs = _retriever(args)
    if args.engine == "ray":
        from ..ray_engine import scored_lists_with_ray

        chunks = dict(zip(retriever.ids, retriever.texts, strict=True))
        scored = scored_lists_with_ray(chunks, pairs)
        # Ray returns lists without their queries: the lexical kinds cannot be scored (auto skips them).
        calibrator = _calibrator(args, retriever.fingerprint).fit(
            ([ScoredDocument(id=i, score=s) for i, s in ranked[: args.top_k]] for ranked, _ in scored),
            (relevant for _, relevant in scored),
        )
    else:
        queries = [p.query for p in pairs]
        calibrator = _calibrator(args, retriever.fingerprint).fit(
            retriever.retrieve_many(queries, args.top_k), (p.relevant for p in pairs), queries
        )
    calibrator.save(args.output)
    print(
        f"calibrated on {calibrator.n_calibration_} queries ({_describe(calibrator)}); thresholds: "
        + ", ".join(f"alpha={a}: {calibrator.threshold(a, warn=False):.4g}" for a in (0.05, 0.1, 0.2))
        + f"; wrote {args.output}"
    )
    return 0


def _retrieved_set(args: argparse.Namespace, retriever: Any, pairs: list, hybrid_weight: float):
    from .evaluate import RetrievedSet

    scores, positions = retriever.search_many([p.query for p in pairs], args.top_k)
    flags = [[retriever.ids[c] in p.relevant for c in row] for p, row in zip(pairs, positions, strict=True)]
    texts = [[retriever.texts[c] for c in row] for row in positions]
    return RetrievedSet.from_lists(
        scores.tolist(), flags, queries=[p.query for p in pairs], texts=texts, hybrid_weight=hybrid_weight
    )


def _cmd_eval_calibration(args: argparse.Namespace, retriever: Any, pairs: list) -> int:
    from ..errors import ArtifactError
    from .calibration import ConformalCalibrator
    from .evaluate import evaluate_calibration

    calibrator = ConformalCalibrator.load(args.calibration)
    if calibrator.fingerprint != retriever.fingerprint:
        raise ArtifactError(
            args.calibration,
            f"calibrated on {calibrator.fingerprint!r}, but this retriever is {retriever.fingerprint!r}",
            fix="evaluate with the retriever the calibration was made with",
        )
    data = _retrieved_set(args, retriever, pairs, calibrator.hybrid_weight)
    rows = evaluate_calibration(data, calibrator, _alphas(args.alpha))
    if args.json:
        selection = None if calibrator.selection_ is None else calibrator.selection_.to_dict()
        print(
            dumps(
                {
                    "score_kind": calibrator.kind,
                    "n": calibrator.n_calibration_,
                    "selection": selection,
                    "held_out": len(pairs),
                    "results": rows,
                }
            )
        )
        return 0
    print(f"{args.calibration}: {calibrator.n_calibration_} calibration queries, {_describe(calibrator)}")
    print(f"on {len(pairs)} queries, {len(retriever.ids)} chunks (a held-out rate only if it never saw these queries):")
    print(f"{'alpha':>6} {'target':>7} {'coverage':>9} {'kept mean':>10} {'kept median':>12}")
    for row in rows:
        print(
            f"{row['alpha']:>6.2f} {1 - row['alpha']:>7.2f} {row['coverage']:>9.3f} {row['kept_mean']:>10.1f} "
            f"{row['kept_median']:>12.1f}"
        )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    retriever, pairs = _retriever(args)
    if args.calibration is not None:
        return _cmd_eval_calibration(args, retriever, pairs)
    data = _retrieved_set(args, retriever, pairs, args.hybrid_weight)
    kinds = None if args.score_kind == "all" else (args.score_kind,)
    alphas = _alphas(args.alpha)
    report = evaluate(
        data,
        alphas,
        splits=args.splits,
        kinds=kinds,
        max_kept=args.max_kept,
        seed=args.seed,
        select_alphas=_alphas(args.select_alpha),
        candidates=_kinds(args.candidates),
    )
    if args.json:
        print(dumps(report))
        return 0
    print(f"{len(pairs)} queries, {len(retriever.ids)} chunks, {args.splits} random 50/50 splits")
    head = f"{'score kind':<15} {'alpha':>6} {'coverage':>9} {'± std':>7} {'kept mean':>10} {'kept median':>12}"
    if args.max_kept:
        head += f" {'cov. capped':>12} {'kept capped':>12}"
    print(head)
    for row in report["results"]:
        line = (
            f"{row['score_kind']:<15} {row['alpha']:>6.2f} {row['coverage_mean']:>9.3f} {row['coverage_std']:>7.3f} "
            f"{row['kept_mean']:>10.1f} {row['kept_median']:>12.1f}"
        )
        if args.max_kept:
            line += f" {row['coverage_capped_mean']:>12.3f} {row['kept_capped_mean']:>12.1f}"
        if "picks" in row:
            line += "  picks " + ", ".join(f"{k} {v}" for k, v in row["picks"].items())
        print(line)
    if "selection" in report:
        selection = report["selection"]
        print(f"auto picks {selection['chosen']} on all {len(pairs)} queries: {selection['reason']}")
    print("baselines (all queries):")
    for row in report["baselines"]:
        print(f"  {row['baseline']:<18} coverage {row['coverage']:.3f}  kept mean {row['kept_mean']:.1f}")
    return 0


def _cmd_eval_data(args: argparse.Namespace) -> int:
    from .data import write_chatterbot

    chunks, pairs = write_chatterbot(args.output)
    print(f"wrote {chunks} and {pairs}")
    return 0


def _scoring_options(p: argparse.ArgumentParser) -> None:
    grid = ",".join(f"{a:g}" for a in DEFAULT_ALPHAS)
    p.add_argument(
        "--top-k", type=int, default=None, help="retrieve this many chunks per query, as production does (default: all)"
    )
    p.add_argument(
        "--hybrid-weight", type=float, default=HYBRID_WEIGHT, help="similarity a perfect BM25 match adds (hybrid kinds)"
    )
    p.add_argument("--select-alpha", default=grid, help="alphas at which auto compares the kinds (comma-separated)")
    p.add_argument(
        "--candidates",
        default=",".join(SCORE_KINDS),
        help="kinds auto chooses among (comma-separated); relative, rank and hybrid-relative always keep the top "
        "chunk, so a policy that abstains on retrieval.kept == 0 wants similarity,hybrid",
    )


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
    p.add_argument(
        "--score-kind",
        choices=KIND_CHOICES,
        default="auto",
        help="auto: the kind keeping fewest chunks at equal coverage, by cross-validation on the pairs",
    )
    _scoring_options(p)
    p.add_argument(
        "--engine", choices=("local", "ray"), default="local", help="score the pairs locally or as a Ray Data job"
    )
    p.set_defaults(handler=_cmd_calibrate)

    p = groups["eval"].add_parser("conformal", help="coverage and chunks kept over random splits, vs baselines")
    common(p)
    p.add_argument("--alpha", default="0.05,0.1,0.2", help="comma-separated levels")
    p.add_argument("--splits", type=int, default=100)
    p.add_argument("--score-kind", choices=(*SCORE_KINDS, "auto", "all"), default="all")
    p.add_argument("--max-kept", type=int, default=None, help="also report coverage with the kept set capped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="evaluate this artifact (its kind and thresholds) on the pairs as held-out queries, instead of splits",
    )
    _scoring_options(p)
    p.set_defaults(handler=_cmd_eval)

    parser = commands.add_parser("conformal", help="conformal retrieval data helpers")
    sub = parser.add_subparsers(dest="conformal_command", required=True)
    p = sub.add_parser("eval-data", help="write chunks.jsonl and pairs.jsonl from chatterbot-corpus")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.set_defaults(handler=_cmd_eval_data)
