"""The ``guardrails-uq`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import GuardrailsError
from .numbers import MAX_REQUESTS, number_argument

if TYPE_CHECKING:
    from .policy import CompiledPolicy

Handler = Callable[[argparse.Namespace], int]


def _cmd_policy_check(args: argparse.Namespace) -> int:
    from .policy import load_policy

    policy = load_policy(args.file)
    failures = _verify_artifacts(policy, args.embedder)
    for warning in policy.warnings:
        print(f"warning: {args.file}: {warning}", file=sys.stderr)
    if failures:
        for failure in failures:
            print(f"error: {args.file}: {failure}", file=sys.stderr)
        return 2
    counts = {phase: len(rules.rules) for phase, rules in policy.phases.items()}
    checks = [spec.name for spec in policy.configured_checks()] or ["none"]
    print(
        f"ok: {args.file}: policy {policy.name!r}, checks: {', '.join(checks)}, rules: "
        + ", ".join(f"{n} at {p}" for p, n in counts.items())
    )
    for spec in policy.configured_checks():
        for line in spec.explain(policy.section(spec.name), policy.base_dir):
            print(f"  {spec.name}: {line}")
    if policy.observe_only:
        print("  mode: shadow (every rule, the default and on_error are recorded, never enforced)")
    elif shadow := policy.shadow_rules():
        print(f"  shadow rules: {', '.join(shadow)} (recorded in Decision.shadow, never enforced)")
    if args.deployment == "serve":
        from .policy.deployment import serve_warnings

        for warning in serve_warnings(policy):
            print(f"warning: {args.file}: serve: {warning}", file=sys.stderr)
    return 0


def _verify_artifacts(policy: CompiledPolicy, embedder: str | None) -> list[str]:
    """Every artifact the policy names verified as the Guard will verify it when it starts (checksums, manifests,
    the embedder they were made with: ``embedder``, default the packaged MiniLM); each check's warnings are
    appended to ``policy.warnings``. Returns one message per check whose artifacts fail (file and fix)."""
    from .checks import verify_section
    from .embeddings import MiniLMEmbedder

    name = embedder or MiniLMEmbedder().name
    failures = []
    for spec in policy.configured_checks():
        try:
            policy.warnings.extend(verify_section(spec, policy.section(spec.name), policy.base_dir, name))
        except GuardrailsError as exc:
            failures.append(f"{spec.name}: {exc}")
    return failures


def _cmd_policy_schema(args: argparse.Namespace) -> int:
    from .formats import json_schema

    text = json.dumps(json_schema(args.format), indent=2, sort_keys=True) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _cmd_policy_test(args: argparse.Namespace) -> int:
    from .policy import load_policy, render_results, run_cases

    results = run_cases(load_policy(args.file), args.cases)
    print(render_results(results, args.cases))
    return 0 if all(r.passed for r in results) else 1


def _read_call(path: str) -> object:
    from .formats import read_call

    return read_call(path)  # InputError listing every problem of the file, each with its field and fix


def _cmd_check(args: argparse.Namespace) -> int:
    from .guard import Guard

    call = _read_call(args.call)
    with Guard.from_policy(args.policy, audit=not args.no_audit) as guard:
        decision = guard.check(call)  # type: ignore[arg-type]
    if args.explain:
        print(decision.explain())
        if decision.signals:
            print("  signals:")
            width = max(len(n) for n in decision.signals)
            for name, value in sorted(decision.signals.items()):
                print(f"    {name.ljust(width)}  {value!r}")
    else:
        print(decision.model_dump_json(indent=2))
    return 0


def _cmd_audit_tail(args: argparse.Namespace) -> int:
    from collections import deque

    from .audit import PolicyFilter, ReadReport, read_audit

    report = ReadReport()
    only = PolicyFilter(args.policy)
    last = deque(only(read_audit(args.log, report)), maxlen=args.n)
    if (problem := only.problem(args.log)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    for decision in last:
        if args.json:
            print(decision.model_dump_json())
        else:
            rule = decision.rule_label
            stamp = datetime.fromtimestamp(decision.time, tz=UTC).isoformat(timespec="milliseconds")
            shadow = decision.shadow
            note = f"  (shadow: {shadow.action.value} {shadow.label})" if shadow is not None else ""
            print(f"{stamp}  {decision.phase:<9}  {decision.action.value:<8}  {rule}{note}")
    if report.torn:
        print(f"warning: skipped {report.torn} damaged record(s): {report.skipped[:10]}", file=sys.stderr)
    return 0


def _cmd_audit_stats(args: argparse.Namespace) -> int:
    from .audit import PolicyFilter, ReadReport, dumps_stats, read_audit, stats

    report = ReadReport()
    only = PolicyFilter(args.policy)
    summary = stats(only(read_audit(args.log, report, progress="audit stats")))
    if (problem := only.problem(args.log)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    summary["damaged_lines"] = report.torn
    if args.json:
        print(dumps_stats(summary))
        return 0
    requests = summary["requests"]
    print(
        f"{requests['total']} requests, {summary['total']} decisions "  # type: ignore[index]
        f"({summary['damaged_lines']} damaged records skipped)"
    )
    for title in ("by_action", "by_rule"):
        print(f"requests {title.replace('_', ' ')}:")
        for key, count in requests[title].items():  # type: ignore[index]
            print(f"  {key:<30} {count}")
    for title in ("by_action", "by_rule", "by_phase"):
        print(f"decisions {title.replace('_', ' ')}:")
        for key, count in summary[title].items():  # type: ignore[attr-defined]
            print(f"  {key:<30} {count}")
    shadow: dict[str, dict[str, int]] = summary["shadow_by_rule"]  # type: ignore[assignment]
    if shadow:
        print("shadow outcomes by rule (decisions; not enforced):")
        for rule, actions in shadow.items():
            print(f"  {rule:<30} " + ", ".join(f"{action} {count}" for action, count in actions.items()))
        print("shadow changes (enforced -> shadow):")
        for change, count in summary["shadow_changes"].items():  # type: ignore[attr-defined]
            print(f"  {change:<30} {count}")
    if summary["signals"]:
        print(f"{'signal':<32} {'n':>6} {'p50':>10} {'p90':>10} {'p99':>10}")
        for name, row in summary["signals"].items():  # type: ignore[attr-defined]
            print(f"{name:<32} {row['n']:>6} {row['p50']:>10.4g} {row['p90']:>10.4g} {row['p99']:>10.4g}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .audit import PolicyFilter
    from .report import write_report

    only = PolicyFilter(args.policy)
    outcome = write_report(
        args.log, args.output, title=args.title, max_requests=args.max_requests, progress=True, select=only
    )
    if (problem := only.problem(args.log)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.output} ({outcome.decisions} decisions, {outcome.requests} requests, {outcome.shown} shown; "
        f"skipped {outcome.skipped.count} damaged or malformed record(s))"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(prog="guardrails-uq", description="Guardrail middleware for LLM apps.")
    commands = parser.add_subparsers(dest="command", required=True)

    policy = commands.add_parser("policy", help="check, test and describe policy files")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    p = policy_sub.add_parser("check", help="validate and lint a policy file and verify every artifact it names")
    p.add_argument("file")
    p.add_argument(
        "--embedder",
        metavar="NAME",
        help="name of the embedder the app passes to the Guard (default: the packaged MiniLM); artifacts made "
        "with another one are refused",
    )
    p.add_argument(
        "--for",
        dest="deployment",
        choices=("library", "serve"),
        default="library",
        help="where the policy runs: serve warns about rules that cannot fire behind the proxy (documents, logprobs)",
    )
    p.set_defaults(handler=_cmd_policy_check)
    p = policy_sub.add_parser("schema", help="print the JSON Schema of the policy, a call, a cases file or a library")
    p.add_argument(
        "format",
        nargs="?",
        default="policy",
        choices=("policy", "call", "cases", "guidelines"),
        help="policy (default), call (check --call), cases (policy test) or guidelines (a library); see docs/formats.md",
    )
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(handler=_cmd_policy_schema)
    p = policy_sub.add_parser("test", help="run a policy against cases (signals or real text) and expected actions")
    p.add_argument("file")
    p.add_argument("cases")
    p.set_defaults(handler=_cmd_policy_test)

    p = commands.add_parser("check", help="decide one call (JSON) under a policy")
    p.add_argument("--policy", required=True)
    p.add_argument("--call", required=True, help="call JSON file, or - for stdin")
    p.add_argument("--explain", action="store_true", help="a readable account instead of JSON")
    p.add_argument("--no-audit", action="store_true", help="do not append to the policy's audit log")
    p.set_defaults(handler=_cmd_check)

    audit = commands.add_parser("audit", help="read decision logs")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    p = audit_sub.add_parser("tail", help="the last decisions")
    p.add_argument("log")
    p.add_argument("-n", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--policy",
        action="append",
        metavar="NAME",
        help="only the decisions of this policy (repeat for several; a log shared by several tenants' policies)",
    )
    p.set_defaults(handler=_cmd_audit_tail)
    p = audit_sub.add_parser("stats", help="counts by action, rule and policy, signal percentiles")
    p.add_argument("log")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--policy",
        action="append",
        metavar="NAME",
        help="only the decisions of this policy (repeat for several; a log shared by several tenants' policies)",
    )
    p.set_defaults(handler=_cmd_audit_stats)

    p = commands.add_parser("report", help="write a self-contained HTML report of an audit log")
    p.add_argument("log")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--title", default="guardrails-uq decisions")
    p.add_argument(
        "--policy",
        action="append",
        metavar="NAME",
        help="only the decisions of this policy (repeat for several; a log shared by several tenants' policies)",
    )
    number_argument(
        p, "--max-requests", MAX_REQUESTS, default=1000, help="requests shown as cards (those not allowed first)"
    )
    p.set_defaults(handler=_cmd_report)

    groups = {
        "eval": commands.add_parser("eval", help="evaluate a check on labelled data").add_subparsers(
            dest="eval_command", required=True
        ),
        "calibrate": commands.add_parser("calibrate", help="fit calibration artifacts").add_subparsers(
            dest="calibrate_command", required=True
        ),
    }
    for module in _FEATURE_COMMANDS:
        importlib.import_module(f"{__package__}.{module}").register_cli(commands, groups)
    for name, group in groups.items():
        if not group.choices:
            commands._name_parser_map.pop(name, None)  # no feature added to this group yet
            commands._choices_actions = [a for a in commands._choices_actions if a.dest != name]
    return parser


#: Modules that add subcommands through ``register_cli(commands, groups)`` (imported when the CLI runs);
#: ``groups`` holds the shared "eval" and "calibrate" sub-command groups.
_FEATURE_COMMANDS = (
    "demo",
    "guidelines.cli",
    "provenance.cli",
    "conformal.cli",
    "uncertainty.cli",
    "grounding.cli",
    "injection.cli",
    "answer_harm.cli",
    "serve_cli",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 failed test, 2 error)."""
    try:
        args = build_parser().parse_args(argv)  # numeric arguments are checked here (guardrails_uq.numbers)
        return int(args.handler(args))
    except GuardrailsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
