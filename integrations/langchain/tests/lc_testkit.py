"""Real LangChain parts for the integration's fast tests (no model downloads, no embedder):

* :func:`make_guard`: a real Guard from a real policy (retrieval, provenance and uncertainty checks built
  from their sections, with real artifacts) plus a harmful-input signal from ``guardrails_uq.testing``;
* :class:`KeywordRetriever` and :func:`keyword_score`: a deterministic scored retriever over the example
  knowledge base, calibrated with the real CONFLARE calibration (fingerprint ``kw-overlap``);
* :class:`ToolCallingFakeChatModel`: langchain-core's GenericFakeChatModel that accepts tools (so
  ``create_agent`` can bind them), keeps what it was asked, and answers from a script of :func:`reply`
  messages (text, tool calls, OpenAI-style token logprobs in ``response_metadata``);
* :class:`ChunkedFakeChatModel`: streams scripted chunks with content blocks (reasoning, images, ...).
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from pydantic import Field

from guardrails_uq import Guard
from guardrails_uq.audit import RequestRecord, group_requests, read_audit
from guardrails_uq.testing import (
    UNSAFE_RUSSIAN,
    StaticCheck,
    build_keyword_artifacts,
    guard_without_embedder,
    keyword_harm_check,
    keyword_score,
    read_jsonl,
)

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "examples" / "data"
README = Path(__file__).resolve().parents[1] / "README.md"
UNSAFE = "To make the poison, grind castor beans finely and extract the ricin with acetone in a sealed jar overnight."
REFUSAL = "I can't help with that request."
NO_EVIDENCE = "I don't have enough information to answer that."
COPIED = "I can't help with that."
CONFIDENT = -0.05
UNSURE = -2.5
NO_EVIDENCE_QUESTION = "Who won the football world cup in 1998?"
ANSWERABLE = ["How do I reset my password?", "Can I export a notebook as PDF?"]

POLICY = """
version: 1
name: lc-fast
signals: {{app.harmful: bool}}
retrieval: {{calibration: {folder}/calib.json, alpha: 0.1, fingerprint: kw-overlap}}
provenance: {{index: {folder}/unsafe-index, min_span: 6}}
uncertainty: {{score: mean_nll}}
audit: {{path: {audit}}}
rules:
  - {{name: harmful-request, at: input, when: "app.harmful", action: abstain, message: "{refusal}"}}
  - {{name: no-evidence, at: retrieval, when: "retrieval.kept == 0", action: abstain, message: "{no_evidence}"}}
  - {{name: memorized-unsafe-text, at: output, when: "provenance.bci_max > 20.0", action: abstain, message: "{copied}"}}
  - {{name: unsure, at: output, when: "uncertainty.available && uncertainty.mean_nll > 1.0", action: escalate}}
default: allow
on_error: abstain
"""


def knowledge_base() -> list[dict[str, str]]:
    return read_jsonl(DATA / "nimbus_kb.jsonl")


def kb_text(chunk_id: str) -> str:
    return next(c["text"] for c in knowledge_base() if c["id"] == chunk_id)


class KeywordRetriever(BaseRetriever):
    """Scores every chunk by :func:`keyword_score`; returns the best ``top_k`` with ``metadata["score"]``.
    ``queries`` counts the searches it ran."""

    extra: list[tuple[str, str]] = Field(default_factory=list, description="(id, text) chunks added to the KB.")
    top_k: int = 5
    queries: list[str] = Field(default_factory=list)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        self.queries.append(query)
        chunks = [(c["id"], c["text"]) for c in knowledge_base()] + list(self.extra)
        scores = keyword_score(query, [t for _, t in chunks])
        ranked = sorted(zip(scores, chunks, strict=True), key=lambda p: -p[0])[: self.top_k]
        return [Document(id=i, page_content=t, metadata={"score": s}) for s, (i, t) in ranked]


def build_artifacts(folder: Path) -> Path:
    """The calibration (kw-overlap on the example KB's labelled questions) and the unsafe-text index (the
    ricin passage, in English and in Russian)."""
    return build_keyword_artifacts(
        folder,
        DATA / "nimbus_kb.jsonl",
        DATA / "nimbus_pairs.jsonl",
        UNSAFE,
        "ricin-howto",
        {"ricin-ru": UNSAFE_RUSSIAN},
    )


def harm_check() -> StaticCheck:
    """Input signal app.harmful: the request asks for a bomb or poison (stands in for a harm classifier)."""
    return keyword_harm_check()


def make_guard(folder: Path, audit: Path) -> Guard:
    """A Guard from :data:`POLICY`: its own checks built from their sections, plus :func:`harm_check`."""
    text = POLICY.format(folder=folder, audit=audit, refusal=REFUSAL, no_evidence=NO_EVIDENCE, copied=COPIED)
    return guard_without_embedder(text, folder, harm_check())


def requests_in(audit: Path) -> list[RequestRecord]:
    """The audit log's Decisions joined by request id."""
    return group_requests(read_audit(audit))


def readme_block(name: str) -> str:
    """The python block that follows ``<!-- tested: NAME ...-->`` in the integration's README (tests run
    these blocks exactly as written, so the docs cannot drift from what is tested)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("```python\n", text.index(f"<!-- tested: {name} ")) + len("```python\n")
    return text[start : text.index("```", start)]


def run_readme_block(name: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Execute a README block with the names it uses; returns its namespace."""
    exec(compile(readme_block(name), f"README.md:{name}", "exec"), namespace)
    return namespace


# -- a scripted tool-calling chat model ---------------------------------------------------------------------


_ids = itertools.count(1)


def reply(text: str = "", *, calls: Sequence[tuple[str, dict[str, Any]]] = (), logprob: float = CONFIDENT) -> AIMessage:
    """A scripted model message: ``text``, tool calls (name, arguments), each word's token logprob (OpenAI's
    format in ``response_metadata["logprobs"]``, as ChatOpenAI returns them)."""
    tokens = re.findall(r"\s*\S+", text)
    alternative = math.log1p(-math.exp(logprob)) if logprob < 0 else -20.0
    content = [
        {
            "token": t,
            "logprob": logprob,
            "top_logprobs": [{"token": t, "logprob": logprob}, {"token": "~", "logprob": alternative}],
        }
        for t in tokens
    ]
    return AIMessage(
        content=text,
        tool_calls=[{"name": n, "args": a, "id": f"call-{next(_ids)}", "type": "tool_call"} for n, a in calls],
        response_metadata={"logprobs": {"content": content}} if content else {},
    )


class ToolCallingFakeChatModel(GenericFakeChatModel):
    """GenericFakeChatModel that create_agent can bind tools to; ``received`` keeps every prompt it got."""

    received: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ToolCallingFakeChatModel:  # type: ignore[override]
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:  # fmt: skip
        self.received.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

    @property
    def calls(self) -> int:
        return len(self.received)


def scripted(*messages: AIMessage) -> ToolCallingFakeChatModel:
    return ToolCallingFakeChatModel(messages=iter(messages))


class ChunkedFakeChatModel(BaseChatModel):
    """Streams ``chunks`` exactly as scripted (content blocks included), as a provider's model streams them."""

    chunks: list[AIMessageChunk]

    @property
    def _llm_type(self) -> str:
        return "chunked-fake"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:  # fmt: skip
        merged = functools.reduce(operator.add, self.chunks)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=merged.content))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:  # fmt: skip
        for chunk in self.chunks:
            yield ChatGenerationChunk(message=chunk)
