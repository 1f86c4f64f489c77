"""output.kind (issue 23, "agent steps are not answers"): the Guard publishes what the output phase checks, an
answer or a tool-calling step, so uncertainty rules can apply to answers only (tool calls carry no logprobs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrails_uq import Guard
from guardrails_uq.call import Generation
from guardrails_uq.decision import Action
from guardrails_uq.errors import PolicyError
from guardrails_uq.policy import loads_policy

ROOT = Path(__file__).resolve().parents[1]


DEMO_LIKE = """
version: 1
name: kinds
uncertainty: {score: mean_nll}
rules:
  - {name: no-logprobs, at: output, when: 'output.kind == "answer" && !uncertainty.available', action: escalate}
default: allow
"""


def test_tool_call_steps_are_not_escalated_for_missing_logprobs() -> None:
    with Guard(loads_policy(DEMO_LIKE), audit=False) as guard:
        step = guard.after(Generation(text='send_email({"to": "a@b.example"})', kind="tool_call"))
        answer = guard.after(Generation(text="The office opens at nine."))
    assert step.action is Action.ALLOW and step.signals["output.kind"] == "tool_call"
    assert answer.action is Action.ESCALATE and answer.signals["output.kind"] == "answer"


def test_demo_policy_rules_read_output_kind() -> None:
    demo = (ROOT / "policies" / "demo.yaml").read_text()
    assert demo.count('output.kind == "answer"') == 2


def test_output_kind_is_known_only_at_output() -> None:
    early = DEMO_LIKE.replace("at: output", "at: input")
    with pytest.raises(PolicyError, match="only known at 'output'"):
        loads_policy(early)
