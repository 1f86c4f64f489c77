"""Per-call state shared between the guarded engines, the postprocessor and the event handler.

A guarded query sets a fresh :class:`CallState` in a context variable; the ConformalPostprocessor records its
retrieval Decision there and the event handler records the LLM's logprobs, so the engine can use both
without any change to the wrapped query engine. Context variables follow the call into the synthesizer
(and into asyncio tasks and worker threads), so concurrent queries never see each other's state. A streamed
answer is produced while the caller iterates, after the query returned: the engine sets the state again
around each step of the stream (:func:`active`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from guardrails_uq import Decision, TokenLogprob

from ._convert import tokens_of


@dataclass
class CallState:
    """One guarded request. ``before``: its input Decision; ``retrieval``: its latest retrieval Decision;
    ``question``: the user's text (what retrieval is judged against, without injected guidelines);
    ``logprobs``: each finished LLM response's logprobs; ``stream``: logprobs of streamed chunks not yet
    taken (each chunk's are the tokens of its delta)."""

    before: Decision | None = None
    retrieval: Decision | None = None
    question: str | None = None
    logprobs: list[Any] = field(default_factory=list)
    stream: list[Any] = field(default_factory=list)

    @property
    def context(self) -> Decision | None:
        """The Decision the next phase continues from: the latest retrieval, else the input."""
        return self.retrieval or self.before

    def take_stream_tokens(self) -> list[TokenLogprob] | None:
        """The tokens of the chunks streamed since the last call (None when they carried no logprobs)."""
        pending, self.stream = self.stream, []
        tokens: list[TokenLogprob] = []
        for logprobs in pending:
            tokens.extend(tokens_of(logprobs) or [])
        return tokens or None


current: ContextVar[CallState | None] = ContextVar("guardrails_uq_llamaindex_call", default=None)


@contextmanager
def active(state: CallState) -> Iterator[CallState]:
    """Make ``state`` the current call's state for the duration of the block."""
    token = current.set(state)
    try:
        yield state
    finally:
        current.reset(token)
