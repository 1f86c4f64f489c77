"""Shadow mode through the LlamaIndex integration: a shadow rule that matches never blocks GuardedQueryEngine
(query, aquery, stream) over a real RetrieverQueryEngine, the response metadata shows what it would have done,
and the audit record carries it. Real llama-index-core objects and a real Guard (see li_testkit)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from li_testkit import (  # noqa: F401 (event_loop_for_sync_calls: a fixture)
    UNSAFE,
    KeywordRetriever,
    Reply,
    ScriptedLLM,
    build_artifacts,
    event_loop_for_sync_calls,
    harm_check,
    kb_nodes,
    policy_text,
    requests_in,
)
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.postprocessor.guardrails_uq import ConformalPostprocessor, GuardedQueryEngine

from guardrails_uq import Action, Guard
from guardrails_uq.testing import guard_without_embedder

pytestmark = pytest.mark.usefixtures("event_loop_for_sync_calls")

PASSWORD = "How do I reset my password?"
COPYING = f"Sure. {UNSAFE} Then filter it twice."


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifacts(tmp_path_factory.mktemp("li-shadow"))


def shadow_guard(artifacts: Path, audit: Path) -> Guard:
    """The testkit policy with its copied-text rule in shadow (every other rule enforced)."""
    text = policy_text(artifacts, audit)
    rule = '  - {name: memorized-unsafe-text, at: output, when: "provenance.bci_max > 20.0", action: abstain,'
    assert rule in text
    text = text.replace(rule, rule + " mode: shadow,")
    return guard_without_embedder(text, artifacts, harm_check())


def engine(guard: Guard, **kwargs: object) -> GuardedQueryEngine:
    llm = ScriptedLLM(lambda messages: Reply(text=COPYING, logprob=-0.05))
    inner = RetrieverQueryEngine.from_args(
        KeywordRetriever(kb_nodes()), llm=llm, node_postprocessors=[ConformalPostprocessor(guard)], **kwargs
    )
    return GuardedQueryEngine(inner, guard)


def test_a_matching_shadow_rule_does_not_block_the_engine_and_is_logged(tmp_path: Path, artifacts: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with shadow_guard(artifacts, audit) as guard:
        answers = [engine(guard).query(PASSWORD), asyncio.run(engine(guard).aquery(PASSWORD))]
        stream = engine(guard, streaming=True).stream(PASSWORD)
        streamed = "".join(stream.response_gen)
    assert [str(a) for a in answers] == [COPYING, COPYING] and streamed == COPYING, "a shadow rule never blocks"
    for answer in answers:
        meta = answer.metadata["guardrails"]
        assert meta["action"] == "allow" and meta["shadow"]["rule"] == "memorized-unsafe-text"
    requests = requests_in(audit)
    assert len(requests) == 3
    for request in requests:
        output = request.decisions[-1]
        assert output.phase == "output" and output.action is Action.ALLOW
        assert output.shadow is not None and output.shadow.action is Action.ABSTAIN
        assert output.shadow.rule == "memorized-unsafe-text"
