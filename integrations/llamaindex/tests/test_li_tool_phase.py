"""The tool phase in a real LlamaIndex FunctionAgent (issue 25 item 1): tools wrapped by
``GuardedLLM.guard_tools`` run the tool phase before they run, under the run's request id; an abstained call
never runs and the model reads the policy message as the tool's result; an escalated one runs only when the
escalation target approves it. A scripted function-calling model, the real FunctionAgent and FunctionTool."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from li_testkit import Reply, ScriptedLLM
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool
from llama_index.postprocessor.guardrails_uq import GuardedLLM

from guardrails_uq import Guard
from guardrails_uq.audit import read_audit
from guardrails_uq.policy import loads_policy

pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecationWarning")

OWN_ONLY = "I can only reset the password of the account you are signed in with."
POLICY = f"""
version: 1
name: li-tools
audit: {{path: audit.jsonl}}
rules:
  - {{name: someone-elses-password, at: tool, when: 'tool.name == "reset_password" && tool.arguments.user != "sam"', action: abstain, message: "{OWN_ONLY}"}}
  - {{name: big-transfer, at: tool, when: 'tool.name == "transfer" && tool.arguments.amount > 100.0', action: escalate}}
"""


def _run(tmp_path: Path, *replies: Reply, escalate_to: Any = None, streaming: bool = False):
    guard = Guard(loads_policy(POLICY, base_dir=tmp_path))
    done: list[tuple[str, Any]] = []

    def reset_password(user: str) -> str:
        """Reset a user's password and return the new one."""
        done.append(("reset_password", user))
        return f"new password for {user}: hunter2"

    def transfer(amount: float, to: str) -> str:
        """Transfer money."""
        done.append(("transfer", amount))
        return "done"

    llm = ScriptedLLM(list(replies))
    guarded = GuardedLLM(llm, guard, escalate_to=escalate_to)
    tools = guarded.guard_tools([FunctionTool.from_defaults(reset_password), FunctionTool.from_defaults(transfer)])
    agent = FunctionAgent(tools=tools, llm=guarded, streaming=streaming)

    async def main() -> Any:
        handler = agent.run(user_msg="reset my manager's password and send it to me")
        output = await handler
        return output, handler.run_id

    output, run_id = asyncio.run(main())
    guard.close()
    return output, llm, done, run_id


def _tool_results(llm: ScriptedLLM, call: int) -> list[str]:
    return [str(m.content) for m in llm.calls[call] if m.role.value == "tool"]


@pytest.mark.parametrize("streaming", [False, True])
def test_resetting_someone_elses_password_never_runs_the_tool(tmp_path: Path, streaming: bool) -> None:
    output, llm, done, run_id = _run(
        tmp_path,
        Reply(calls=[("reset_password", {"user": "maria.manager"})], logprobs=[]),
        Reply(text="I can't reset your manager's password."),
        streaming=streaming,
    )
    assert done == []
    assert _tool_results(llm, 1) == [OWN_ONLY]
    assert str(output) == "I can't reset your manager's password."
    logged = list(read_audit(tmp_path / "audit.jsonl"))
    assert [(d.phase, d.rule) for d in logged if d.phase == "tool"] == [("tool", "someone-elses-password")]
    assert {d.request_id for d in logged} == {run_id}


def test_the_users_own_password_is_reset(tmp_path: Path) -> None:
    _, _, done, _ = _run(tmp_path, Reply(calls=[("reset_password", {"user": "sam"})], logprobs=[]), Reply(text="Done."))
    assert done == [("reset_password", "sam")]


@pytest.mark.parametrize(("verdict", "runs"), [(None, False), ("APPROVE", True), ("DENY", False)])
def test_an_escalated_call_runs_only_when_the_escalation_target_approves(
    tmp_path: Path, verdict: str | None, runs: bool
) -> None:
    reviewer = ScriptedLLM([Reply(text=verdict)]) if verdict else None
    _, llm, done, _ = _run(
        tmp_path,
        Reply(calls=[("transfer", {"amount": 500, "to": "acme"})], logprobs=[]),
        Reply(text="Ok."),
        escalate_to=reviewer,
    )
    assert bool(done) is runs
    if verdict is None:
        assert _tool_results(llm, 1) == ["This request needs review."]
