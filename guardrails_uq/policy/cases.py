"""`policy test`: run a policy's rules on cases of signals and compare with the expected action.

A cases file (YAML)::

    cases:
      - name: copied unsafe text is refused
        signals: {provenance.bci_max: 31.5}        # flat dotted names, or nested {provenance: {bci_max: 31.5}}
        expect: abstain
        rule: memorized-unsafe-text                 # optional: the rule that must decide
        phases: [output]                            # optional: which phases run (default: inferred)

When ``phases`` is omitted, the phases run are those whose checks produce at least one given signal (all
phases when the case gives only app signals or none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..decision import Action
from ..errors import PolicyError
from ..types import Phase, SignalMap
from .loader import CompiledPolicy
from .outcome import Outcome, decide
from .source import read_yaml


class Case(BaseModel):
    """One policy test case."""

    model_config = ConfigDict(extra="forbid")

    name: str
    signals: dict[str, Any] = Field(default_factory=dict)
    expect: Action
    rule: str | None = None
    phases: list[Phase] | None = None


class CasesFile(BaseModel):
    """The cases file."""

    model_config = ConfigDict(extra="forbid")

    cases: list[Case] = Field(min_length=1)


@dataclass(frozen=True)
class CaseResult:
    """One case and what the policy did with it."""

    case: Case
    outcome: Outcome
    line: int | None

    @property
    def passed(self) -> bool:
        if self.outcome.error is not None:
            return False
        return self.outcome.action is self.case.expect and (
            self.case.rule is None or self.case.rule == self.outcome.rule
        )


def flatten(signals: dict[str, Any]) -> SignalMap:
    """Accept ``{"ns.name": v}`` or ``{"ns": {"name": v}}`` and return the flat form (a map under a dotted
    name is the signal's value, e.g. ``tool.arguments: {user: bob}``)."""
    flat: SignalMap = {}
    for key, value in signals.items():
        if isinstance(value, dict) and "." not in key:
            for leaf, inner in value.items():
                flat[f"{key}.{leaf}"] = inner
        else:
            flat[key] = value
    return flat


def run_cases(policy: CompiledPolicy, cases_path: str | Path) -> list[CaseResult]:
    """Run every case of ``cases_path`` against ``policy``."""
    source = read_yaml(cases_path)
    try:
        parsed = CasesFile.model_validate(source.data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = tuple(err["loc"])
        raise PolicyError(
            f"{'.'.join(map(str, loc))}: {err['msg']}",
            file=source.file,
            line=source.line_of(loc),
            fix="each case needs name, signals and expect (allow | abstain | escalate)",
        ) from None
    results = []
    for index, case in enumerate(parsed.cases):
        signals = flatten(case.signals)
        unknown = [s for s in signals if s not in policy.catalogue]
        line = source.line_of(("cases", index))
        if unknown:
            raise PolicyError(
                f"case {case.name!r} gives unknown signals {unknown}",
                file=source.file,
                line=line,
                fix="known signals: " + ", ".join(sorted(policy.catalogue)),
            )
        results.append(CaseResult(case=case, outcome=decide(policy, signals, case.phases), line=line))
    return results


def render_results(results: list[CaseResult], cases_file: str) -> str:
    """A readable report in the style of ``opa test``: failures with expected vs got, then a summary."""
    lines: list[str] = []
    for result in results:
        case, outcome = result.case, result.outcome
        if result.passed:
            lines.append(f"PASS  {case.name}")
            continue
        lines.append(f"FAIL  {case.name}  ({cases_file}:{result.line})")
        expected = case.expect.value + (f" by rule {case.rule!r}" if case.rule else "")
        got = outcome.action.value + (f" by rule {outcome.rule!r}" if outcome.rule else " (default)")
        lines.append(f"      expected: {expected}")
        lines.append(
            f"      got:      {got}" if outcome.error is None else f"      got:      error: {outcome.error.problem}"
        )
        for name, value in outcome.reads.items():
            lines.append(f"      read:     {name} = {value!r}")
    passed = sum(r.passed for r in results)
    lines.append("-" * 40)
    lines.append(f"{'PASS' if passed == len(results) else 'FAIL'}: {passed}/{len(results)}")
    return "\n".join(lines)
