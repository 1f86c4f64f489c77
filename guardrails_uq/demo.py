"""``guardrails-uq demo``: the main job end to end on the shipped assets.

It runs the scripted requests of ``examples/demo_requests.jsonl`` through a Guard built from
``policies/demo.yaml``, prints a table (request, phase, action, rule, key signals), writes the audit log and
prints its statistics.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .call import Call
from .errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def load_requests(path: Path) -> list[tuple[str, Call]]:
    """(label, call) pairs from a JSONL file: each line a Call plus a "label"."""
    requests = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                label = data.pop("label")
                requests.append((label, Call.model_validate(data)))
            except (ValueError, KeyError) as exc:
                raise InputError(f"bad demo request: {exc}", source=str(path), line=number) from None
    return requests


def run(policy_path: Path, requests_path: Path, out_dir: Path) -> int:
    from .audit import read_audit, stats
    from .guard import Guard
    from .policy import load_policy

    policy = load_policy(policy_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    audit_path = out_dir / "audit.jsonl"
    audit_path.unlink(missing_ok=True)
    from .audit import open_audit

    requests = load_requests(requests_path)
    print(f"policy {policy.name!r} from {policy_path}; {len(requests)} requests; audit log {audit_path}")
    with Guard(policy, audit=open_audit(audit_path)) as guard:
        print(f"{'#':>3}  {'request':<38} {'phase':<9} {'action':<9} {'rule':<28} key signals")
        for index, (label, call) in enumerate(requests, start=1):
            t0 = time.perf_counter()
            decision = guard.check(call)
            ms = (time.perf_counter() - t0) * 1e3
            keys = ", ".join(f"{k}={_short(v)}" for k, v in list(decision.inputs.items())[:3])
            rule = decision.rule_label
            print(
                f"{index:>3}  {label[:38]:<38} {decision.phase:<9} {decision.action.value:<9} {rule[:28]:<28} "
                f"{keys}  [{ms:.1f} ms]",
                flush=True,
            )
    summary = stats(read_audit(audit_path))
    print(f"\n{summary['total']} decisions logged; by action: {summary['by_action']}; by rule: {summary['by_rule']}")
    return 0


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    text = str(value)
    return text if len(text) < 24 else text[:21] + "..."


def register_cli(commands: argparse._SubParsersAction, groups: dict) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("demo", help="run the shipped demo end to end")
    parser.add_argument("--policy", type=Path, default=ROOT / "policies" / "demo.yaml")
    parser.add_argument("--requests", type=Path, default=ROOT / "examples" / "demo_requests.jsonl")
    parser.add_argument("--out", type=Path, default=Path("out") / "demo")
    parser.set_defaults(handler=lambda args: run(args.policy, args.requests, args.out))
