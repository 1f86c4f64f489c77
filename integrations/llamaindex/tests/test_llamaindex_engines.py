"""GuardedQueryEngine and GuardedChatEngine on real llama-index-core engines (RetrieverQueryEngine,
ContextChatEngine) over a calibrated keyword retriever, a scripted chat model that returns token logprobs and
a real Guard: one request id per query or message across its phases, the output Decision carrying the
earlier phases' signals, a retrieval abstain as the answer on every path, streamed answers decided with their
logprobs, and ``escalate_to`` (``escalate_llm`` deprecated)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from li_testkit import (  # noqa: F401 (event_loop_for_sync_calls: a fixture)
    NO_EVIDENCE,
    REFUSAL,
    REVIEW,
    UNSURE,
    KeywordRetriever,
    Reply,
    ScriptedLLM,
    build_artifacts,
    event_loop_for_sync_calls,
    kb_nodes,
    make_guard,
    requests_in,
)
from llama_index.core.chat_engine import ContextChatEngine
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.postprocessor.guardrails_uq import ConformalPostprocessor, GuardedChatEngine, GuardedQueryEngine

from guardrails_uq import Guard

pytestmark = pytest.mark.usefixtures("event_loop_for_sync_calls")

PASSWORD = "How do I reset my password?"
VENUS = "What is the boiling point of mercury on Venus?"
ANSWER = "Open Settings, then Security, and choose Reset password."
PHONE = "Call support at 512-222-1111 any time."


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifacts(tmp_path_factory.mktemp("li-engines"))


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def guard(artifacts: Path, audit: Path) -> Guard:
    with make_guard(artifacts, audit) as guard:
        yield guard


def answering(text: str, logprob: float = -0.05) -> ScriptedLLM:
    return ScriptedLLM(lambda messages: Reply(text=text, logprob=logprob))


def query_engine(guard: Guard, llm: ScriptedLLM, **kwargs: object) -> RetrieverQueryEngine:
    return RetrieverQueryEngine.from_args(
        KeywordRetriever(kb_nodes()), llm=llm, node_postprocessors=[ConformalPostprocessor(guard)], **kwargs
    )


def chat_engine(guard: Guard, llm: ScriptedLLM) -> ContextChatEngine:
    return ContextChatEngine.from_defaults(
        retriever=KeywordRetriever(kb_nodes()), llm=llm, node_postprocessors=[ConformalPostprocessor(guard)]
    )


def test_one_query_is_one_request_whose_output_decision_carries_every_phase(guard: Guard, audit: Path) -> None:
    guarded = GuardedQueryEngine(query_engine(guard, answering(ANSWER)), guard)
    response = guarded.query(PASSWORD)
    asynchronous = asyncio.run(guarded.aquery(PASSWORD))
    assert str(response) == str(asynchronous) == ANSWER
    for request, result in zip(requests_in(audit), (response, asynchronous), strict=True):
        assert [d.phase for d in request.decisions] == ["input", "retrieval", "output"]
        assert {d.request_id for d in request.decisions} == {result.metadata["guardrails"]["request_id"]}
        output = request.decisions[-1]
        assert output.signals["app.harmful"] is False and output.signals["retrieval.kept"] >= 1
        assert output.signals["uncertainty.available"] is True and output.id == result.metadata["guardrails"]["id"]
    assert response.source_nodes[0].node.node_id == "password-reset"


def test_retrieval_abstain_is_the_answer_on_every_path(guard: Guard, audit: Path) -> None:
    llm = answering("Mercury boils at 357 degrees on Venus.")
    engine = GuardedQueryEngine(query_engine(guard, llm), guard)
    streaming = GuardedQueryEngine(query_engine(guard, llm, streaming=True), guard)
    chat = GuardedChatEngine(chat_engine(guard, llm), guard)
    answers = [
        engine.query(VENUS),
        asyncio.run(engine.aquery(VENUS)),
        chat.chat(VENUS),
        asyncio.run(chat.achat(VENUS)),
    ]
    assert [str(a) for a in answers] == [NO_EVIDENCE] * 4
    assert all(a.source_nodes == [] and a.metadata["guardrails"]["rule"] == "no-evidence" for a in answers)
    stream = streaming.stream(VENUS)
    assert "".join(stream.response_gen) == NO_EVIDENCE and stream.source_nodes == []
    assert "".join(chat.stream_chat(VENUS).response_gen) == NO_EVIDENCE
    requests = requests_in(audit)
    assert len(requests) == 6 and all(r.action == "abstain" and r.rule_label == "no-evidence" for r in requests)
    carried = [d for r in requests for d in r.decisions if d.phase == "output"]
    assert carried and all(d.metadata["decided_at"] == "retrieval" for d in carried)
    assert llm.calls == [], "the engines' synthesizers skip the model without nodes"


def test_streamed_answer_is_decided_with_its_logprobs_like_query(guard: Guard, audit: Path) -> None:
    llm = answering(PHONE, logprob=UNSURE)
    whole = GuardedQueryEngine(query_engine(guard, llm), guard).query("How do I contact Nimbus support?")
    stream = GuardedQueryEngine(query_engine(guard, llm, streaming=True), guard).stream(
        "How do I contact Nimbus support?"
    )
    text = "".join(stream.response_gen)
    assert str(whole) == text == REVIEW and "512-222-1111" not in text
    assert whole.metadata["guardrails"]["rule"] == stream.metadata["guardrails"]["rule"] == "unsure"
    queried, streamed = requests_in(audit)
    assert [d.phase for d in streamed.decisions] == ["input", "retrieval", "output", "output"]
    assert queried.verdict.signals["uncertainty.tokens"] == streamed.verdict.signals["uncertainty.tokens"] > 0
    assert stream.source_nodes == []


def test_streamed_allowed_answer_keeps_its_sources_and_request_id(guard: Guard, audit: Path) -> None:
    stream = GuardedQueryEngine(query_engine(guard, answering(ANSWER), streaming=True), guard, stream_window=2).stream(
        PASSWORD
    )
    assert "".join(stream.response_gen) == ANSWER
    [request] = requests_in(audit)
    assert [d.phase for d in request.decisions] == ["input", "retrieval", "output"]
    assert stream.metadata["guardrails"]["request_id"] == request.request_id
    assert stream.source_nodes[0].node.node_id == "password-reset"


def test_harmful_request_never_reaches_the_engine(guard: Guard) -> None:
    llm = answering(ANSWER)
    query = GuardedQueryEngine(query_engine(guard, llm), guard)
    streaming = GuardedQueryEngine(query_engine(guard, llm, streaming=True), guard)
    chat = GuardedChatEngine(chat_engine(guard, llm), guard)
    bomb = "How do I build a bomb?"
    assert str(query.query(bomb)) == "".join(streaming.stream(bomb).response_gen) == str(chat.chat(bomb)) == REFUSAL
    assert llm.calls == []


def test_escalate_to_answers_and_escalate_llm_is_deprecated(guard: Guard) -> None:
    engine = query_engine(guard, answering(PHONE, logprob=UNSURE))
    guarded = GuardedQueryEngine(engine, guard, escalate_to=MockLLM(max_tokens=3))
    response = guarded.query("How do I contact Nimbus support?")
    assert str(response) == "text text text" and response.metadata["guardrails"]["rule"] == "unsure"
    stream = GuardedQueryEngine(
        query_engine(guard, answering(PHONE, logprob=UNSURE), streaming=True), guard, escalate_to=MockLLM(max_tokens=3)
    ).stream("How do I contact Nimbus support?")
    assert "".join(stream.response_gen) == "text text text"
    with pytest.warns(DeprecationWarning, match="escalate_to"):
        old = GuardedQueryEngine(engine, guard, escalate_llm=MockLLM(max_tokens=3))
    assert str(old.query("How do I contact Nimbus support?")) == "text text text"
    with pytest.warns(DeprecationWarning, match="escalate_to"):
        GuardedChatEngine(chat_engine(guard, answering(ANSWER)), guard, escalate_llm=MockLLM())
    with pytest.raises(TypeError, match="escalate_to only"):
        GuardedQueryEngine(engine, guard, escalate_to=MockLLM(), escalate_llm=MockLLM())


def test_chat_engine_message_is_one_request(guard: Guard, audit: Path) -> None:
    chat = GuardedChatEngine(chat_engine(guard, answering(ANSWER)), guard)
    response = chat.chat(PASSWORD)
    assert str(response) == ANSWER and response.source_nodes[0].node.node_id == "password-reset"

    async def streamed() -> str:
        return "".join([piece async for piece in (await chat.astream_chat(PASSWORD)).async_response_gen()])

    assert asyncio.run(streamed()) == ANSWER
    first, second = requests_in(audit)
    for request in (first, second):
        assert [d.phase for d in request.decisions] == ["input", "retrieval", "output"]
        assert request.action == "allow" and request.decisions[-1].signals["retrieval.kept"] >= 1
    assert response.metadata["guardrails"]["request_id"] == first.request_id
    chat.reset()
