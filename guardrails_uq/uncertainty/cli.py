"""CLI: ``deferral fit``, ``calibrate deferral``, ``eval uncertainty`` and ``uncertainty eval-data``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..jsonsafe import dumps
from ..numbers import DELTA, L2, TARGET_ERROR, number_argument


def _cmd_fit(args: argparse.Namespace) -> int:
    from .deferral import PostHocDeferral, read_calls

    answers, labels = read_calls(args.calls)
    model = PostHocDeferral(l2=args.l2).fit(answers, labels)
    model.save(args.output)
    print(
        f"fitted on {model.n_train_} calls ({sum(labels)} correct); training AUROC {model.train_auroc_:.3f}; wrote {args.output}"
    )
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .deferral import read_calls
    from .risk import calibrate_risk
    from .token_scores import TOKEN_SCORE_NAMES, token_scores

    answers, labels = read_calls(args.calls)
    if args.score == "defer_prob":
        from ..errors import InputError
        from .deferral import PostHocDeferral

        if args.deferral is None:
            raise InputError("--score defer_prob needs --deferral MODEL.json (fitted on other calls)", source="--score")
        model = PostHocDeferral.load(args.deferral)
        scores = [model.predict(tokens) for tokens in answers]
    elif args.score in TOKEN_SCORE_NAMES:
        scores = [token_scores(tokens)[args.score] for tokens in answers]
    else:
        from ..errors import InputError

        raise InputError(
            f"unknown score {args.score!r}; use defer_prob or one of {list(TOKEN_SCORE_NAMES)}", source="--score"
        )
    control = calibrate_risk(
        scores, [not c for c in labels], target_error=args.target_error, delta=args.delta, score=args.score
    )
    control.save(args.output)
    if control.certified:
        print(
            f"certified: allow when {args.score} <= {control.threshold:.6g} "
            f"(error among allowed <= {args.target_error} with probability >= {1 - args.delta}); "
            f"on {control.n} calls it allows {control.allowed_fraction:.1%} with error {control.calibration_error:.3f}; "
            f"wrote {args.output}"
        )
    else:
        print(
            f"warning: no threshold can be certified for error <= {args.target_error} at delta {args.delta} "
            f"from {control.n} calls: the calibration allows nothing (every answer is deferred). "
            f"More labelled calls, a larger target, or a better score would help. Wrote {args.output}",
            file=sys.stderr,
        )
    return 0


def _model(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(generate, sample, answer_and_samples or None) for the chosen model."""
    if args.model == "local":
        from ..models.local import default_model

        model = default_model()
        return (
            lambda messages: model.generate(messages, max_tokens=args.max_tokens, top_logprobs=5),
            lambda messages, n: model.sample(messages, n, max_tokens=args.max_tokens, top_logprobs=0),
            lambda messages, n: model.answer_and_samples(messages, n, max_tokens=args.max_tokens, top_logprobs=5),
        )
    from ..models.openai_compat import OpenAIChatModel

    client = OpenAIChatModel(args.model, args.model_name, api_key_env=args.api_key_env)
    return (
        lambda messages: client.generate(messages, max_tokens=args.max_tokens, top_logprobs=5),
        lambda messages, n: client.chat_many(
            messages, n=n, temperature=1.0, max_tokens=args.max_tokens, top_logprobs=0
        ),
        None,  # the greedy answer and temperature-1 samples need two requests here
    )


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, read_qa

    rows = read_qa(args.data)[: args.limit or None]
    generate, sample, answer_and_samples = _model(args)
    embed = None
    if args.samples or args.sar:
        from ..embeddings import default_embedder

        embed = default_embedder().embed

    def progress(done: int, total: int) -> None:
        if not args.json:
            sys.stderr.write(f"\r{done}/{total} answered")
            sys.stderr.flush()

    risk = (
        {"score": args.risk_score, "target_error": args.target_error, "delta": args.delta}
        if args.target_error
        else None
    )
    calls: list[dict[str, Any]] | None = [] if args.calls_out else None
    report = evaluate(
        rows,
        generate,
        sample=sample,
        answer_and_samples=answer_and_samples,
        n_samples=args.samples,
        embed=embed,
        progress=progress,
        risk=risk,
        calls=calls,
    )
    if args.calls_out and calls is not None:
        args.calls_out.parent.mkdir(parents=True, exist_ok=True)
        args.calls_out.write_text("".join(json.dumps(c) + "\n" for c in calls), encoding="utf-8")
    if args.json:
        print(dumps(report))
        return 0
    _print_report(report)
    return 0


def _print_report(report: dict[str, Any]) -> None:
    print(f"\n{report['n']} questions, accuracy {report['accuracy']:.3f}")
    print(f"{'score':<22} {'AUROC':>7} {'PRR':>7} {'PRR@0.5':>8}")
    for name, row in report["scores"].items():
        print(f"{name:<22} {row['auroc']:>7.3f} {row['prr']:>7.3f} {row['prr_0.5']:>8.3f}")
    print("deferral curve area (" + report["note"] + "):")
    for rule, row in report["deferral"].items():
        print(f"  {rule:<20} {row['auc']:.4f}")
    if "heldout_deferral" in report:
        held = report["heldout_deferral"]
        print(f"held-out halves ({held['splits']} splits, risk control at delta {held['delta']}):")
        for rule, auc in held["auc"].items():
            print(f"  {rule:<28} {auc:.4f}")
    if "risk_control" in report:
        rc = report["risk_control"]
        print(
            f"risk control on {rc['score']} (target error {rc['target_error']}, delta {rc['delta']}, {rc['splits']} splits): "
            f"violation rate {rc['violation_rate']:.3f}, error among allowed {rc['realized_error_mean']:.3f}, "
            f"allowed {rc['allowed_fraction']:.1%}"
        )


def _cmd_eval_data(args: argparse.Namespace) -> int:
    from .evaluate import QUESTION_SETS

    print(f"wrote {QUESTION_SETS[args.set](args.output)}")
    return 0


def register_cli(commands: argparse._SubParsersAction, groups: dict) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("deferral", help="learned post-hoc deferral (LM cascades)")
    sub = parser.add_subparsers(dest="deferral_command", required=True)
    p = sub.add_parser("fit", help='fit from past calls: JSONL {"logprobs": ..., "correct": bool}')
    p.add_argument("--calls", required=True, type=Path)
    p.add_argument("-o", "--output", required=True, type=Path)
    number_argument(p, "--l2", L2, default=1.0, help="L2 penalty of the logistic model")
    p.set_defaults(handler=_cmd_fit)

    p = groups["eval"].add_parser("uncertainty", help="AUROC, PRR and deferral curves of every uncertainty score")
    p.add_argument("--data", required=True, type=Path, help='JSONL: {"question": ..., "answers": [...]}')
    p.add_argument("--model", default="local", help="'local' (embedded SmolLM2) or an OpenAI-compatible base URL")
    p.add_argument("--model-name", default="default", help="model name sent to the URL")
    p.add_argument("--api-key-env", default=None)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--samples", type=int, default=0, help="extra samples per question for sample-based scores")
    p.add_argument("--sar", action="store_true", help="also TokenSAR without samples (loads the embedder)")
    p.add_argument(
        "--calls-out", type=Path, default=None, help="also write calls.jsonl for `calibrate deferral` / `deferral fit`"
    )
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N questions")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--target-error", type=float, default=None, help="also evaluate risk-controlled deferral")
    p.add_argument("--delta", type=float, default=0.1, help="risk control: allowed probability of exceeding it")
    p.add_argument("--risk-score", default="max_nll", help="risk control: the score thresholded (or defer_prob)")
    p.set_defaults(handler=_cmd_eval)

    p = groups["calibrate"].add_parser(
        "deferral", help="certified deferral threshold: error among allowed answers <= target w.p. >= 1-delta"
    )
    p.add_argument("--calls", required=True, type=Path, help='JSONL {"logprobs": ..., "correct": bool}')
    p.add_argument("--score", required=True, help="defer_prob (with --deferral) or a token score, e.g. max_nll")
    p.add_argument("--deferral", type=Path, default=None, help="post-hoc deferral model for --score defer_prob")
    number_argument(p, "--target-error", TARGET_ERROR, required=True, help="largest error among allowed answers")
    number_argument(p, "--delta", DELTA, default=0.1, help="allowed probability that the guarantee fails")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.set_defaults(handler=_cmd_calibrate)

    parser = commands.add_parser("uncertainty", help="uncertainty data helpers")
    sub = parser.add_subparsers(dest="uncertainty_command", required=True)
    p = sub.add_parser("eval-data", help="write a qa.jsonl question set (chatterbot-corpus trivia, or world facts)")
    p.add_argument("--set", choices=("trivia", "world-facts"), default="trivia", help="which question set")
    p.add_argument("-o", "--output", required=True, type=Path)
    p.set_defaults(handler=_cmd_eval_data)
