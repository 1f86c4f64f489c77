"""The pure decision step shared by the Guard and `policy test`: signals in, action out."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from ..decision import Action, CheckFailure, Shadow
from ..errors import RuleEvaluationError
from ..types import PHASES, Phase, SignalMap
from .loader import CompiledPolicy
from .rules import Matched


@dataclass(frozen=True)
class Outcome:
    """What the rules decided: action, deciding rule (None: default or on_error), the values it read, and (from
    :func:`decide`) what shadow mode would have done instead."""

    action: Action
    rule: str | None
    phase: Phase | None
    reads: SignalMap
    message: str | None = None
    error: RuleEvaluationError | None = None
    shadow: Shadow | None = None


def match_phase(policy: CompiledPolicy, phase: Phase, signals: SignalMap) -> tuple[Outcome | None, Outcome | None]:
    """``(enforced, shadow)`` for ``phase``: the first matching enforced rule as an Outcome (None when none
    matches), and the first shadow rule that would have decided before it (None when none would).

    A rule that fails to evaluate yields the policy's on_error action with the error attached (``rule`` names it).
    """
    enforced, shadow = policy.match(phase, signals)
    return _outcome(policy, phase, signals, enforced), _outcome(policy, phase, signals, shadow)


def _outcome(policy: CompiledPolicy, phase: Phase, signals: SignalMap, found: Matched) -> Outcome | None:
    if found is None:
        return None
    if isinstance(found, RuleEvaluationError):
        return Outcome(policy.model.on_error, found.rule, phase, {}, message=policy.model.messages.error, error=found)
    rule = found.rule
    message = rule.message
    if message is None and rule.action is Action.ABSTAIN:
        message = policy.model.messages.abstain
    return Outcome(rule.action, rule.name, phase, {n: signals.get(n) for n in found.reads}, message=message)


def shadow_record(
    policy: CompiledPolicy, shadow: Outcome | None, action: Action, failures: Sequence[CheckFailure] = ()
) -> Shadow | None:
    """The Decision's ``shadow``: what the first shadow rule that would have decided did (``shadow``, from
    :func:`match_phase`); else, in a ``mode: shadow`` policy, the non-allow ``action`` its enforced path reached
    (the default, or on_error after the check ``failures``), which the client does not get; else None."""
    if shadow is not None:
        if shadow.error is not None:
            return Shadow(action=shadow.action, error=f"rule {shadow.rule!r}: {shadow.error.problem}")
        return Shadow(action=shadow.action, rule=shadow.rule, inputs=dict(shadow.reads))
    if policy.observe_only and action is not Action.ALLOW:
        error = "; ".join(f"check {f.check!r} failed: {f.type}" for f in failures) or None
        return Shadow(action=action, error=error)
    return None


def decide_phase(policy: CompiledPolicy, phase: Phase, signals: SignalMap) -> Outcome | None:
    """The first matching enforced rule of ``phase`` as an Outcome; None when none matches (shadow rules never
    decide: :func:`match_phase` gives what they would have done)."""
    return match_phase(policy, phase, signals)[0]


def decide(policy: CompiledPolicy, signals: SignalMap, phases: list[Phase] | None = None) -> Outcome:
    """Evaluate the rules of ``phases`` in order on ``signals``; the first enforced match decides, else the
    default (allow in a ``mode: shadow`` policy, as the Guard does); ``shadow`` holds what the first shadow rule
    that would have decided did (or a shadow policy's non-allow default).

    When ``phases`` is None, the phases run are those whose checks produce a given signal (all phases
    when only app signals are given).
    """
    if phases is None:
        given = {policy.catalogue[s].phase for s in signals if s in policy.catalogue}
        phases = [p for p in PHASES if p in given] or list(PHASES)
    shadow: Outcome | None = None
    for phase in PHASES:
        if phase in phases:
            enforced, found = match_phase(policy, phase, signals)
            shadow = shadow or found
            if enforced is not None:
                return dataclasses.replace(enforced, shadow=shadow_record(policy, shadow, enforced.action))
    default = policy.model.default
    recorded = shadow_record(policy, shadow, default)
    return Outcome(Action.ALLOW if policy.observe_only else default, None, None, {}, shadow=recorded)
