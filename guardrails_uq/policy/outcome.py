"""The pure decision step shared by the Guard and `policy test`: signals in, action out."""

from __future__ import annotations

from dataclasses import dataclass

from ..decision import Action
from ..errors import RuleEvaluationError
from ..types import PHASES, Phase, SignalMap
from .loader import CompiledPolicy


@dataclass(frozen=True)
class Outcome:
    """What the rules decided: action, deciding rule (None: default or on_error), the values it read."""

    action: Action
    rule: str | None
    phase: Phase | None
    reads: SignalMap
    message: str | None = None
    error: RuleEvaluationError | None = None


def decide_phase(policy: CompiledPolicy, phase: Phase, signals: SignalMap) -> Outcome | None:
    """The first matching rule of ``phase`` as an Outcome; None when no rule matches.

    A rule that fails to evaluate yields the policy's on_error action with the error attached.
    """
    try:
        match = policy.first_match(phase, signals)
    except RuleEvaluationError as exc:
        return Outcome(policy.model.on_error, exc.rule, phase, {}, message=policy.model.messages.error, error=exc)
    if match is None:
        return None
    rule = match.rule
    message = rule.message
    if message is None and rule.action is Action.ABSTAIN:
        message = policy.model.messages.abstain
    return Outcome(rule.action, rule.name, phase, {n: signals.get(n) for n in match.reads}, message=message)


def decide(policy: CompiledPolicy, signals: SignalMap, phases: list[Phase] | None = None) -> Outcome:
    """Evaluate the rules of ``phases`` in order on ``signals``; first match decides, else the default.

    When ``phases`` is None, the phases run are those whose checks produce a given signal (all phases
    when only app signals are given).
    """
    if phases is None:
        given = {policy.catalogue[s].phase for s in signals if s in policy.catalogue}
        phases = [p for p in PHASES if p in given] or list(PHASES)
    for phase in PHASES:
        if phase in phases:
            outcome = decide_phase(policy, phase, signals)
            if outcome is not None:
                return outcome
    return Outcome(policy.model.default, None, None, {})
