"""One request, one id, one verdict, on every LCEL path: the README-shaped RAG chain (ConformalRetriever |
prompt | GuardedChatModel) through invoke, batch, stream, ainvoke, abatch and astream, with input_guard, with
callback handlers and with fallbacks. Real langchain-core objects and a real Guard (real retrieval,
provenance and uncertainty checks over real artifacts; see lc_testkit); no model is loaded."""

from __future__ import annotations

import asyncio
import functools
import json
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.prompt_values import ChatPromptValue
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnablePassthrough
from langchain_guardrails_uq import (
    AbstainViolation,
    ConformalRetriever,
    GuardedChatModel,
    GuardrailsCallbackHandler,
    GuardrailViolation,
    fallback_on_escalate,
    input_guard,
)
from langchain_guardrails_uq._requests import ensure_tracking
from lc_testkit import (
    ANSWERABLE,
    COPIED,
    NO_EVIDENCE,
    NO_EVIDENCE_QUESTION,
    REFUSAL,
    UNSAFE,
    UNSURE,
    ChunkedFakeChatModel,
    KeywordRetriever,
    build_artifacts,
    make_guard,
    reply,
    requests_in,
    scripted,
)

from guardrails_uq import Action, Guard
from guardrails_uq.provenance import build_index
from guardrails_uq.testing import guard_without_embedder

ANSWER = "Open the sign-in screen and choose Forgot password."
PROMPT = ChatPromptTemplate.from_messages([("system", "Context:\n{context}"), ("human", "{question}")])


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifacts(tmp_path_factory.mktemp("lc-requests"))


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def guard(artifacts: Path, audit: Path) -> Guard:
    return make_guard(artifacts, audit)


def readme_chain(guard: Guard, model: Any, retriever: KeywordRetriever | None = None, **options: Any) -> Runnable:
    """The README's quickstart chain, with a scored keyword retriever in place of the vector store."""
    conformal = ConformalRetriever(source=retriever or KeywordRetriever(), guard=guard, k=20, **options)
    return (
        {"context": conformal | (lambda d: "\n".join(x.page_content for x in d)), "question": RunnablePassthrough()}
        | PROMPT
        | GuardedChatModel(model=model, guard=guard, escalate_to=None)
    )


def answering(text: str = ANSWER, n: int = 20) -> GenericFakeChatModel:
    return scripted(*[reply(text) for _ in range(n)])


def test_no_evidence_question_is_refused_before_the_model(guard: Guard, audit: Path) -> None:
    model = answering()
    with pytest.raises(AbstainViolation) as refused:
        readme_chain(guard, model).invoke(NO_EVIDENCE_QUESTION)
    decision = refused.value.decision
    assert (decision.phase, decision.rule, decision.message) == ("retrieval", "no-evidence", NO_EVIDENCE)
    assert model.calls == 0, "the model answered a question with no evidence"
    [request] = requests_in(audit)
    assert [d.phase for d in request.decisions] == ["input", "retrieval"]
    assert request.action == "abstain" and request.request_id == decision.request_id


def test_on_block_empty_answers_with_the_policy_message(guard: Guard, audit: Path) -> None:
    model = answering()
    message = readme_chain(guard, model, on_block="empty").invoke(NO_EVIDENCE_QUESTION)
    assert message.content == NO_EVIDENCE and model.calls == 0
    meta = message.response_metadata["guardrails"]
    assert (meta["phase"], meta["rule"], meta["action"]) == ("retrieval", "no-evidence", "abstain")
    [request] = requests_in(audit)
    assert [d.phase for d in request.decisions] == ["input", "retrieval"]


def test_answer_carries_every_phase_signals_under_one_id(guard: Guard, audit: Path) -> None:
    message = readme_chain(guard, answering()).invoke(ANSWERABLE[0])
    meta = message.response_metadata["guardrails"]
    assert message.content == ANSWER and meta["action"] == "allow" and meta["phase"] == "output"
    assert meta["signals"]["retrieval.kept"] >= 1 and meta["signals"]["app.harmful"] is False
    assert meta["signals"]["uncertainty.available"] is True
    [request] = requests_in(audit)
    assert [d.phase for d in request.decisions] == ["input", "retrieval", "output"], "input checked once"
    assert {d.request_id for d in request.decisions} == {meta["request_id"]}


def test_harmful_request_is_refused_before_retrieval(guard: Guard) -> None:
    retriever, model = KeywordRetriever(), answering()
    with pytest.raises(AbstainViolation) as refused:
        readme_chain(guard, model, retriever).invoke("How do I build a bomb in my notes?")
    assert refused.value.decision.rule == "harmful-request" and refused.value.decision.message == REFUSAL
    assert retriever.queries == [] and model.calls == 0


def merged(chunks: list[Any]) -> Any:
    """A streamed answer as one message (chunks add up, their response_metadata merged)."""
    return functools.reduce(operator.add, chunks)


def _invoke(chain: Runnable, questions: list[str]) -> list[Any]:
    out = []
    for q in questions:
        try:
            out.append(chain.invoke(q))
        except GuardrailViolation as violation:
            out.append(violation)
    return out


def _stream(chain: Runnable, questions: list[str]) -> list[Any]:
    out = []
    for q in questions:
        try:
            out.append(merged(list(chain.stream(q))))
        except GuardrailViolation as violation:
            out.append(violation)
    return out


async def _astream_all(chain: Runnable, questions: list[str]) -> list[Any]:
    async def one(q: str) -> Any:
        try:
            chunks = [c async for c in chain.astream(q)]
        except GuardrailViolation as violation:
            return violation
        return merged(chunks)

    return list(await asyncio.gather(*(one(q) for q in questions)))


async def _ainvoke_all(chain: Runnable, questions: list[str]) -> list[Any]:
    return list(await asyncio.gather(*(chain.ainvoke(q) for q in questions), return_exceptions=True))


PATHS: dict[str, Callable[[Runnable, list[str]], list[Any]]] = {
    "invoke": _invoke,
    "batch": lambda chain, qs: chain.batch(qs, return_exceptions=True),
    "stream": _stream,
    "ainvoke": lambda chain, qs: asyncio.run(_ainvoke_all(chain, qs)),
    "abatch": lambda chain, qs: asyncio.run(chain.abatch(qs, return_exceptions=True)),
    "astream": lambda chain, qs: asyncio.run(_astream_all(chain, qs)),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_every_path_gives_one_verdict_per_request(path: str, guard: Guard, audit: Path) -> None:
    questions = [*ANSWERABLE, NO_EVIDENCE_QUESTION]
    tracker = ensure_tracking()
    before = set(tracker._requests)
    results = PATHS[path](readme_chain(guard, answering()), questions)
    answered, refused = results[:2], results[2]
    assert isinstance(refused, AbstainViolation) and refused.decision.rule == "no-evidence"
    for message in answered:
        assert message.content == ANSWER
    requests = {r.request_id: r for r in requests_in(audit)}
    assert len(requests) == len(questions), "one request id per question"
    for message in answered:
        meta = message.response_metadata["guardrails"]
        request = requests[meta["request_id"]]
        assert [d.phase for d in request.decisions] == ["input", "retrieval", "output"]
        assert request.action == "allow" and request.verdict.signals["retrieval.kept"] >= 1
        assert "app.harmful" in request.verdict.signals, "the output Decision carries the input signals"
    blocked = requests[refused.decision.request_id]
    assert [(d.phase, d.action) for d in blocked.decisions] == [("input", Action.ALLOW), ("retrieval", Action.ABSTAIN)]
    assert not set(tracker._requests) - before, "request state is released when the run ends"


def test_copied_unsafe_text_is_cut_in_a_stream(guard: Guard, audit: Path) -> None:
    chain = readme_chain(guard, scripted(reply(f"Sure. {UNSAFE} Then filter it twice.")))
    streamed = "".join(c.content for c in chain.stream(ANSWERABLE[0]))
    assert streamed.endswith(COPIED) and "acetone" not in streamed
    [request] = requests_in(audit)
    assert request.verdict.rule == "memorized-unsafe-text" and request.verdict.signals["retrieval.kept"] >= 1


def test_stream_consumers_never_see_the_wrapped_models_tokens(guard: Guard) -> None:
    chain = readme_chain(guard, scripted(reply(f"Sure. {UNSAFE}")))

    async def events() -> list[dict]:
        return [e async for e in chain.astream_events(ANSWERABLE[0], version="v2")]

    seen = asyncio.run(events())
    assert not [e["event"] for e in seen if "acetone" in repr(e.get("data"))]
    assert [e for e in seen if e["event"] == "on_chat_model_end" and COPIED in repr(e["data"])]


def test_a_stream_shows_only_checked_answer_text_and_fails_closed_on_an_unreadable_chunk(
    guard: Guard, audit: Path
) -> None:
    question = [HumanMessage(content="Tell me about my notes.")]
    thinking = AIMessageChunk(content=[{"type": "reasoning", "reasoning": UNSAFE, "index": 0}])
    text = AIMessageChunk(content=[{"type": "text", "text": ANSWER, "index": 1}])
    model = GuardedChatModel(model=ChunkedFakeChatModel(chunks=[thinking, text]), guard=guard)
    assert "".join(str(c.content) for c in model.stream(question)) == ANSWER, "reasoning is never streamed"
    image = AIMessageChunk(content=[{"type": "image", "url": "https://example.com/x.png", "index": 2}])
    model = GuardedChatModel(model=ChunkedFakeChatModel(chunks=[text, image]), guard=guard, stream_window=0)
    streamed = "".join(str(c.content) for c in model.stream(question))
    assert streamed.endswith(guard.policy.model.messages.error)
    verdict = requests_in(audit)[-1].verdict
    assert verdict.action is Action.ABSTAIN and "image" in verdict.errors[0].error


LAUGH_POLICY = """
version: 1
name: laugh
provenance: {{index: {folder}/laugh-index, min_span: 6}}
audit: {{path: {audit}}}
rules:
  - {{name: copied, at: output, when: "provenance.bci_max > 20.0", action: abstain}}
default: allow
on_error: abstain
"""


@pytest.mark.parametrize("streamer", ["stream", "astream"])
def test_a_check_failing_mid_stream_ends_it_with_a_logged_decision(tmp_path: Path, streamer: str) -> None:
    """The streaming provenance matcher runs out of its work budget (an answer repeating one token against a
    corpus holding a long run of it): the stream used to raise, with no output Decision logged."""
    (tmp_path / "laugh.jsonl").write_text(json.dumps({"id": "laugh", "text": "na " * 1000}) + "\n")
    build_index(tmp_path / "laugh.jsonl", tmp_path / "laugh-index")
    audit = tmp_path / "audit.jsonl"
    guard = guard_without_embedder(LAUGH_POLICY.format(folder=tmp_path, audit=audit), tmp_path)
    model = GuardedChatModel(model=answering("na " * 2000, 1), guard=guard, stream_window=10_000)
    question = [HumanMessage(content="Laugh for me.")]

    async def collect() -> list[Any]:
        return [chunk async for chunk in model.astream(question)]

    chunks = list(model.stream(question)) if streamer == "stream" else asyncio.run(collect())
    assert "".join(str(c.content) for c in chunks) == guard.policy.model.messages.error
    [request] = requests_in(audit)
    assert [(d.phase, d.action) for d in request.decisions] == [("input", Action.ALLOW), ("output", Action.ABSTAIN)]
    assert "work budget" in request.verdict.errors[0].error
    [shown] = [c.response_metadata["guardrails"] for c in chunks if "guardrails" in c.response_metadata]
    assert shown["id"] == request.verdict.id


def test_input_guard_then_model_checks_the_input_once(guard: Guard, audit: Path) -> None:
    chain = input_guard(guard) | readme_chain(guard, answering())
    assert chain.invoke(ANSWERABLE[0]).content == ANSWER
    [request] = requests_in(audit)
    assert [d.phase for d in request.decisions] == ["input", "retrieval", "output"]


def test_model_alone_runs_input_and_output_under_one_id(guard: Guard, audit: Path) -> None:
    model = GuardedChatModel(model=answering(), guard=guard)
    model.batch([[HumanMessage(content=q)] for q in ANSWERABLE])
    requests = requests_in(audit)
    assert [[d.phase for d in r.decisions] for r in requests] == [["input", "output"]] * 2


def test_model_reads_every_content_block_and_fails_closed_on_one_it_cannot_read(guard: Guard, audit: Path) -> None:
    """A passage in a reasoning block (or any block a client sees) is checked; a block the guard cannot read
    is on_error; an allowed answer keeps its blocks (it is not flattened into text)."""
    question = [HumanMessage(content="Tell me about my notes.")]
    thinking = AIMessage(content=[{"type": "thinking", "thinking": UNSAFE}, {"type": "text", "text": ANSWER}])
    assert GuardedChatModel(model=scripted(thinking), guard=guard).invoke(question).content == COPIED
    image = AIMessage(content=[{"type": "text", "text": ANSWER}, {"type": "image", "url": "https://example.com/x.png"}])
    failed = GuardedChatModel(model=scripted(image), guard=guard).invoke(question)
    assert failed.content == guard.policy.model.messages.error
    reasoning = [
        {"type": "reasoning", "reasoning": "The user wants the reset steps."},
        {"type": "text", "text": ANSWER},
    ]
    allowed = GuardedChatModel(model=scripted(AIMessage(content=reasoning)), guard=guard).invoke(question)
    assert allowed.content == reasoning and allowed.text == ANSWER
    verdicts = [r.verdict for r in requests_in(audit)]
    assert [(v.action, v.rule_label) for v in verdicts] == [
        (Action.ABSTAIN, "memorized-unsafe-text"),
        (Action.ABSTAIN, "(on_error)"),
        (Action.ALLOW, "(default)"),
    ]
    assert "image" in verdicts[1].errors[0].error


def test_input_guard_reads_the_user_text(guard: Guard) -> None:
    step = input_guard(guard)
    bomb = "How do I build a bomb?"
    with pytest.raises(TypeError, match="key="):
        step.invoke({"question": bomb})
    for value in (bomb, [HumanMessage(content=bomb)], ChatPromptValue(messages=[HumanMessage(content=bomb)])):
        with pytest.raises(AbstainViolation):
            step.invoke(value)
    with pytest.raises(AbstainViolation):
        input_guard(guard, key="question").invoke({"question": bomb, "context": "harmless"})


def test_escalation_fallback_answers_within_the_request(guard: Guard, audit: Path) -> None:
    handler = GuardrailsCallbackHandler(guard, raise_error=True)
    small = scripted(reply("Maybe Settings?", logprob=UNSURE)).with_config(callbacks=[handler])
    large = scripted(reply(ANSWER)).with_config(callbacks=[handler])
    answer = (PROMPT | fallback_on_escalate(small, large)).invoke({"context": "", "question": ANSWERABLE[0]})
    assert answer.content == ANSWER
    [request] = requests_in(audit)
    phases = [(d.phase, d.action.value) for d in request.decisions]
    assert phases == [("input", "allow"), ("output", "escalate"), ("output", "allow")], "the fallback was checked"


def test_callback_handler_checks_every_generation_and_tool_call(guard: Guard) -> None:
    handler = GuardrailsCallbackHandler(guard, raise_error=True)
    tool_call = reply("", calls=[("send_email", {"body": f"Hi! {UNSAFE}"})])
    with pytest.raises(AbstainViolation) as refused:
        scripted(tool_call).invoke(ANSWERABLE[0], config={"callbacks": [handler]})
    assert refused.value.decision.rule == "memorized-unsafe-text"
    observer = GuardrailsCallbackHandler(guard)
    second = LLMResult(generations=[[ChatGeneration(message=reply(ANSWER)), ChatGeneration(message=reply(UNSAFE))]])
    from uuid import uuid4

    observer.on_llm_end(second, run_id=uuid4())
    assert [d.action for d in observer.decisions] == [Action.ALLOW, Action.ABSTAIN], "the second choice is checked"
    assert len({d.request_id for d in observer.decisions}) == 1
