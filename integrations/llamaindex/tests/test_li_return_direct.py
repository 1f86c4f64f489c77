"""A LlamaIndex tool with ``return_direct=True`` ends the agent run with its result as the answer: no model
call follows, so GuardedLLM never saw that text (hostile trial, session 6: a help-article tool returning the
unsafe ricin passage reached the user, the run's verdict allow). Now a tool wrapped by
``GuardedLLM.guard_tools`` passes its direct result through the output phase (as the LangChain middleware
does), and a model step that calls an unwrapped return_direct tool is decided by ``on_error`` before the tool
runs, because its result would reach the user unread."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from li_testkit import COPIED, UNSAFE, Reply, ScriptedLLM, build_artifacts, make_guard, requests_in
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool
from llama_index.postprocessor.guardrails_uq import GuardedLLM

from guardrails_uq import Action, Guard

pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecationWarning")
ARTICLE = "Open Settings, then Security, and choose Reset password."


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifacts(tmp_path_factory.mktemp("li-direct"))


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def guard(artifacts: Path, audit: Path) -> Guard:
    with make_guard(artifacts, audit) as guard:
        yield guard


def _run(guard: Guard, article: str, *, wrapped: bool, streaming: bool) -> tuple[str, list[str], Any]:
    ran: list[str] = []

    def help_article(topic: str) -> str:
        """Fetch the help center article on a topic; it is shown to the user as it is."""
        ran.append(topic)
        return article

    llm = GuardedLLM(ScriptedLLM([Reply(calls=[("help_article", {"topic": "password"})], logprobs=[])]), guard)
    tools = [FunctionTool.from_defaults(help_article, return_direct=True)]
    agent = FunctionAgent(tools=llm.guard_tools(tools) if wrapped else tools, llm=llm, streaming=streaming)

    async def main() -> tuple[str, Any]:
        handler = agent.run(user_msg="How do I reset my password?")
        output = await handler
        return str(output), GuardedLLM.request(handler)

    output, record = asyncio.run(main())
    return output, ran, record


@pytest.mark.parametrize("streaming", [False, True])
def test_a_guarded_return_direct_result_passes_the_output_phase(guard: Guard, streaming: bool) -> None:
    output, ran, record = _run(guard, UNSAFE, wrapped=True, streaming=streaming)
    assert ran == ["password"]
    assert output == COPIED and UNSAFE not in output
    assert (record.verdict.phase, record.verdict.rule) == ("output", "memorized-unsafe-text")
    allowed, _, _ = _run(guard, ARTICLE, wrapped=True, streaming=streaming)
    assert allowed == ARTICLE, "a direct result the policy allows reaches the user unchanged"


@pytest.mark.parametrize("streaming", [False, True])
def test_an_unguarded_return_direct_tool_never_runs(guard: Guard, audit: Path, streaming: bool) -> None:
    output, ran, _ = _run(guard, UNSAFE, wrapped=False, streaming=streaming)
    assert ran == [], "the tool whose result nobody would read never ran"
    assert output == guard.policy.model.messages.error
    [request] = requests_in(audit)
    [failure] = [d for d in request.decisions if d.errors]
    assert (failure.phase, failure.action) == ("output", Action.ABSTAIN)
    assert "return_direct" in failure.errors[0].error and "guard_tools" in failure.errors[0].error
