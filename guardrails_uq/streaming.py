"""Guarding a streamed answer: hold back a window of pieces, cut the stream when a rule trips.

Integrations push each streamed piece (with its token logprobs, if any) into a :class:`StreamGate` and
emit what it releases. Pieces are held back only ``window`` pieces deep. When the policy has a provenance
check, each piece also feeds an incremental span matcher; as soon as a copied span's BCI reaches
``alert_bci`` the output rules run on the answer so far, and a non-allow decision cuts the stream: the
held pieces are never released and the integration ends the stream with the policy's message. At the end
of the stream the output phase runs on the whole answer (uncertainty needs every token), with the same
consequences for whatever is still held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from .call import Generation, Message, TokenLogprob
from .decision import Action, Decision
from .guard import Guard


class StreamGate:
    """One streamed answer under a Guard. Not thread-safe (one stream, one gate)."""

    def __init__(
        self,
        guard: Guard,
        messages: Sequence[Message],
        *,
        context: Decision | None = None,
        window: int = 16,
        alert_bci: float = 20.0,
    ) -> None:
        self.guard = guard
        self.messages = list(messages)
        self.context = context
        self.window = window
        self.text = ""
        self.tokens: list[TokenLogprob] = []
        self.has_logprobs = False
        self.cut: Decision | None = None
        self._held: deque[Any] = deque()
        self._provenance = None
        for check in guard.checks["output"]:
            if check.name == "provenance":
                from .provenance.stream import ProvenanceStream

                self._provenance = ProvenanceStream(check.index, threshold=alert_bci, min_span=check.min_span)  # type: ignore[attr-defined]

    def _generation(self) -> Generation:
        return Generation(text=self.text, tokens=list(self.tokens) if self.has_logprobs else None)

    def push(self, piece: str, payload: Any, tokens: Sequence[TokenLogprob] | None = None) -> list[Any]:
        """Add a streamed piece; returns the payloads now safe to emit ([] once the stream is cut)."""
        if self.cut is not None:
            return []
        self.text += piece
        if tokens:
            self.has_logprobs = True
            self.tokens.extend(tokens)
        self._held.append(payload)
        if self._provenance is not None and self._provenance.feed(piece) is not None:
            decision = self.guard.after(self._generation(), messages=self.messages, context=self.context, record=False)
            if decision.action is not Action.ALLOW:
                self.cut = decision.model_copy(update={"metadata": {**decision.metadata, "stream_cut": True}})
                self.guard.record(self.cut)
                self._held.clear()
                return []
        released = []
        while len(self._held) > self.window:
            released.append(self._held.popleft())
        return released

    def finish(self) -> tuple[list[Any], Decision]:
        """End of stream: the output phase on the whole answer. Returns (payloads to emit, decision); when the
        decision is not allow, nothing more is emitted and the caller ends with the policy's message (or the
        escalation's answer)."""
        if self.cut is not None:
            return [], self.cut
        decision = self.guard.after(self._generation(), messages=self.messages, context=self.context)
        if decision.action is Action.ALLOW:
            released = list(self._held)
            self._held.clear()
            return released, decision
        self._held.clear()
        self.cut = decision
        return [], decision
