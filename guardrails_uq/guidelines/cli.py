"""CLI: ``guidelines build``, ``guidelines eval``, ``guidelines eval-data``, ``guidelines refusals``,
``guidelines calibration-data``, ``calibrate guidelines`` and ``eval input``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..jsonsafe import dumps
from ..numbers import FOLDS, FRACTION, L2, SEED, TARGET_FPR, number_argument


def _progress(done: int, total: int) -> None:
    sys.stderr.write(f"\r{done}/{total}")
    sys.stderr.flush()


def _cmd_build(args: argparse.Namespace) -> int:
    from ..embeddings import default_embedder
    from ..models import text_asker
    from .builder import build_library, read_prompts

    summary = build_library(
        read_prompts(args.prompts),
        text_asker(args.llm, args.model, api_key_env=args.api_key_env, timeout=args.timeout),
        default_embedder(),
        args.output,
        state=args.state,
        dedup=args.dedup,
        progress=None if args.quiet else _progress,
    )
    print(
        f"\n{summary.prompts} prompts ({summary.resumed} done before), {summary.risky} risky, "
        f"{summary.unparseable} unreadable replies; {summary.candidates} guidelines -> {summary.kept} after "
        f"de-duplication; wrote {args.output if summary.kept else '(nothing: no guidelines)'}"
    )
    return 0


def _index(path: Path):
    from ..embeddings import default_embedder
    from .index import GuidelineIndex
    from .library import GuidelineLibrary

    return GuidelineIndex.open(GuidelineLibrary.load(path), default_embedder())


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import read_labelled, recall_at_k

    report = recall_at_k(_index(args.library), read_labelled(args.prompts), min_score=None)
    report["with_guidelines_at_min_score"] = recall_at_k(
        _index(args.library), read_labelled(args.prompts), min_score=args.min_score
    )["with_guidelines"]
    print(
        dumps(report)
        if args.json
        else "\n".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in report.items())
    )
    return 0


def _cmd_eval_data(args: argparse.Namespace) -> int:
    from .evaluate import write_eval_data

    print("wrote " + " and ".join(str(p) for p in write_eval_data(args.output)))
    return 0


def _cmd_refusals(args: argparse.Namespace) -> int:
    import random

    from .. import datasets
    from ..call import Message
    from ..models.local import default_model
    from .evaluate import refusal_rates
    from .render import render_messages

    index = _index(args.library)
    model = default_model()
    rng = random.Random(args.seed)
    harmful = rng.sample([str(r["behavior"]) for r in datasets.advbench()], args.n)
    benign = rng.sample([str(r["question"]) for r in datasets.chatterbot() if r["category"] != "trivia"], args.n)

    def generate(messages: list[dict[str, str]]) -> str:
        return model.generate(messages, max_tokens=args.max_tokens, top_logprobs=0).text

    def inject(messages: list[dict[str, str]]) -> list[dict[str, str]]:
        retrieved = index.search(messages[-1]["content"], top_k=args.top_k, min_score=args.min_score)
        return [m.model_dump() for m in render_messages([Message.model_validate(m) for m in messages], retrieved)]

    report = {
        "n": args.n,
        "harmful_refusal_without": refusal_rates(harmful, generate, None),
        "harmful_refusal_with": refusal_rates(harmful, generate, inject),
        "benign_refusal_without": refusal_rates(benign, generate, None),
        "benign_refusal_with": refusal_rates(benign, generate, inject),
    }
    print(dumps(report) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0


def _cmd_calibration_data(args: argparse.Namespace) -> int:
    from .evaluate import write_calibration_data

    print("wrote " + " and ".join(str(p) for p in write_calibration_data(args.output)))
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import time

    from .calibration import Examples, HarmDetector, cross_validate, read_requests

    started = time.perf_counter()
    index = _index(args.library)
    detector = HarmDetector(
        target_fpr=args.target_fpr,
        calibration_fraction=args.calibration_fraction,
        l2=args.l2,
        augment=not args.no_augment,
        by_source=not args.pooled,
        seed=args.seed,
    )
    examples = Examples.embed(
        index.embedder, read_requests(args.harmful), read_requests(args.benign), augment=detector.augment
    )
    embedded = time.perf_counter() - started
    detector.fit_examples(index, examples)
    if args.cv:
        detector.cv_ = cross_validate(index, examples, detector, folds=args.cv)
    detector.measure_recall(index, examples)
    detector.save(args.output)
    warnings = detector.recall_warnings()
    report = {
        "output": str(args.output),
        "embed_seconds": round(embedded, 2),
        "fit_and_cv_seconds": round(time.perf_counter() - started - embedded, 2),
        **{k: v for k, v in detector.to_dict().items() if k not in ("model", "benign_scores", "harmful_scores")},
        "warnings": warnings,
    }
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(dumps(report))
    else:
        print(f"wrote {args.output}\n{detector.describe()}\n{detector.describe_recall()}")
        if detector.cv_:
            base = detector.cv_["baseline_guideline_similarity"]
            print(
                f"cross-validated AUROC {detector.cv_['auroc']:.3f}; guideline similarity alone: AUROC "
                f"{base['auroc']:.3f}, recall {base['recall_at_target_oracle_threshold']:.3f} at an oracle threshold"
            )
    return 0


def _cmd_eval_input(args: argparse.Namespace) -> int:
    from ..guard import Guard
    from .evaluate import evaluate_input, read_prompts

    rows = read_prompts(args.prompts)
    with Guard.from_policy(args.policy, audit=False) as guard:
        report = evaluate_input(guard, rows, score=args.score, group_by=args.group_by)
    print(
        dumps(report)
        if args.json
        else "\n".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in report.items())
    )
    return 0


def register_cli(commands: argparse._SubParsersAction, groups: dict) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("guidelines", help="build and evaluate guideline libraries (Guide-Align)")
    sub = parser.add_subparsers(dest="guidelines_command", required=True)
    p = sub.add_parser("build", help="write a library from prompts with an OpenAI-compatible LLM (resumable)")
    p.add_argument("--prompts", required=True, type=Path, help='JSONL: {"id"?: ..., "prompt": ...}')
    p.add_argument("--llm", required=True, help="base URL (e.g. http://127.0.0.1:8000/v1) or 'local'")
    p.add_argument("--model", default="default", help="model name sent to the URL")
    p.add_argument("--api-key-env", default=None)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--dedup", type=float, default=0.85, help="cosine similarity above which guidelines merge")
    p.add_argument("--state", type=Path, default=None, help="progress file (default: OUTPUT.state.jsonl)")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_cmd_build)
    p = sub.add_parser("eval", help="recall@1 and recall@4 of the intended category")
    p.add_argument("--library", required=True, type=Path)
    p.add_argument("--prompts", required=True, type=Path, help='JSONL: {"prompt", "category" | "categories"}')
    p.add_argument("--min-score", type=float, default=0.35)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_eval)
    p = sub.add_parser("eval-data", help="write labelled HarmBench and AdvBench prompt files")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.set_defaults(handler=_cmd_eval_data)
    p = sub.add_parser("refusals", help="refusal rates of the embedded model with and without guidelines")
    p.add_argument("--library", required=True, type=Path)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--min-score", type=float, default=0.35)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_refusals)
    p = sub.add_parser(
        "calibration-data", help="write harmful.jsonl and benign.jsonl for `calibrate guidelines` (offline data)"
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="folder")
    p.set_defaults(handler=_cmd_calibration_data)

    p = groups["calibrate"].add_parser(
        "guidelines",
        help="fit the harmful-request detector and calibrate it to a false-positive rate on benign requests",
    )
    p.add_argument("--library", required=True, type=Path, help="the guideline library the policy uses")
    p.add_argument("--harmful", required=True, type=Path, help='JSONL: {"text", "source"?, "weight"?} requests to flag')
    p.add_argument(
        "--benign", required=True, type=Path, help='JSONL: {"text", "source"?, "weight"?} requests not to flag'
    )
    number_argument(p, "--target-fpr", TARGET_FPR, default=0.05, help="false-positive rate on benign requests")
    number_argument(p, "--calibration-fraction", FRACTION, default=0.3, help="share of each class held for calibration")
    number_argument(p, "--l2", L2, default=100.0, help="L2 penalty of the logistic model")
    p.add_argument("--no-augment", action="store_true", help='do not add question forms of "how to" requests')
    p.add_argument(
        "--pooled", action="store_true", help="one threshold for all benign requests, not the largest per source"
    )
    number_argument(p, "--cv", FOLDS, default=5, help="folds of cross-validation to record (0: none)")
    number_argument(p, "--seed", SEED, default=0)
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_calibrate)

    p = groups["eval"].add_parser(
        "input", help="a policy's input phase on labelled prompts: recall, false-positive rate, AUROC"
    )
    p.add_argument("--policy", required=True, type=Path)
    p.add_argument(
        "--prompts",
        required=True,
        type=Path,
        help='JSONL: {"text" | "messages": [{"role", "content"}, ...], "harmful": true|false, ...}',
    )
    p.add_argument(
        "--group-by",
        default=None,
        metavar="FIELD",
        help='add "groups": {value: {"n", "recall", "false_positive_rate"}} by this field of the lines',
    )
    p.add_argument(
        "--score",
        default=None,
        help="signal whose AUROC to report (default: the number the first flagging input rule reads)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_eval_input)
