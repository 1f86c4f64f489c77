"""OpenTelemetry through LlamaIndex: the Guard's phase and check spans of a real RetrieverQueryEngine wrapped in
GuardedQueryEngine (ConformalPostprocessor, a scripted chat model with logprobs) nest under the app's current
span, on query, aquery and a streamed query (issue 24, item 2). Real artifacts and checks (li_testkit)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from li_testkit import (
    KeywordRetriever,
    Reply,
    ScriptedLLM,
    build_artifacts,
    event_loop_for_sync_calls,  # noqa: F401 (a fixture the tests name)
    harm_check,
    kb_nodes,
    policy_text,
)
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.postprocessor.guardrails_uq import ConformalPostprocessor, GuardedQueryEngine
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from guardrails_uq.telemetry import Telemetry
from guardrails_uq.testing import guard_without_embedder

pytestmark = pytest.mark.usefixtures("event_loop_for_sync_calls")

ANSWER = "Open Settings, then Security, and choose Reset password."


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifacts(tmp_path_factory.mktemp("li-otel"))


@pytest.mark.parametrize("how", ["query", "aquery", "stream"])
def test_guard_spans_nest_under_the_apps_current_span(artifacts: Path, tmp_path: Path, how: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    text = policy_text(artifacts, tmp_path / "audit.jsonl")
    guard = guard_without_embedder(text, artifacts, harm_check(), telemetry=Telemetry(tracer_provider=provider))
    llm = ScriptedLLM(lambda messages: Reply(text=ANSWER, logprob=-0.05))
    engine = RetrieverQueryEngine.from_args(
        KeywordRetriever(kb_nodes()), llm=llm, node_postprocessors=[ConformalPostprocessor(guard)],
        streaming=how == "stream",
    )  # fmt: skip
    guarded = GuardedQueryEngine(engine, guard)
    app = provider.get_tracer("app")
    with app.start_as_current_span("app request") as root:
        if how == "query":
            guarded.query("How do I reset my password?")
        elif how == "aquery":
            asyncio.run(guarded.aquery("How do I reset my password?"))
        else:
            "".join(guarded.stream("How do I reset my password?").response_gen)
    guard.close()
    spans = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}
    phases = [s for s in spans if s.name == "apply_guardrail li-fast"]
    assert {s.attributes["guardrails_uq.phase"] for s in phases} == {"input", "retrieval", "output"}
    for phase in phases:
        assert phase.context.trace_id == root.get_span_context().trace_id, "a phase left the app's trace"
        assert phase.parent.span_id == root.get_span_context().span_id, "a phase span is a child of the app's span"
    checks = [s for s in spans if s.name.startswith("apply_guardrail") and s.name != "apply_guardrail li-fast"]
    assert {s.name for s in checks} >= {"apply_guardrail retrieval", "apply_guardrail provenance"}
    assert all(by_id[s.parent.span_id].name == "apply_guardrail li-fast" for s in checks)
