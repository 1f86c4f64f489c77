"""An instrumentation event handler: records LLM and retrieval events as Decisions in the audit log.

LlamaIndex calls event handlers inside its dispatcher and *swallows their exceptions*, so this handler can
observe and log but can never block or change a run; to enforce a policy use GuardedQueryEngine,
GuardedChatEngine, GuardedLLM or ConformalPostprocessor. During a guarded query it also hands the LLM's
logprobs to the engine (through a context variable), which is how uncertainty signals reach the policy:
a finished response's ``logprobs`` and, while an answer streams, each chunk's (a streamed chunk's
``logprobs`` are the tokens of its delta, as OpenAI streams them).

    from llama_index.core.instrumentation import get_dispatcher
    get_dispatcher().add_event_handler(GuardrailsEventHandler(guard=guard))
"""

from __future__ import annotations

import threading
from typing import Any

from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
)
from llama_index.core.instrumentation.events.retrieval import RetrievalEndEvent
from pydantic import ConfigDict, PrivateAttr

from guardrails_uq import Decision, Generation, Guard, ScoredDocument

from . import _context
from ._convert import tokens_of

_OPEN_STREAMS = 1024
_registered: set[int] = set()
_registered_lock = threading.Lock()


class GuardrailsEventHandler(BaseEventHandler):
    """Logs a retrieval Decision per RetrievalEndEvent and an output Decision per LLM end event (a streamed
    answer with the logprobs of all its chunks); ``log=False``: only collect logprobs for guarded queries.
    ``decisions`` keeps what it logged."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    log: bool = True
    _guard: Guard | None = PrivateAttr(default=None)
    _decisions: list[Decision] = PrivateAttr(default_factory=list)
    _streams: dict[str, list[Any]] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, guard: Guard | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._guard = guard

    @classmethod
    def class_name(cls) -> str:
        return "GuardrailsEventHandler"

    @property
    def decisions(self) -> list[Decision]:
        return list(self._decisions)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, LLMCompletionInProgressEvent | LLMChatInProgressEvent):
            self._chunk(event)
        elif isinstance(event, LLMCompletionEndEvent | LLMChatEndEvent):
            self._end(event)
        elif isinstance(event, RetrievalEndEvent) and self.log and self._guard is not None:
            query = event.str_or_query_bundle
            query_str = query if isinstance(query, str) else query.query_str
            scored = [
                ScoredDocument(id=n.node.node_id, text=n.node.get_content(), score=n.score)
                for n in event.nodes
                if n.score is not None
            ]
            self._decisions.append(self._guard.retrieve(query_str, scored))

    def _chunk(self, event: LLMCompletionInProgressEvent | LLMChatInProgressEvent) -> None:
        logprobs = getattr(event.response, "logprobs", None)
        if not logprobs:
            return
        state = _context.current.get()
        if state is not None:
            state.stream.append(logprobs)
        if self.log and self._guard is not None and event.span_id is not None:
            with self._lock:
                self._streams.setdefault(event.span_id, []).extend(logprobs)
                while len(self._streams) > _OPEN_STREAMS:  # streams abandoned before their end event
                    self._streams.pop(next(iter(self._streams)))

    def _end(self, event: LLMCompletionEndEvent | LLMChatEndEvent) -> None:
        response = event.response
        streamed = None
        if event.span_id is not None:
            with self._lock:
                streamed = self._streams.pop(event.span_id, None)
        logprobs = getattr(response, "logprobs", None) if response is not None else None
        state = _context.current.get()
        if state is not None and logprobs:
            state.logprobs.append(logprobs)
        if self.log and self._guard is not None and response is not None:
            text = response.text if isinstance(event, LLMCompletionEndEvent) else (response.message.content or "")
            tokens = tokens_of(streamed if streamed is not None else logprobs)
            self._decisions.append(self._guard.after(Generation(text=text, tokens=tokens)))


def ensure_collector() -> None:
    """Register (once per process) a non-logging handler that hands LLM logprobs to guarded queries."""
    from llama_index.core.instrumentation import get_dispatcher

    dispatcher = get_dispatcher()
    with _registered_lock:
        if id(dispatcher) not in _registered:
            dispatcher.add_event_handler(GuardrailsEventHandler(log=False))
            _registered.add(id(dispatcher))
