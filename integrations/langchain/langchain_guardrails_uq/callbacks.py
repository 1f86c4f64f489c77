"""Callback handlers that run the Guard's phases on what a LangChain run does, and log every Decision.

Attach to any chain or model (``config={"callbacks": [handler]}``). They observe chat-model start (input
phase), LLM end (output phase, with logprobs when the model returned them) and retriever end (retrieval
phase, when documents carry ``metadata["score"]``). With ``raise_error=True`` a non-allow decision aborts
the run: abstain (or on_error failing closed) raises AbstainViolation, escalate raises EscalateViolation.
Only escalation may fall back to another model; :func:`fallback_on_escalate` wires that and turns an
abstain into the policy's message::

    guarded = small_model.with_config(callbacks=[GuardrailsCallbackHandler(guard, raise_error=True)])
    chain = prompt | fallback_on_escalate(guarded, large_model)

Never pass ``exceptions_to_handle=(GuardrailViolation,)`` to ``with_fallbacks``: it would send requests the
policy refused to the fallback model, which answers them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from guardrails_uq import Action, Decision, Generation, Guard, ScoredDocument, violation_for
from guardrails_uq.models.logprobs import from_langchain

from ._convert import to_core


class _Observer:
    """The shared logic: per-run state and the Guard calls. Thread-safe."""

    def __init__(self, guard: Guard, raise_error: bool, score_key: str) -> None:
        self.guard = guard
        self.raise_error = raise_error
        self.score_key = score_key
        self.decisions: list[Decision] = []
        self._runs: dict[UUID, tuple[Any, Decision | None]] = {}
        self._lock = threading.Lock()

    def _check(self, decision: Decision) -> None:
        with self._lock:
            self.decisions.append(decision)
        if self.raise_error and decision.final and decision.action is not Action.ALLOW:
            raise violation_for(decision)

    def chat_start(self, messages: list[list[BaseMessage]], run_id: UUID) -> None:
        core = to_core(messages[0]) if messages else []
        decision = self.guard.before(core)
        with self._lock:
            self._runs[run_id] = (core, decision)
        self._check(decision)

    def llm_end(self, response: LLMResult, run_id: UUID) -> None:
        with self._lock:
            core, before = self._runs.pop(run_id, ([], None))
        first = response.generations[0][0] if response.generations and response.generations[0] else None
        if first is None:
            return
        message = getattr(first, "message", None)
        metadata = {**(first.generation_info or {}), **(getattr(message, "response_metadata", None) or {})}
        generation = Generation(text=first.text, tokens=from_langchain(metadata))
        self._check(self.guard.after(generation, messages=core, context=before))

    def retriever_start(self, query: str, run_id: UUID) -> None:
        with self._lock:
            self._runs[run_id] = (query, None)

    def retriever_end(self, documents: Sequence[Document], run_id: UUID) -> None:
        with self._lock:
            query, _ = self._runs.pop(run_id, ("", None))
        scored = [
            ScoredDocument(id=str(d.id or i), text=d.page_content, score=float(d.metadata[self.score_key]))
            for i, d in enumerate(documents)
            if self.score_key in d.metadata
        ]
        self._check(self.guard.retrieve(str(query), scored))


class GuardrailsCallbackHandler(BaseCallbackHandler):
    """Synchronous handler. ``decisions`` lists every Decision it made (all are in the audit log too)."""

    def __init__(self, guard: Guard, *, raise_error: bool = False, score_key: str = "score") -> None:
        self._observer = _Observer(guard, raise_error, score_key)
        self.raise_error = raise_error  # LangChain re-raises a handler's exception only when this is True

    @property
    def decisions(self) -> list[Decision]:
        return list(self._observer.decisions)

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self._observer.chat_start(messages, run_id)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self._observer.llm_end(response, run_id)

    def on_retriever_start(self, serialized: dict[str, Any], query: str, *, run_id: UUID, **kwargs: Any) -> None:
        self._observer.retriever_start(query, run_id)

    def on_retriever_end(self, documents: Sequence[Document], *, run_id: UUID, **kwargs: Any) -> None:
        self._observer.retriever_end(documents, run_id)


class AsyncGuardrailsCallbackHandler(AsyncCallbackHandler):
    """The async twin: the same logic, run in a worker thread so the event loop never blocks."""

    def __init__(self, guard: Guard, *, raise_error: bool = False, score_key: str = "score") -> None:
        self._observer = _Observer(guard, raise_error, score_key)
        self.raise_error = raise_error

    @property
    def decisions(self) -> list[Decision]:
        return list(self._observer.decisions)

    async def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        await asyncio.to_thread(self._observer.chat_start, messages, run_id)

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        await asyncio.to_thread(self._observer.llm_end, response, run_id)

    async def on_retriever_start(self, serialized: dict[str, Any], query: str, *, run_id: UUID, **kwargs: Any) -> None:
        self._observer.retriever_start(query, run_id)

    async def on_retriever_end(self, documents: Sequence[Document], *, run_id: UUID, **kwargs: Any) -> None:
        await asyncio.to_thread(self._observer.retriever_end, documents, run_id)
