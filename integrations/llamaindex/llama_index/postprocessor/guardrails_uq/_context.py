"""Per-call state shared between the guarded engines, the postprocessor and the event handler.

A guarded query sets a fresh :class:`CallState` in a context variable; the ConformalPostprocessor records its
retrieval Decision there and the event handler records the LLM's logprobs, so the engine can use both
without any change to the wrapped query engine. Context variables follow the call into the synthesizer
(and into asyncio tasks), so concurrent queries never see each other's state.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from guardrails_uq import Decision


@dataclass
class CallState:
    before: Decision | None = None
    retrieval: Decision | None = None
    logprobs: list[Any] = field(default_factory=list)


current: ContextVar[CallState | None] = ContextVar("guardrails_uq_llamaindex_call", default=None)
