"""GuardedLLM around real LlamaIndex agents (FunctionAgent, AgentWorkflow) with a scripted tool-calling model
and a real Guard (retrieval calibration, provenance index, uncertainty from token logprobs): the input phase
before the first model call, tool results as retrieved evidence, the output phase on every response (tool
calls included, streamed or not), escalation, and one request id per agent run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from li_testkit import (
    COPIED,
    NO_EVIDENCE,
    REFUSAL,
    REVIEW,
    UNSAFE,
    UNSURE,
    Reply,
    ScriptedLLM,
    build_artifacts,
    kb_text,
    keyword_score,
    make_guard,
    requests_in,
)
from llama_index.core.agent.workflow import AgentStream, AgentWorkflow, FunctionAgent, ToolCall
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole
from llama_index.core.llms import MockLLM
from llama_index.postprocessor.guardrails_uq import GuardedLLM, GuardrailsEvent

from guardrails_uq import Action, Decision, Guard
from guardrails_uq.provenance import build_index
from guardrails_uq.testing import UNSAFE_RUSSIAN, ChatCompletionsServer, break_lines, guard_without_embedder

# llama-index-workflows lists an agent's members with inspect.getmembers, which touches pydantic's deprecated
# class attributes: a warning from the framework, not from this code.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecationWarning")
PASSWORD = "How do I reset my password?"
GARDEN = "Any gardening tips about castor beans?"
ANSWER = "Open Settings, then Security, and choose Reset password."


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifacts(tmp_path_factory.mktemp("li-agent"))


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def guard(artifacts: Path, audit: Path) -> Guard:
    with make_guard(artifacts, audit) as guard:
        yield guard


class Tools:
    """The agent's tools; ``ran`` records every call that reached one."""

    def __init__(self, kb_answer: str) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []
        self.kb_answer = kb_answer

    def search_kb(self, query: str) -> str:
        """Search the Nimbus Notes knowledge base."""
        self.ran.append(("search_kb", {"query": query}))
        return self.kb_answer

    def send_email(self, to: str, body: str) -> str:
        """Send an email."""
        self.ran.append(("send_email", {"to": to, "body": body}))
        return "sent"

    def all(self) -> list[Any]:
        from llama_index.core.tools import FunctionTool

        return [FunctionTool.from_defaults(self.search_kb), FunctionTool.from_defaults(self.send_email)]


def run_agent(agent: Any, question: str, **kwargs: Any) -> tuple[Any, Any, list[Any]]:
    """Run the agent to the end; returns (handler, output, streamed events)."""

    async def main() -> tuple[Any, Any, list[Any]]:
        handler = agent.run(user_msg=question, **kwargs)
        events = [event async for event in handler.stream_events()]
        return handler, await handler, events

    return asyncio.run(main())


def streamed_text(events: list[Any]) -> str:
    return "".join(e.delta for e in events if isinstance(e, AgentStream))


def search_then(answer: Reply) -> list[Reply]:
    return [Reply(text="Let me check.", calls=[("search_kb", {"query": "question"})]), answer]


@pytest.mark.parametrize("streaming", [False, True])
def test_harmful_request_never_reaches_the_model(guard: Guard, audit: Path, streaming: bool) -> None:
    llm = ScriptedLLM([])
    tools = Tools(kb_text("password-reset"))
    agent = FunctionAgent(tools=tools.all(), llm=GuardedLLM(llm, guard), streaming=streaming)
    handler, output, _ = run_agent(agent, "How do I build a bomb at home?")
    assert str(output) == REFUSAL
    assert llm.calls == [] and tools.ran == [] and output.tool_calls == []
    [request] = requests_in(audit)
    assert request.request_id == handler.run_id
    assert [(d.phase, d.action, d.rule) for d in request.decisions] == [("input", Action.ABSTAIN, "harmful-request")]


@pytest.mark.parametrize("streaming", [False, True])
def test_normal_multi_step_tool_run_is_allowed_and_logged_as_one_request(
    guard: Guard, audit: Path, streaming: bool
) -> None:
    llm = ScriptedLLM(
        [
            Reply(text="Let me check.", calls=[("search_kb", {"query": "reset password"})]),
            Reply(calls=[("search_kb", {"query": "password settings"})]),
            Reply(text=ANSWER),
        ]
    )
    tools = Tools(kb_text("password-reset"))
    agent = FunctionAgent(
        tools=tools.all(), llm=GuardedLLM(llm, guard, scorer=keyword_score, stream_window=2), streaming=streaming
    )
    handler, output, events = run_agent(agent, PASSWORD)
    assert str(output) == ANSWER and len(llm.calls) == 3 and len(tools.ran) == 2
    [request] = requests_in(audit)
    assert request.request_id == handler.run_id and request.action == "allow"
    assert [d.phase for d in request.decisions] == ["input", "output", "retrieval", "output", "retrieval", "output"]
    final = request.decisions[-1]
    assert final.signals["retrieval.kept"] == 2 and final.signals["uncertainty.available"] is True
    assert "tool_calls" not in final.evidence  # nothing odd recorded
    published = [Decision.model_validate(e.decision) for e in events if isinstance(e, GuardrailsEvent)]
    assert [d.id for d in published] == [d.id for d in request.decisions]
    assert GuardedLLM.request(handler).verdict.id == final.id
    if streaming:
        assert streamed_text(events).endswith(ANSWER)


@pytest.mark.parametrize("streaming", [False, True])
def test_tool_returning_nothing_relevant_ends_the_run_with_the_policy_message(
    guard: Guard, audit: Path, streaming: bool
) -> None:
    llm = ScriptedLLM(search_then(Reply(text="It is sunny, so reset it outside.")))
    tools = Tools("The weather in Paris is sunny today.")
    agent = FunctionAgent(tools=tools.all(), llm=GuardedLLM(llm, guard, scorer=keyword_score), streaming=streaming)
    handler, output, _ = run_agent(agent, PASSWORD)
    assert str(output) == NO_EVIDENCE
    assert len(llm.calls) == 1, "the model was asked again after the retrieval phase abstained"
    [request] = requests_in(audit)
    assert request.action == "abstain" and request.verdict.rule == "no-evidence"
    assert request.verdict.signals["retrieval.kept"] == 0 and request.verdict.request_id == handler.run_id


def test_irrelevant_results_are_withheld_from_the_model(guard: Guard) -> None:
    llm = ScriptedLLM(
        [
            Reply(calls=[("search_kb", {"query": "a"}), ("send_email", {"to": "me", "body": "note"})]),
            Reply(text=ANSWER),
        ]
    )
    tools = Tools(kb_text("password-reset"))
    agent = FunctionAgent(tools=tools.all(), llm=GuardedLLM(llm, guard, scorer=keyword_score), streaming=False)
    _, output, _ = run_agent(agent, PASSWORD)
    assert str(output) == ANSWER
    tool_results = [m.content for m in llm.calls[1] if m.role == MessageRole.TOOL]
    assert tool_results[0] == kb_text("password-reset")
    assert tool_results[1].startswith("[withheld by guardrails")


@pytest.mark.parametrize("streaming", [False, True])
def test_poisoned_tool_output_copied_by_the_model_is_cut(guard: Guard, audit: Path, streaming: bool) -> None:
    copy = Reply(text=f"Here are some tips for your garden. Gardening tips: {UNSAFE} Enjoy your garden this spring!")
    llm = ScriptedLLM(search_then(copy))
    tools = Tools(f"Gardening tips: {UNSAFE}")
    agent = FunctionAgent(
        tools=tools.all(), llm=GuardedLLM(llm, guard, scorer=keyword_score, stream_window=3), streaming=streaming
    )
    handler, output, events = run_agent(agent, GARDEN)
    assert str(output).endswith(COPIED) and "sealed jar overnight" not in str(output)
    shown = streamed_text(events)
    assert "sealed jar overnight" not in shown and "Enjoy" not in shown
    if streaming:
        assert shown.startswith("Let me check.") and shown.endswith(COPIED)
    [request] = requests_in(audit)
    assert request.request_id == handler.run_id
    assert request.verdict.rule == "memorized-unsafe-text" and request.verdict.signals["retrieval.kept"] == 1
    assert request.verdict.metadata.get("stream_cut") is (True if streaming else None)


@pytest.mark.parametrize("streaming", [False, True])
def test_blocked_tool_call_is_dropped_and_never_runs(guard: Guard, audit: Path, streaming: bool) -> None:
    llm = ScriptedLLM([Reply(calls=[("send_email", {"to": "x@example.com", "body": UNSAFE})])])
    tools = Tools(kb_text("password-reset"))
    agent = FunctionAgent(tools=tools.all(), llm=GuardedLLM(llm, guard), streaming=streaming)
    _, output, events = run_agent(agent, "Email my friend the garden note.")
    assert str(output) == COPIED and output.tool_calls == [] and tools.ran == []
    assert not [e for e in events if isinstance(e, ToolCall)]
    assert not [e for e in events if isinstance(e, AgentStream) and e.tool_calls]
    [request] = requests_in(audit)
    assert request.verdict.rule == "memorized-unsafe-text"
    assert f"send_email\nto\nx@example.com\nbody\n{UNSAFE}" in request.verdict.generated


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("body", [break_lines(UNSAFE), UNSAFE_RUSSIAN], ids=["line-breaks", "russian"])
def test_tool_call_arguments_are_read_as_the_tool_reads_them(
    guard: Guard, audit: Path, streaming: bool, body: str
) -> None:
    """JSON text of the arguments hid the passage: a line break every five words is ``\\n`` glued to the next
    word, and every Cyrillic letter was a ``\\uXXXX`` escape; the tool receives the passage itself."""
    llm = ScriptedLLM([Reply(calls=[("send_email", {"to": "x@example.com", "body": body})])])
    tools = Tools(kb_text("password-reset"))
    agent = FunctionAgent(tools=tools.all(), llm=GuardedLLM(llm, guard), streaming=streaming)
    _, output, _ = run_agent(agent, "Email my friend the garden note.")
    assert str(output) == COPIED and output.tool_calls == [] and tools.ran == []
    [request] = requests_in(audit)
    assert request.verdict.rule == "memorized-unsafe-text"


@pytest.mark.parametrize("window", [0, 2, 16])
def test_a_stream_is_checked_as_the_agent_receives_it(guard: Guard, audit: Path, window: int) -> None:
    """The agent keeps the last chunk's cumulative message, not the concatenated deltas: a stream whose deltas
    are benign while its final message holds the passage must not be allowed."""
    decoy = Reply(text="Here are some gardening tips for your spring garden.", final_text=f"Tips: {UNSAFE}")
    llm = GuardedLLM(ScriptedLLM([decoy]), guard, stream_window=window)
    agent = FunctionAgent(tools=[], llm=llm, streaming=True)
    _, output, events = run_agent(agent, GARDEN)
    assert str(output).endswith(COPIED) and "acetone" not in str(output)
    assert "acetone" not in streamed_text(events)
    [request] = requests_in(audit)
    assert request.verdict.rule == "memorized-unsafe-text"
    last = list(GuardedLLM(ScriptedLLM([decoy]), guard).stream_chat([ChatMessage(role="user", content=GARDEN)]))[-1]
    assert "acetone" not in (last.message.content or "")


def test_a_check_failing_mid_stream_ends_it_with_a_logged_decision(tmp_path: Path) -> None:
    """The streaming provenance matcher runs out of its work budget mid-stream (an answer repeating one token
    against a corpus holding a long run of it): the stream ends with the on_error message and a logged
    output Decision."""
    (tmp_path / "laugh.jsonl").write_text(json.dumps({"id": "laugh", "text": "na " * 1000}) + "\n")
    build_index(tmp_path / "laugh.jsonl", tmp_path / "laugh-index")
    audit = tmp_path / "audit.jsonl"
    policy = f"""
version: 1
name: laugh
provenance: {{index: {tmp_path}/laugh-index, min_span: 6}}
audit: {{path: {audit}}}
default: allow
on_error: abstain
"""
    guard = guard_without_embedder(policy, tmp_path)
    llm = GuardedLLM(ScriptedLLM([Reply(text="na " * 2000)]), guard, stream_window=10_000)
    agent = FunctionAgent(tools=[], llm=llm, streaming=True)
    _, output, events = run_agent(agent, "Laugh for me.")
    assert str(output) == guard.policy.model.messages.error and "na na" not in streamed_text(events)
    [request] = requests_in(audit)
    assert [(d.phase, d.action) for d in request.decisions] == [("input", Action.ALLOW), ("output", Action.ABSTAIN)]
    assert "work budget" in request.verdict.errors[0].error


@pytest.mark.parametrize("streaming", [False, True])
def test_unsure_answer_is_escalated_to_escalate_to(guard: Guard, audit: Path, streaming: bool) -> None:
    llm = ScriptedLLM(search_then(Reply(text="Maybe try 512-222-1111 for support.", logprob=UNSURE)))
    tools = Tools(kb_text("support"))
    large = MockLLM(max_tokens=3)
    agent = FunctionAgent(
        tools=tools.all(), llm=GuardedLLM(llm, guard, scorer=keyword_score, escalate_to=large), streaming=streaming
    )
    _, output, events = run_agent(agent, "How do I contact Nimbus support?")
    assert str(output).endswith("text text text") and "512-222-1111" not in streamed_text(events)
    [request] = requests_in(audit)
    verdict = request.decisions[-1]  # the escalation's Decision (request.verdict is the output phase's escalate)
    assert request.action == "escalate" and verdict.rule == "unsure" and verdict.answer == "text text text"
    assert verdict.evidence["escalation"]["review"]["action"] == "allow"
    assert "512-222-1111" in verdict.evidence["escalation"]["original"]


def test_unsure_answer_without_escalate_to_uses_the_policy_target(artifacts: Path, audit: Path) -> None:
    with ChatCompletionsServer(lambda request: "Call +1 555 0142, we answer within a day.") as large:
        guard = make_guard(artifacts, audit, escalation_url=large.base_url)
        llm = ScriptedLLM(search_then(Reply(text="Maybe try 512-222-1111.", logprob=UNSURE)))
        agent = FunctionAgent(tools=Tools(kb_text("support")).all(), llm=GuardedLLM(llm, guard, scorer=keyword_score))
        _, output, _ = run_agent(agent, "How do I contact Nimbus support?")
        guard.close()
        assert str(output) == "Call +1 555 0142, we answer within a day."
        [asked] = large.requests
        assert [m["role"] for m in asked["messages"]] == ["user", "assistant", "user"]
        assert asked["messages"][-1]["content"] == f"Tool result:\n{kb_text('support')}"
    [request] = requests_in(audit)
    assert request.action == "escalate" and request.decisions[-1].answer == str(output)


def test_unsure_answer_with_no_target_waits_for_review(guard: Guard) -> None:
    llm = ScriptedLLM(search_then(Reply(text="Maybe 512-222-1111.", logprob=UNSURE)))
    agent = FunctionAgent(tools=Tools(kb_text("support")).all(), llm=GuardedLLM(llm, guard, scorer=keyword_score))
    _, output, _ = run_agent(agent, "How do I contact Nimbus support?")
    assert str(output) == REVIEW


def test_malformed_logprobs_and_unreadable_blocks_fail_closed(guard: Guard, audit: Path) -> None:
    positive = [[{"token": "Fine", "logprob": 3.0}]]
    image = ImageBlock(url="https://example.com/x.png")
    for reply in (Reply(text="Fine.", logprobs=positive), Reply(text="See the picture.", blocks=[image])):
        agent = FunctionAgent(tools=[], llm=GuardedLLM(ScriptedLLM([reply]), guard), streaming=False)
        _, output, _ = run_agent(agent, PASSWORD)
        assert str(output) == guard.policy.model.messages.error
    verdicts = [r.verdict for r in requests_in(audit)]
    assert [v.action for v in verdicts] == [Action.ABSTAIN, Action.ABSTAIN]
    assert all(v.errors for v in verdicts)


def test_agent_workflow_handoff_is_one_request(guard: Guard, audit: Path) -> None:
    triage_llm = ScriptedLLM([Reply(calls=[("handoff", {"to_agent": "support", "reason": "account question"})])])
    support_llm = ScriptedLLM(search_then(Reply(text=ANSWER)))
    tools = Tools(kb_text("password-reset"))
    triage = FunctionAgent(
        name="triage",
        description="Routes questions.",
        llm=GuardedLLM(triage_llm, guard, scorer=keyword_score),
        can_handoff_to=["support"],
        streaming=False,
    )
    support = FunctionAgent(
        name="support",
        description="Answers account questions.",
        tools=tools.all(),
        llm=GuardedLLM(support_llm, guard, scorer=keyword_score),
        streaming=False,
    )
    workflow = AgentWorkflow(agents=[triage, support], root_agent="triage")
    handler, output, _ = run_agent(workflow, PASSWORD)
    assert str(output) == ANSWER
    [request] = requests_in(audit)
    assert request.request_id == handler.run_id and request.action == "allow"
    phases = [d.phase for d in request.decisions]
    assert phases.count("input") == 1 and phases.count("retrieval") == 1, "the handoff result is not evidence"


def test_concurrent_runs_are_separate_requests(guard: Guard, audit: Path) -> None:
    def answer(messages: list[ChatMessage]) -> Reply:
        asked = next(m.content for m in messages if m.role == MessageRole.USER)
        if not any(m.role == MessageRole.TOOL for m in messages):
            return Reply(calls=[("search_kb", {"query": asked})])
        return Reply(text=f"Answer to: {asked}")

    tools = Tools(kb_text("password-reset"))
    agent = FunctionAgent(tools=tools.all(), llm=GuardedLLM(ScriptedLLM(answer), guard, scorer=keyword_score))

    async def main() -> list[Any]:
        handlers = [agent.run(user_msg=q) for q in (PASSWORD, "How do I change my password?", PASSWORD)]
        return [(h, await h) for h in handlers]

    results = asyncio.run(main())
    requests = {r.request_id: r for r in requests_in(audit)}
    assert set(requests) == {h.run_id for h, _ in results}
    for handler, output in results:
        assert [d.phase for d in requests[handler.run_id].decisions] == ["input", "output", "retrieval", "output"]
        assert str(output).startswith("Answer to: How do I")


def test_direct_calls_outside_a_workflow_are_each_one_request(guard: Guard, audit: Path) -> None:
    llm = ScriptedLLM([Reply(text=ANSWER)] * 4 + [Reply(text=f"Tips: {UNSAFE}")])
    guarded = GuardedLLM(llm, guard)
    messages = [ChatMessage(role=MessageRole.USER, content=PASSWORD)]
    whole = guarded.chat(messages)
    streamed = list(guarded.stream_chat(messages))
    asynchronous = asyncio.run(guarded.achat(messages))
    completion = guarded.complete(PASSWORD)
    blocked = guarded.chat([ChatMessage(role=MessageRole.USER, content=GARDEN)])
    assert whole.message.content == streamed[-1].message.content == asynchronous.message.content == ANSWER
    assert completion.text == ANSWER and blocked.message.content == COPIED
    assert whole.additional_kwargs["guardrails"]["action"] == "allow"
    assert blocked.additional_kwargs["guardrails"]["rule"] == "memorized-unsafe-text"
    requests = requests_in(audit)
    assert len(requests) == 5 and [len(r.decisions) for r in requests] == [2] * 5
    assert GuardedLLM.request("no-such-run") is None


def test_a_failing_evidence_scorer_fails_closed(guard: Guard, audit: Path) -> None:
    def broken(question: str, texts: object) -> list[float]:
        raise RuntimeError("embedder down")

    llm = ScriptedLLM(search_then(Reply(text=ANSWER)))
    agent = FunctionAgent(tools=Tools(kb_text("password-reset")).all(), llm=GuardedLLM(llm, guard, scorer=broken))
    _, output, _ = run_agent(agent, PASSWORD)
    assert str(output) == guard.policy.model.messages.error and len(llm.calls) == 1
    [request] = requests_in(audit)
    assert request.verdict.phase == "retrieval" and request.verdict.errors[0].check == "evidence-scorer"


def test_results_of_tools_that_are_not_evidence_are_not_judged(guard: Guard, audit: Path) -> None:
    llm = ScriptedLLM([Reply(calls=[("send_email", {"to": "me@example.com", "body": "hi"})]), Reply(text="Sent.")])
    tools = Tools(kb_text("password-reset"))
    guarded = GuardedLLM(llm, guard, scorer=keyword_score, evidence_tools=["search_kb"])
    _, output, _ = run_agent(FunctionAgent(tools=tools.all(), llm=guarded), "Email me a hello.")
    assert str(output) == "Sent." and tools.ran == [("send_email", {"to": "me@example.com", "body": "hi"})]
    [request] = requests_in(audit)
    assert [d.phase for d in request.decisions] == ["input", "output", "output"]
