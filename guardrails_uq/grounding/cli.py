"""``guardrails-uq calibrate grounding`` and ``guardrails-uq eval grounding``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import InputError


def _judge(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    if not args.judge_url:
        return None
    from ..models.openai_compat import OpenAIChatModel
    from .judge import JudgeScorer

    model = OpenAIChatModel(args.judge_url, args.judge_model, api_key_env=args.judge_api_key_env, timeout=args.timeout)
    return JudgeScorer(model)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from ..embeddings import default_embedder
    from .calibration import GroundingCalibration
    from .data import read_answers, read_chunks

    started = time.perf_counter()
    chunks = read_chunks(args.corpus)
    answers = [a for path in args.answers or () for a in read_answers(path)]
    calibration = GroundingCalibration(target_fpr=args.target_fpr, folds=args.folds, l2=args.l2, seed=args.seed)
    calibration.fit(chunks, default_embedder(), answers=answers, judge=_judge(args))
    calibration.save(args.output)
    summary = {k: v for k, v in calibration.to_dict().items() if k not in ("model", "scores", "judge")}
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["output"] = str(args.output)
    print(json.dumps(summary, allow_nan=False) if args.json else f"wrote {args.output}\n{calibration.describe()}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..embeddings import default_embedder
    from .calibration import GroundingCalibration
    from .check import GroundingCheck
    from .data import read_answers
    from .evaluate import evaluate_answers

    answers = read_answers(args.answers)
    if args.policy is not None:
        from ..guard import Guard

        with Guard.from_policy(args.policy, audit=False) as guard:
            found = [c for c in guard.checks["output"] if c.name == "grounding"]
            if not found or not isinstance(found[0], GroundingCheck):
                raise InputError("the policy has no grounding section", source=str(args.policy))
            report = evaluate_answers(found[0], answers, group_by=args.group_by)
    else:
        calibration = GroundingCalibration.load(args.calibration)
        target = args.target_fpr if args.target_fpr is not None else calibration.target_fpr
        check = GroundingCheck(
            calibration.scorer(default_embedder(), judge=_judge(args), path=args.calibration),
            calibration.threshold(target),
            origin=str(args.calibration),
        )
        report = evaluate_answers(check, answers, group_by=args.group_by)
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0


def _judge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--judge-url", default=None, help="score with an OpenAI-compatible judge at this base URL")
    p.add_argument("--judge-model", default="default", help="model name sent to the judge")
    p.add_argument("--judge-api-key-env", default=None, help="environment variable holding the judge's API key")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per judge request")


def register_cli(commands: argparse._SubParsersAction, groups: dict) -> None:  # type: ignore[type-arg]
    p = groups["calibrate"].add_parser(
        "grounding",
        help="fit the offline grounding scorer on a knowledge base and calibrate its flag to a false-positive rate",
    )
    p.add_argument("--corpus", required=True, type=Path, help='JSONL: {"id", "text"} chunks of the knowledge base')
    p.add_argument(
        "--answers",
        type=Path,
        action="append",
        default=None,
        help='JSONL of labelled answers {"question", "context": [...], "answer", "label"} (repeatable; answers over '
        "other knowledge bases help too): their supported answers join the calibration set (never the fitting data)",
    )
    p.add_argument("--target-fpr", type=float, default=0.05, help="false-positive rate on supported answers")
    p.add_argument("--folds", type=int, default=5, help="folds over chunks for out-of-fold calibration scores")
    p.add_argument("--l2", type=float, default=1e-3, help="L2 penalty of the scorer's model")
    p.add_argument("--seed", type=int, default=0)
    _judge_arguments(p)
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_calibrate)

    p = groups["eval"].add_parser(
        "grounding", help="the grounding check on labelled answers: AUROC, balanced accuracy, flagged rates"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", type=Path, default=None, help="use the policy's grounding section")
    source.add_argument("--calibration", type=Path, default=None, help="use this grounding calibration artifact")
    p.add_argument("--answers", required=True, type=Path, help='JSONL: {"question", "context", "answer", "label"}')
    p.add_argument("--target-fpr", type=float, default=None, help="with --calibration: another target")
    p.add_argument("--group-by", default=None, help="add per-value rates for this field of the answer lines")
    _judge_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_eval)
