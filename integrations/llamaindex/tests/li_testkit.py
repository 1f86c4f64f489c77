"""Real LlamaIndex parts for the integration's fast tests (no model downloads, no embedder):

* :class:`ScriptedLLM`: a FunctionCallingLLM whose replies (text, tool calls, token logprobs) are scripted,
  streamed the way OpenAI's LlamaIndex LLM streams (cumulative message, ``delta``, the delta's logprobs);
  it counts its calls, so a test can assert a request never reached the model;
* :class:`KeywordRetriever` and :func:`keyword_score`: a deterministic scored retriever over the example
  knowledge base, calibrated with the real CONFLARE calibration (fingerprint ``kw-overlap``);
* :func:`make_guard`: a real Guard from a real policy (retrieval, provenance, uncertainty checks built from
  their sections) plus a harmful-input signal from ``guardrails_uq.testing.StaticCheck``.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    LogProb,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from pydantic import PrivateAttr

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
UNSAFE = "To make the poison, grind castor beans finely and extract the ricin with acetone in a sealed jar overnight."
REFUSAL = "I can't help with that request."
NO_EVIDENCE = "I don't have enough information to answer that."
COPIED = "I can't help with that."
REVIEW = "A human agent will follow up."
CONFIDENT = -0.05
UNSURE = -2.5

POLICY = """
version: 1
name: li-fast
signals: {{app.harmful: bool}}
retrieval: {{calibration: {folder}/calib.json, alpha: 0.1, fingerprint: kw-overlap}}
provenance: {{index: {folder}/unsafe-index, min_span: 6}}
uncertainty: {{score: mean_nll}}
audit: {{path: {audit}}}
messages: {{escalate: "{review}"}}
{escalation}
rules:
  - {{name: harmful-request, at: input, when: "app.harmful", action: abstain, message: "{refusal}"}}
  - {{name: no-evidence, at: retrieval, when: "retrieval.kept == 0", action: abstain, message: "{no_evidence}"}}
  - {{name: memorized-unsafe-text, at: output, when: "provenance.bci_max > 20.0", action: abstain, message: "{copied}"}}
  - {{name: unsure, at: output, when: "uncertainty.available && uncertainty.mean_nll > 1.0", action: escalate}}
default: allow
on_error: abstain
"""


@pytest.fixture
def event_loop_for_sync_calls() -> Iterator[None]:
    """llama-index-core's sync synthesizers and chat engines count tokens through ``asyncio.get_event_loop()``,
    which creates (and never closes) a loop when the thread has none; give them one the test closes. A test
    module imports it and names it (``usefixtures``) for the tests that need it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


def knowledge_base() -> list[dict[str, str]]:
    return read_jsonl(DATA / "nimbus_kb.jsonl")


def kb_text(chunk_id: str) -> str:
    return next(c["text"] for c in knowledge_base() if c["id"] == chunk_id)


class KeywordRetriever(BaseRetriever):
    """Scores every node by :func:`keyword_score` and returns the best ``top_k``."""

    def __init__(self, nodes: Sequence[TextNode], top_k: int = 5) -> None:
        super().__init__()
        self._nodes = list(nodes)
        self._top_k = top_k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        question = (
            query_bundle.custom_embedding_strs[0] if query_bundle.custom_embedding_strs else query_bundle.query_str
        )
        scores = keyword_score(question, [n.get_content() for n in self._nodes])
        ranked = sorted(zip(scores, self._nodes, strict=True), key=lambda p: -p[0])[: self._top_k]
        return [NodeWithScore(node=n, score=s) for s, n in ranked]


def kb_nodes(*extra: tuple[str, str]) -> list[TextNode]:
    nodes = [TextNode(id_=c["id"], text=c["text"]) for c in knowledge_base()]
    return nodes + [TextNode(id_=i, text=t) for i, t in extra]


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


def policy_text(folder: Path, audit: Path, *, escalation_url: str | None = None) -> str:
    escalation = (
        f'escalation: {{model: {{base_url: "{escalation_url}", model: large}}}}' if escalation_url is not None else ""
    )
    return POLICY.format(
        folder=folder,
        audit=audit,
        escalation=escalation,
        refusal=REFUSAL,
        no_evidence=NO_EVIDENCE,
        copied=COPIED,
        review=REVIEW,
    )


def make_guard(folder: Path, audit: Path, *, escalation_url: str | None = None) -> Guard:
    """A Guard from :data:`POLICY`: its own checks built from their sections, plus :func:`harm_check`."""
    return guard_without_embedder(policy_text(folder, audit, escalation_url=escalation_url), folder, harm_check())


def requests_in(audit: Path) -> list[RequestRecord]:
    return group_requests(read_audit(audit))


# -- a scripted function-calling chat model ---------------------------------------------------------------


@dataclass
class Reply:
    """One scripted model message: text, tool calls (name, arguments), each token's logprob; ``logprobs``
    replaces the computed ones (malformed-output tests), ``blocks`` adds content blocks; ``final_text`` is the
    text of the last streamed chunk's cumulative message when it differs from the streamed deltas (a model
    whose stream and message disagree)."""

    text: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    logprob: float = CONFIDENT
    logprobs: Any = None
    blocks: list[Any] = field(default_factory=list)
    final_text: str | None = None

    def tokens(self) -> list[str]:
        return re.findall(r"\s*\S+", self.text) or ([self.text] if self.text else [])

    def token_logprobs(self, tokens: Sequence[str]) -> list[list[LogProb]]:
        alternative = math.log1p(-math.exp(self.logprob)) if self.logprob < 0 else -20.0
        return [[LogProb(token=t, logprob=self.logprob), LogProb(token="~", logprob=alternative)] for t in tokens]

    def tool_blocks(self, index: int) -> list[ToolCallBlock]:
        return [
            ToolCallBlock(tool_call_id=f"call-{index}-{i}", tool_name=name, tool_kwargs=kwargs)
            for i, (name, kwargs) in enumerate(self.calls)
        ]


Responder = Callable[[list[ChatMessage]], Reply]


class ScriptedLLM(FunctionCallingLLM):
    """Answers from ``script`` (a list of Replies, one per call, or a function of the messages). ``calls``
    keeps the messages of every call it received."""

    _script: list[Reply] | Responder = PrivateAttr()
    _calls: list[list[ChatMessage]] = PrivateAttr(default_factory=list)

    def __init__(self, script: Sequence[Reply] | Responder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._script = script if callable(script) else list(script)

    @classmethod
    def class_name(cls) -> str:
        return "ScriptedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_chat_model=True, is_function_calling_model=True, model_name="scripted")

    @property
    def calls(self) -> list[list[ChatMessage]]:
        return self._calls

    def _next(self, messages: Sequence[ChatMessage]) -> tuple[Reply, int]:
        self._calls.append(list(messages))
        if callable(self._script):
            return self._script(list(messages)), len(self._calls)
        if not self._script:
            raise AssertionError(f"unexpected model call #{len(self._calls)}")
        return self._script.pop(0), len(self._calls)

    def _message(self, reply: Reply, index: int, text: str, final: bool) -> ChatMessage:
        blocks: list[Any] = [TextBlock(text=text)] if text or not reply.calls else []
        if final:
            blocks += [*reply.blocks, *reply.tool_blocks(index)]
        return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        reply, index = self._next(messages)
        logprobs = reply.logprobs if reply.logprobs is not None else reply.token_logprobs(reply.tokens())
        return ChatResponse(message=self._message(reply, index, reply.text, True), logprobs=logprobs or None)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self.chat(messages, **kwargs)

    def _chunks(self, messages: Sequence[ChatMessage]) -> list[ChatResponse]:
        reply, index = self._next(messages)
        tokens = reply.tokens() or [""]
        chunks, text = [], ""
        for i, token in enumerate(tokens):
            text += token
            final = i == len(tokens) - 1
            logprobs = reply.token_logprobs([token]) if token else None
            if reply.logprobs is not None:
                logprobs = reply.logprobs if final else None
            shown = reply.final_text if final and reply.final_text is not None else text
            chunks.append(
                ChatResponse(message=self._message(reply, index, shown, final), delta=token, logprobs=logprobs)
            )
        return chunks

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        chunks = self._chunks(messages)

        def gen() -> Generator[ChatResponse, None, None]:
            yield from chunks

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        chunks = self._chunks(messages)

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            for chunk in chunks:
                yield chunk

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        response = self.chat([ChatMessage(role=MessageRole.USER, content=prompt)])
        return CompletionResponse(text=response.message.content or "", logprobs=response.logprobs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.complete(prompt, formatted, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> Generator[CompletionResponse, None, None]:
            for chunk in self.stream_chat([ChatMessage(role=MessageRole.USER, content=prompt)]):
                yield CompletionResponse(text=chunk.message.content or "", delta=chunk.delta, logprobs=chunk.logprobs)

        return gen()

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            for chunk in self.stream_chat([ChatMessage(role=MessageRole.USER, content=prompt)]):
                yield CompletionResponse(text=chunk.message.content or "", delta=chunk.delta, logprobs=chunk.logprobs)

        return gen()

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(
                ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str) else user_msg
            )
        return {"messages": messages}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        if not calls and error_on_no_tool_call:
            raise ValueError("expected a tool call")
        return [
            ToolSelection(tool_id=c.tool_call_id or "", tool_name=c.tool_name, tool_kwargs=dict(c.tool_kwargs))  # type: ignore[arg-type]
            for c in calls
        ]
