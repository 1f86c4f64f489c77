"""``guardrails-uq replay``: re-decide logged calls under another policy (what-if), locally or on Ray.

Each logged Decision carries the signals its phase saw; replay runs the new policy's rules for that phase
on them (the pure decision step the Guard uses) and compares: how many decisions change, from which action
and rule to which. When the new policy configures provenance, output-phase signals are recomputed from the
logged answer with the new policy's index and settings (on Ray, the index is loaded once in each actor). A rule that reads a signal the log does not hold (a check the old policy did not run)
counts as an error for that decision, and the report says which signal was missing.

With ``shadow=True`` (``replay --shadow``) the policy is evaluated in shadow: every rule, shadow ones included,
is read as enforced (a ``mode: shadow`` policy as ``mode: enforce``), and the report compares what the log says
was enforced with what the policy would have done: the question to answer before switching shadow rules on.
Without it the policy runs as written: shadow rules never decide and a ``mode: shadow`` policy allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from .audit import read_audit
from .decision import Action, Decision
from .policy import CompiledPolicy, load_policy
from .policy.outcome import match_phase

RAY_CHUNK = 50_000
"""Records sent to Ray at a time by ``replay --engine ray`` (bounds the driver's memory)."""


def recompute_checks(policy: CompiledPolicy) -> list[Any]:
    """The new policy's checks that can be recomputed from the log alone (provenance, from the answer)."""
    from .checks import CheckDeps, registry

    spec = registry().get("provenance")
    config = policy.section("provenance")
    return [spec.build(config, policy.base_dir, CheckDeps())] if spec is not None and config is not None else []


def redecide(
    policy: CompiledPolicy,
    record: dict[str, Any],
    checks: list[Any] = (),  # type: ignore[assignment]
    *,
    shadow: bool = False,
) -> dict[str, Any]:
    """One logged decision (as a dict) re-decided under ``policy``: old and new action and rule. With ``shadow``,
    every rule of the policy is read as enforced (see the module docstring)."""
    phase, signals = record["phase"], dict(record["signals"])
    if phase == "output" and record.get("generated") is not None:
        from .call import Call, Generation

        for check in checks:
            signals.update(check.run(Call(generation=Generation(text=record["generated"]))).values)
    enforced, shadowed = match_phase(policy, phase, signals)
    outcome = (shadowed or enforced) if shadow else enforced
    error = None
    if outcome is None:
        new_action = policy.model.default.value if phase == "output" else Action.ALLOW.value
        new_rule = "(default)" if phase == "output" else "(pass)"
    else:
        new_action, new_rule = outcome.action.value, outcome.rule or "(default)"
        error = outcome.error.problem if outcome.error is not None else None
    if policy.observe_only and not shadow:  # as written, a shadow policy enforces nothing
        new_action = Action.ALLOW.value
        new_rule = "(default)" if phase == "output" else "(pass)"
    return {
        "id": record["id"],
        "old": (record["action"], record["rule"]),
        "new": (new_action, new_rule),
        "error": error,
    }


def _records(decisions: Iterable[Decision]) -> Iterator[dict[str, Any]]:
    for d in decisions:
        if _replayable(d):
            yield {
                "id": d.id,
                "phase": d.phase,
                "signals": d.signals,
                "action": d.action.value,
                "rule": d.rule_label,
                "generated": d.generated,
            }


def _chunks(records: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while chunk := list(islice(records, size)):
        yield chunk


def _replayable(decision: Decision) -> bool:
    return not decision.errors and "escalation" not in decision.evidence


def _summarise(results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    transitions: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    total = changed = 0
    examples: list[str] = []
    for r in results:
        total += 1
        old, new = tuple(r["old"]), tuple(r["new"])
        if r["error"]:
            errors[r["error"].split(":")[0]] += 1
        if old[0] != new[0] or old[1] != new[1]:
            changed += 1
            transitions[f"{old[0]} ({old[1]}) -> {new[0]} ({new[1]})"] += 1
            if len(examples) < 10:
                examples.append(r["id"])
    return {
        "total": total,
        "changed": changed,
        "transitions": dict(transitions.most_common()),
        "errors": dict(errors),
        "examples": examples,
    }


def replay_decisions(
    policy_path: str | Path, decisions: Iterable[Decision], *, engine: str = "local", shadow: bool = False
) -> dict[str, Any]:
    """Re-decide every replayable decision of ``decisions`` under the policy at ``policy_path``, streamed: one
    decision at a time locally, :data:`RAY_CHUNK` at a time on Ray; nothing else is kept (bounded memory).
    ``shadow``: every rule read as enforced (see the module docstring)."""
    policy = load_policy(policy_path)
    records = _records(decisions)
    results: Iterable[dict[str, Any]]
    if engine == "ray":
        from .ray_engine import redecide_with_ray

        results = (
            r for chunk in _chunks(records, RAY_CHUNK) for r in redecide_with_ray(Path(policy_path), chunk, shadow)
        )
    else:
        checks = recompute_checks(policy)
        results = (redecide(policy, r, checks, shadow=shadow) for r in records)
    return {"policy": policy.name, "engine": engine, "shadow": shadow, **_summarise(results)}


def replay(
    policy_path: str | Path, log: str | Path, *, engine: str = "local", progress: bool = False, shadow: bool = False
) -> dict[str, Any]:
    """Re-decide every replayable decision in the audit log at ``log`` (streamed; with ``progress``, a long log
    reports its progress on stderr; ``shadow``: every rule read as enforced)."""
    decisions = read_audit(log, progress="replay" if progress else None)
    return replay_decisions(policy_path, decisions, engine=engine, shadow=shadow)


def render(report: dict[str, Any]) -> str:
    mode = " in shadow (every rule read as enforced; old = what was enforced)" if report.get("shadow") else ""
    lines = [
        f"replayed {report['total']} decisions under policy {report['policy']!r}{mode} ({report['engine']}): "
        f"{report['changed']} change"
    ]
    for transition, count in report["transitions"].items():
        lines.append(f"  {count:>6}  {transition}")
    for problem, count in report["errors"].items():
        lines.append(f"  errors: {count} x {problem}")
    return "\n".join(lines)
