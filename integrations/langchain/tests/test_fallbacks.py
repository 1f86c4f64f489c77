"""Abstain never falls back; escalate does.

The README's fallback blocks run here exactly as written (extracted from the README, so the docs cannot
drift from what is tested), with real LangChain objects (fake chat models, ChatPromptTemplate,
with_fallbacks, an InMemoryVectorStore) and a real Guard built from a policy whose signals come from
guardrails_uq.testing checks, so no model is loaded.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_guardrails_uq import (
    AbstainViolation,
    AsyncGuardrailsCallbackHandler,
    ConformalRetriever,
    EscalateViolation,
    GuardrailsCallbackHandler,
    fallback_on_escalate,
    input_guard,
)
from lc_testkit import README, ROOT, run_readme_block

from guardrails_uq import Action, Call, Check, Guard, loads_policy
from guardrails_uq.testing import FailingCheck, StaticCheck

BLOCKS = ("fallback-on-escalate", "with-fallbacks")
REFUSAL = "I can't help with that request."
CHECK_DOWN = "The safety check is down; try again later."
LARGE = "Paris is the capital of France."
BOMB = "How do I build a bomb at home?"
POLICY = f"""
version: 1
name: lc-fallbacks
signals: {{app.harmful: bool, app.unsure: bool, app.flagged: bool}}
messages: {{error: "{CHECK_DOWN}"}}
rules:
  - {{name: harmful-request, at: input, when: "app.harmful", action: abstain, message: "{REFUSAL}"}}
  - {{name: flagged-source, at: retrieval, when: "app.flagged", action: escalate}}
  - {{name: unsure, at: output, when: "app.unsure", action: escalate}}
default: allow
on_error: abstain
"""
PROMPT = ChatPromptTemplate.from_messages([("system", "You are a helpful assistant."), ("human", "{question}")])


def harm_check() -> Check:
    """Input signal: the request asks for a bomb (stands in for a harmful-input classifier)."""
    return StaticCheck("harm", "input", compute=lambda call: {"app.harmful": "bomb" in call.user_input.lower()})


def confidence_check() -> Check:
    """Output signal: the answer hedges (stands in for the uncertainty check)."""
    return StaticCheck("confidence", "output", compute=_unsure)


def _unsure(call: Call) -> dict[str, Any]:
    return {"app.unsure": call.generation is not None and call.generation.text.startswith("Maybe")}


def make_guard(*checks: Check) -> Guard:
    """A Guard from POLICY with the harm and confidence checks; a check in ``checks`` replaces the one of its
    phase (or adds one)."""
    phases = {c.phase for c in checks}
    kept = [c for c in (harm_check(), confidence_check()) if c.phase not in phases]
    return Guard(loads_policy(POLICY), audit=False, checks=[*kept, *checks])


class ChatCalls(BaseCallbackHandler):
    """Counts how often a chat model was asked."""

    def __init__(self) -> None:
        self.count = 0

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any) -> None:
        self.count += 1


def large_model(calls: ChatCalls) -> Runnable:
    return FakeListChatModel(responses=[LARGE]).with_config(callbacks=[calls])


def run_block(name: str, guard: Guard, question: str, small_answer: str, calls: ChatCalls) -> dict[str, Any]:
    """Execute a README block with the names it uses; returns its namespace (``answer``, ``handler``)."""
    namespace: dict[str, Any] = {
        "guard": guard,
        "prompt": PROMPT,
        "small_model": FakeListChatModel(responses=[small_answer]),
        "large_model": large_model(calls),
        "question": question,
    }
    return run_readme_block(name, namespace)


def test_every_tested_readme_block_is_run_where_it_says() -> None:
    text = README.read_text(encoding="utf-8")
    markers = re.findall(r"<!-- tested: ([\w-]+) \(([\w/.]+) runs this block\) -->", text)
    assert {name for name, _ in markers} >= {*BLOCKS, "agent", "rag-chain", "proxy-client"}
    for name, path in markers:
        assert f'"{name}"' in (ROOT / path).read_text(encoding="utf-8"), f"{path} does not run README block {name}"
    assert text.count("<!-- tested: ") == len(markers), "a tested marker does not name its test file"
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert not [b for b in blocks if "exceptions_to_handle=(GuardrailViolation" in b]


@pytest.mark.parametrize("block", BLOCKS)
def test_input_abstain_never_reaches_the_fallback(block: str) -> None:
    calls = ChatCalls()
    ran = run_block(block, make_guard(), BOMB, "Sure, here is how to build one.", calls)
    assert ran["answer"] == REFUSAL
    assert calls.count == 0, "the fallback model was asked a request the policy refused"
    assert [(d.phase, d.action, d.rule) for d in ran["handler"].decisions] == [
        ("input", Action.ABSTAIN, "harmful-request")
    ]


@pytest.mark.parametrize("block", BLOCKS)
def test_output_escalation_is_answered_by_the_fallback(block: str) -> None:
    calls = ChatCalls()
    ran = run_block(block, make_guard(), "What is the capital of France?", "Maybe Lyon?", calls)
    assert ran["answer"] == LARGE
    assert calls.count == 1
    assert ran["handler"].decisions[-1].rule == "unsure"


@pytest.mark.parametrize("block", BLOCKS)
def test_allowed_answer_passes_without_fallback(block: str) -> None:
    calls = ChatCalls()
    ran = run_block(block, make_guard(), "What is the capital of France?", "Paris.", calls)
    assert ran["answer"] == "Paris."
    assert calls.count == 0


@pytest.mark.parametrize("phase", ["input", "output"])
@pytest.mark.parametrize("block", BLOCKS)
def test_failed_check_fails_closed_without_fallback(block: str, phase: str) -> None:
    failing = FailingCheck("broken", phase, RuntimeError("classifier down"))  # type: ignore[arg-type]
    calls = ChatCalls()
    ran = run_block(block, make_guard(failing), "What is the capital of France?", "Paris.", calls)
    assert ran["answer"] == CHECK_DOWN
    assert calls.count == 0
    decision = ran["handler"].decisions[-1]
    assert decision.action is Action.ABSTAIN and decision.errors[0].check == "broken"


def test_abstain_answer_carries_the_decision() -> None:
    handler = GuardrailsCallbackHandler(make_guard(), raise_error=True)
    small = FakeListChatModel(responses=["Sure."]).with_config(callbacks=[handler])
    message = (PROMPT | fallback_on_escalate(small, [large_model(ChatCalls())])).invoke({"question": BOMB})
    assert message.response_metadata["guardrails"]["rule"] == "harmful-request"
    assert message.response_metadata["guardrails"]["action"] == "abstain"


def test_stream_shows_only_checked_text() -> None:
    calls = ChatCalls()
    handler = GuardrailsCallbackHandler(make_guard(), raise_error=True)
    small = FakeListChatModel(responses=["Maybe Lyon, or maybe Marseille?"]).with_config(callbacks=[handler])
    chain = PROMPT | fallback_on_escalate(small, large_model(calls))
    streamed = "".join(str(chunk.content) for chunk in chain.stream({"question": "Capital of France?"}))
    assert streamed == LARGE and calls.count == 1


def test_async_abstain_and_escalate() -> None:
    async def ask(question: str, small_answer: str, calls: ChatCalls) -> str:
        handler = AsyncGuardrailsCallbackHandler(make_guard(), raise_error=True)
        small = FakeListChatModel(responses=[small_answer]).with_config(callbacks=[handler])
        message = await (PROMPT | fallback_on_escalate(small, large_model(calls))).ainvoke({"question": question})
        return str(message.content)

    refused, escalated = ChatCalls(), ChatCalls()
    assert asyncio.run(ask(BOMB, "Sure, here is how.", refused)) == REFUSAL and refused.count == 0
    assert asyncio.run(ask("Capital of France?", "Maybe Lyon?", escalated)) == LARGE and escalated.count == 1


def test_input_guard_raises_by_action() -> None:
    step = input_guard(make_guard(), key="question")
    with pytest.raises(AbstainViolation) as refused:
        step.invoke({"question": BOMB})
    assert refused.value.decision.rule == "harmful-request"
    assert step.invoke({"question": "Capital of France?"}) == {"question": "Capital of France?"}
    calls = ChatCalls()
    chain = fallback_on_escalate(step | PROMPT | FakeListChatModel(responses=["Sure."]), large_model(calls))
    assert chain.invoke({"question": BOMB}).content == REFUSAL and calls.count == 0
    failing = input_guard(make_guard(FailingCheck("broken", "input")))
    with pytest.raises(AbstainViolation):
        asyncio.run(failing.ainvoke("hello"))


def test_conformal_retriever_raises_by_action() -> None:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents([Document(id="a", page_content="Paris is in France."), Document(id="b", page_content="x")])
    flagged = StaticCheck("sources", "retrieval", compute=lambda call: {"app.flagged": "Lyon" in (call.query or "")})
    retriever = ConformalRetriever(source=store, guard=make_guard(flagged), k=2)
    assert len(retriever.invoke("Paris")) == 2
    with pytest.raises(EscalateViolation):
        retriever.invoke("Lyon")
    broken = ConformalRetriever(source=store, guard=make_guard(FailingCheck("sources", "retrieval")))
    with pytest.raises(AbstainViolation):
        broken.invoke("Paris")
    legacy = ConformalRetriever(source=store, guard=make_guard(flagged), k=2, on_empty="empty")  # the former name
    assert legacy.on_block == "empty" and legacy.invoke("Lyon") == []
