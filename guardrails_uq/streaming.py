"""Guarding a streamed answer: hold back a window of pieces, decide on the answer so far, cut on a violation.

Integrations push each streamed piece (with its token logprobs, if any) into a :class:`StreamGate` and
emit what it releases. Two modes:

* ``cut`` (default): pieces are held back ``window`` pieces and ``window`` words deep. Every ``window`` pieces, and at once when
  the incremental span matcher sees a copied span whose BCI reaches ``alert_bci``, the output rules run on
  the answer so far (every output check, on the prefix; not logged). A non-allow decision cuts the stream:
  the held pieces are never released, the cut Decision is logged, and the integration ends the stream with
  the policy's message (or the escalation's answer). At the end, the output phase runs on the whole answer.
* ``buffer``: nothing is released until the output phase has decided on the whole answer; for apps that
  prefer latency to exposure.

Which verdicts can change after a cut. Scores that only grow as tokens arrive (``provenance.bci_max``,
``provenance.longest_span``, ``uncertainty.g_nll``, ``uncertainty.max_nll``, ``uncertainty.tokens``) trip on
a prefix only if they would trip on the whole answer, so a cut on them is the verdict the end would give,
earlier. Averages and quantiles (``uncertainty.mean_nll``, ``perplexity``, ``nll_q*``, ``mean_entropy``)
can fall again as confident tokens follow: a cut on them decides on the prefix the user was about to read
(the Decision records ``metadata["stream_prefix_tokens"]``). A cut is final either way: the gate never
un-cuts, because the held text was never shown. Apps that want end-of-answer semantics for averages use
``buffer`` mode, or ``incremental=False`` (rules on the prefix only when a copied span alerts).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

from .call import Generation, Message, TokenLogprob
from .decision import Action, Decision
from .guard import Guard

StreamMode = Literal["cut", "buffer"]
_WORD = re.compile(r"\w+")


def _words(piece: str) -> int:
    return len(_WORD.findall(piece))


class StreamGate:
    """One streamed answer under a Guard. Not thread-safe (one stream, one gate)."""

    def __init__(
        self,
        guard: Guard,
        messages: Sequence[Message],
        *,
        context: Decision | None = None,
        window: int = 16,
        alert_bci: float | None = None,
        mode: StreamMode = "cut",
        incremental: bool = True,
    ) -> None:
        """``window``: pieces held back (and the cadence of incremental decisions) in ``cut`` mode;
        ``alert_bci``: raw BCI of a copied span that triggers a decision at once (default: the provenance
        check's own threshold, so a calibrated policy alerts where it would flag);
        ``incremental``: run the output rules on the prefix every ``window`` pieces (not only on a copied-span
        alert)."""
        if mode not in ("cut", "buffer"):
            raise ValueError(f"mode must be 'cut' or 'buffer', not {mode!r}")
        self.guard = guard
        self.messages = list(messages)
        self.context = context
        self.window = max(int(window), 0)
        self.mode: StreamMode = mode
        self.incremental = incremental
        self.text = ""
        self.tokens: list[TokenLogprob] = []
        self.has_logprobs = False
        #: Generation.kind of the answer checked: set "tool_call" once the streamed message is known to call tools.
        self.kind: Literal["answer", "tool_call"] = "answer"
        self.cut: Decision | None = None
        self.checks_run = 0
        self._held: deque[tuple[Any, int]] = deque()  # (payload, words in its piece)
        self._held_words = 0
        self._since_check = 0
        self._provenance = None
        for check in guard.checks["output"]:
            if check.name == "provenance":
                from .provenance.stream import ProvenanceStream

                threshold = alert_bci if alert_bci is not None else getattr(check, "alert_bci", 20.0)
                self._provenance = ProvenanceStream(check.index, threshold=threshold, min_span=check.min_span)  # type: ignore[attr-defined]

    def _generation(self) -> Generation:
        return Generation(text=self.text, tokens=list(self.tokens) if self.has_logprobs else None, kind=self.kind)

    def _decide_prefix(self) -> bool:
        """The output rules on the answer so far; True (and the stream cut) when they do not allow it."""
        self.checks_run += 1
        self._since_check = 0
        decision = self.guard.after(self._generation(), messages=self.messages, context=self.context, record=False)
        if decision.action is Action.ALLOW:
            return False
        metadata = {**decision.metadata, "stream_cut": True, "stream_prefix_tokens": len(self.tokens)}
        self.cut = decision.model_copy(update={"metadata": metadata})
        self.guard.record(self.cut)
        self._held.clear()
        self._held_words = 0
        return True

    def push(self, piece: str, payload: Any, tokens: Sequence[TokenLogprob] | None = None) -> list[Any]:
        """Add a streamed piece; returns the payloads now safe to emit ([] once the stream is cut, and
        always [] in ``buffer`` mode)."""
        if self.cut is not None:
            return []
        self.text += piece
        if tokens:
            self.has_logprobs = True
            self.tokens.extend(tokens)
        self._held.append((payload, _words(piece)))
        self._held_words += self._held[-1][1]
        self._since_check += 1 if piece.strip() else 0
        alerted = self._provenance is not None and self._provenance.feed(piece) is not None
        due = self.incremental and self.mode == "cut" and self._since_check >= max(self.window, 1)
        if (alerted or due) and self._decide_prefix():
            return []
        if self.mode == "buffer":
            return []
        released = []
        # hold back ``window`` pieces *and* at least ``window`` words: padding the stream with empty or
        # one-character pieces must not shrink how much text is checked before it is shown
        while len(self._held) > self.window and self._held_words - self._held[0][1] >= self.window:
            payload, words = self._held.popleft()
            self._held_words -= words
            released.append(payload)
        return released

    def finish(self) -> tuple[list[Any], Decision]:
        """End of stream: the output phase on the whole answer. Returns (payloads to emit, decision); when the
        decision is not allow, nothing more is emitted and the caller ends with the policy's message (or the
        escalation's answer)."""
        if self.cut is not None:
            return [], self.cut
        decision = self.guard.after(self._generation(), messages=self.messages, context=self.context)
        if decision.action is Action.ALLOW:
            released = [payload for payload, _ in self._held]
            self._held.clear()
            return released, decision
        self._held.clear()
        self.cut = decision
        return [], decision
