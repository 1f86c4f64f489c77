"""Callback handlers that run the Guard's phases on what a LangChain run does, and log every Decision.

Attach to any chain or model (``config={"callbacks": [handler]}``). They observe chat-model start (input
phase), LLM end (output phase on every generation of every prompt, tool-call arguments included, with
logprobs when the model returned them) and retriever end (retrieval phase, when documents carry
``metadata["score"]``). All the phases of one top-level run share one request id (the run's id) and each
reads the signals of the phases before it. With ``raise_error=True`` a non-allow decision aborts the run:
abstain (or on_error failing closed) raises AbstainViolation, escalate raises EscalateViolation. Only
escalation may fall back to another model; :func:`fallback_on_escalate` wires that and turns an abstain
into the policy's message::

    guarded = small_model.with_config(callbacks=[GuardrailsCallbackHandler(guard, raise_error=True)])
    chain = prompt | fallback_on_escalate(guarded, large_model)

A handler sees the answer only once the model has finished: **never stream** a model guarded by a handler
to a user (``chain.stream``, ``astream_events``): its chunks are passed on before the output phase runs.
Stream through :class:`GuardedChatModel` (which holds chunks back and cuts the stream) or through
:func:`fallback_on_escalate` (which streams the checked answer as one chunk).

Never pass ``exceptions_to_handle=(GuardrailViolation,)`` to ``with_fallbacks``: it would send requests the
policy refused to the fallback model, which answers them.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from guardrails_uq import Decision, Generation, Guard, ScoredDocument
from guardrails_uq.models.logprobs import from_langchain

from ._convert import generation_of, to_core
from ._phases import RequestPhases, blocked
from ._requests import ensure_tracking


class _Observer:
    """The shared logic: per-run state and the Guard calls. Thread-safe."""

    def __init__(self, guard: Guard, raise_error: bool, score_key: str) -> None:
        self.guard = guard
        self.raise_error = raise_error
        self.score_key = score_key
        self.decisions: list[Decision] = []
        self._runs: dict[UUID, tuple[RequestPhases, Any, Decision | None]] = {}
        self._lock = threading.Lock()
        self._tracker = ensure_tracking()

    def _phases(self, run_id: UUID, parent_run_id: UUID | None) -> RequestPhases:
        # the tracker may not have seen this run yet (handlers run in order): its parent it has
        return RequestPhases(self.guard, self._tracker.request(parent_run_id or run_id))

    def _check(self, phases: RequestPhases, decisions: Sequence[Decision]) -> None:
        with self._lock:
            self.decisions.extend(d for d in decisions if any(d is made for made in phases.made))
        first = next((d for d in decisions if blocked(d)), None)
        if self.raise_error and first is not None:
            raise phases.violation(first)

    def chat_start(self, messages: list[list[BaseMessage]], run_id: UUID, parent_run_id: UUID | None) -> None:
        phases = self._phases(run_id, parent_run_id)
        core = to_core(messages[0]) if messages else []
        decision = phases.before(core)
        with self._lock:
            self._runs[run_id] = (phases, core, decision)
        self._check(phases, [decision])

    def llm_end(self, response: LLMResult, run_id: UUID, parent_run_id: UUID | None) -> None:
        with self._lock:
            phases, core, before = self._runs.pop(run_id, (None, [], None))
        phases = phases or self._phases(run_id, parent_run_id)
        decisions = [
            phases.after_read(functools.partial(self._generation, generation), messages=core, context=before)
            for per_prompt in response.generations
            for generation in per_prompt
        ]
        self._check(phases, decisions)

    @staticmethod
    def _generation(generation: Any) -> Generation:
        """Everything one generation holds: text, tool-call arguments, logprobs (chat or text models)."""
        message = getattr(generation, "message", None)
        if message is None:
            return Generation(text=generation.text, tokens=from_langchain(generation.generation_info or {}))
        produced = generation_of(message)
        if produced.tokens is None and not getattr(message, "tool_calls", None):
            tokens = from_langchain({**(generation.generation_info or {}), **(message.response_metadata or {})})
            produced = produced.model_copy(update={"tokens": tokens})
        return produced

    def retriever_start(self, query: str, run_id: UUID, parent_run_id: UUID | None) -> None:
        with self._lock:
            self._runs[run_id] = (self._phases(run_id, parent_run_id), query, None)

    def retriever_end(self, documents: Sequence[Document], run_id: UUID, parent_run_id: UUID | None) -> None:
        with self._lock:
            phases, query, _ = self._runs.pop(run_id, (None, "", None))
        phases = phases or self._phases(run_id, parent_run_id)
        scored = [
            ScoredDocument(id=str(d.id or i), text=d.page_content, score=float(d.metadata[self.score_key]))
            for i, d in enumerate(documents)
            if self.score_key in d.metadata
        ]
        self._check(phases, [phases.retrieve(str(query), scored)])


class GuardrailsCallbackHandler(BaseCallbackHandler):
    """Synchronous handler. ``decisions`` lists every Decision it made (all are in the audit log too)."""

    def __init__(self, guard: Guard, *, raise_error: bool = False, score_key: str = "score") -> None:
        self._observer = _Observer(guard, raise_error, score_key)
        self.raise_error = raise_error  # LangChain re-raises a handler's exception only when this is True

    @property
    def decisions(self) -> list[Decision]:
        return list(self._observer.decisions)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._observer.chat_start(messages, run_id, parent_run_id)

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._observer.llm_end(response, run_id, parent_run_id)

    def on_retriever_start(
        self, serialized: dict[str, Any], query: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._observer.retriever_start(query, run_id, parent_run_id)

    def on_retriever_end(
        self, documents: Sequence[Document], *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._observer.retriever_end(documents, run_id, parent_run_id)


class AsyncGuardrailsCallbackHandler(AsyncCallbackHandler):
    """The async twin: the same logic, run in a worker thread so the event loop never blocks."""

    def __init__(self, guard: Guard, *, raise_error: bool = False, score_key: str = "score") -> None:
        self._observer = _Observer(guard, raise_error, score_key)
        self.raise_error = raise_error

    @property
    def decisions(self) -> list[Decision]:
        return list(self._observer.decisions)

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        await asyncio.to_thread(self._observer.chat_start, messages, run_id, parent_run_id)

    async def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        await asyncio.to_thread(self._observer.llm_end, response, run_id, parent_run_id)

    async def on_retriever_start(
        self, serialized: dict[str, Any], query: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._observer.retriever_start(query, run_id, parent_run_id)

    async def on_retriever_end(
        self, documents: Sequence[Document], *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        await asyncio.to_thread(self._observer.retriever_end, documents, run_id, parent_run_id)
