"""Shadow mode through the LangChain integration: a shadow rule that matches never blocks the README-shaped
RAG chain (invoke and stream), the app's own metadata shows what it would have done, and the audit record
carries it. Real langchain-core objects and a real Guard over real artifacts (see lc_testkit); no model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnablePassthrough
from langchain_guardrails_uq import AbstainViolation, ConformalRetriever, GuardedChatModel
from lc_testkit import (
    ANSWERABLE,
    COPIED,
    NO_EVIDENCE,
    NO_EVIDENCE_QUESTION,
    POLICY,
    REFUSAL,
    UNSAFE,
    KeywordRetriever,
    build_artifacts,
    harm_check,
    reply,
    requests_in,
    scripted,
)

from guardrails_uq import Action, Guard
from guardrails_uq.testing import guard_without_embedder

PROMPT = ChatPromptTemplate.from_messages([("system", "Context:\n{context}"), ("human", "{question}")])
COPYING = f"Sure. {UNSAFE} Then filter it twice."
SHADOWED = 'action: abstain, message: "{copied}"}}'


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifacts(tmp_path_factory.mktemp("lc-shadow"))


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def shadow_guard(artifacts: Path, audit: Path) -> Guard:
    """The testkit policy with its copied-text rule in shadow (and every other rule enforced)."""
    text = POLICY.replace(SHADOWED, 'action: abstain, message: "{copied}", mode: shadow}}')
    assert text != POLICY
    text = text.format(folder=artifacts, audit=audit, refusal=REFUSAL, no_evidence=NO_EVIDENCE, copied=COPIED)
    return guard_without_embedder(text, artifacts, harm_check())


def chain(guard: Guard, text: str) -> Runnable:
    conformal = ConformalRetriever(source=KeywordRetriever(), guard=guard, k=20)
    return (
        {"context": conformal | (lambda d: "\n".join(x.page_content for x in d)), "question": RunnablePassthrough()}
        | PROMPT
        | GuardedChatModel(model=scripted(reply(text)), guard=guard, escalate_to=None)
    )


def test_a_matching_shadow_rule_does_not_block_the_chain_and_is_logged(artifacts: Path, audit: Path) -> None:
    with shadow_guard(artifacts, audit) as guard:
        message = chain(guard, COPYING).invoke(ANSWERABLE[0])
        streamed = "".join(c.content for c in chain(guard, COPYING).stream(ANSWERABLE[0]))
    assert message.content == COPYING and streamed == COPYING, "a shadow rule never changes the answer"
    meta = message.response_metadata["guardrails"]
    assert meta["action"] == "allow" and meta["rule"] is None
    assert meta["shadow"]["action"] == "abstain" and meta["shadow"]["rule"] == "memorized-unsafe-text"
    invoked, stream = requests_in(audit)
    for request in (invoked, stream):
        output = request.decisions[-1]
        assert output.phase == "output" and output.action is Action.ALLOW
        assert output.shadow is not None and output.shadow.rule == "memorized-unsafe-text"
        assert output.shadow.inputs["provenance.bci_max"] > 20.0


def test_enforced_rules_still_block_beside_a_shadow_rule(artifacts: Path, audit: Path) -> None:
    with shadow_guard(artifacts, audit) as guard, pytest.raises(AbstainViolation) as refused:
        chain(guard, COPYING).invoke(NO_EVIDENCE_QUESTION)
    assert refused.value.decision.rule == "no-evidence" and refused.value.decision.shadow is None
