"""Rule evaluation: first match decides, fused evaluation equals rule-by-rule, failures name the rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails_uq import Action, RuleEvaluationError, loads_policy
from guardrails_uq.policy import decide
from guardrails_uq.policy.rules import nest, signal_references


def test_signal_references_ignore_strings_functions_and_comprehension_vars() -> None:
    src = 'size(guidelines.ids) > 0 && "x.y" == app.tier && provenance.spans.exists(s, s > 1) && has(a.b)'
    assert signal_references(src) == ["guidelines.ids", "app.tier", "provenance.spans", "a.b"]


def _policy(thresholds: list[float]):
    rules = "\n".join(
        f'  - {{name: r{i}, at: output, when: "app.x > {t!r}", action: {"abstain" if i % 2 else "escalate"}}}'
        for i, t in enumerate(thresholds)
    )
    return loads_policy(f"version: 1\nname: t\nsignals: {{app.x: number}}\nrules:\n{rules}\n")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=12, unique=True),
    st.floats(-150, 150, allow_nan=False),
)
def test_first_match_decides_like_a_loop(thresholds: list[float], x: float) -> None:
    policy = _policy(thresholds)
    outcome = decide(policy, {"app.x": x})
    expected = next((i for i, t in enumerate(thresholds) if x > t), None)
    if expected is None:
        assert outcome.rule is None and outcome.action is Action.ALLOW
    else:
        assert outcome.rule == f"r{expected}"
        assert outcome.reads == {"app.x": x}


def test_decisions_are_deterministic() -> None:
    policy = _policy([1.0, 2.0, 3.0])
    first = [decide(policy, {"app.x": float(x)}) for x in range(6)]
    for _ in range(5):
        assert [decide(policy, {"app.x": float(x)}) for x in range(6)] == first


def test_failing_rule_is_named_and_yields_on_error() -> None:
    policy = loads_policy(
        "version: 1\nname: t\nsignals: {app.a: number, app.b: number}\non_error: escalate\nrules:\n"
        '  - {name: ok, at: input, when: "app.a > 5.0", action: allow}\n'
        '  - {name: divides, at: input, when: "app.a / app.b > 1.0", action: abstain}\n'
    )
    outcome = decide(policy, {"app.a": 1, "app.b": 0})
    assert outcome.action is Action.ESCALATE
    assert isinstance(outcome.error, RuleEvaluationError)
    assert outcome.error.rule == "divides"
    assert outcome.rule == "divides"


def test_nest() -> None:
    assert nest({"a.b": 1, "a.c": 2, "d.e": 3}) == {"a": {"b": 1, "c": 2}, "d": {"e": 3}}


def test_evaluate_rejects_non_bool_at_runtime() -> None:
    policy = loads_policy(
        "version: 1\nname: t\nsignals: {app.l: list}\nrules:\n"
        '  - {name: first, at: input, when: "app.l[0]", action: abstain}\n'
    )
    with pytest.raises(RuleEvaluationError, match="not a bool"):
        policy.first_match("input", {"app.l": [3]})
