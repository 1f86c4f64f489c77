"""OpenTelemetry through LangChain: the Guard's phase and check spans of a real LCEL RAG chain (ConformalRetriever
| prompt | GuardedChatModel over langchain-core's fake chat model) nest under the app's current span, on invoke,
ainvoke and stream (issue 24, item 2). Real artifacts and checks (lc_testkit); no model is loaded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_guardrails_uq import ConformalRetriever, GuardedChatModel
from lc_testkit import (
    ANSWERABLE,
    COPIED,
    NO_EVIDENCE,
    POLICY,
    REFUSAL,
    KeywordRetriever,
    build_artifacts,
    harm_check,
    reply,
    scripted,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from guardrails_uq.telemetry import Telemetry
from guardrails_uq.testing import guard_without_embedder

PROMPT = ChatPromptTemplate.from_messages([("system", "Context:\n{context}"), ("human", "{question}")])
ANSWER = "Open the sign-in screen and choose Forgot password."


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifacts(tmp_path_factory.mktemp("lc-otel"))


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream"])
def test_guard_spans_nest_under_the_apps_current_span(artifacts: Path, tmp_path: Path, how: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    text = POLICY.format(
        folder=artifacts, audit=tmp_path / "a.jsonl", refusal=REFUSAL, no_evidence=NO_EVIDENCE, copied=COPIED
    )
    guard = guard_without_embedder(text, artifacts, harm_check(), telemetry=Telemetry(tracer_provider=provider))
    conformal = ConformalRetriever(source=KeywordRetriever(), guard=guard, k=20)
    chain = (
        {"context": conformal | (lambda d: "\n".join(x.page_content for x in d)), "question": RunnablePassthrough()}
        | PROMPT
        | GuardedChatModel(model=scripted(*[reply(ANSWER) for _ in range(3)]), guard=guard, escalate_to=None)
    )
    app = provider.get_tracer("app")
    with app.start_as_current_span("app request") as root:
        if how == "invoke":
            chain.invoke(ANSWERABLE[0])
        elif how == "ainvoke":
            asyncio.run(chain.ainvoke(ANSWERABLE[0]))
        else:
            "".join(str(chunk.content) for chunk in chain.stream(ANSWERABLE[0]))
    spans = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}
    phases = [s for s in spans if s.name == "apply_guardrail lc-fast"]
    assert {s.attributes["guardrails_uq.phase"] for s in phases} >= {"input", "retrieval", "output"}
    for span in spans:
        if span.name.startswith("apply_guardrail"):
            assert span.context.trace_id == root.get_span_context().trace_id, f"{span.name} left the app's trace"
    for phase in phases:
        assert phase.parent.span_id == root.get_span_context().span_id, "a phase span is a child of the app's span"
    checks = [s for s in spans if s.name in ("apply_guardrail provenance", "apply_guardrail retrieval")]
    assert checks and all(by_id[s.parent.span_id].name == "apply_guardrail lc-fast" for s in checks)
