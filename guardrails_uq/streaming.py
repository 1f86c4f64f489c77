"""Guarding a streamed answer: hold back a window of pieces, decide on the answer so far, cut on a violation.

Integrations push each streamed piece (with its token logprobs, if any) into a :class:`StreamGate` and
emit what it releases. Two modes:

* ``cut`` (default): pieces are held back ``window`` pieces and ``window`` words deep. Every ``window`` pieces, and at once when
  the incremental span matcher sees a copied span whose BCI reaches ``alert_bci``, the output rules run on
  the answer so far (not logged). A non-allow decision cuts the stream: the held pieces are never released,
  the cut Decision is logged, and the integration ends the stream with the policy's message (or the
  escalation's answer). At the end, the output phase runs on the whole answer.
* Cost: a check with an incremental form (``check.stream()``: provenance's span matcher, uncertainty's
  running token scores and claims) is fed each piece once as it arrives and gives the prefix's signals
  without re-reading it, so a stream costs time linear in its length (bench/stream.py). A prefix that does
  not pass is decided once more by the full output phase, which the cut Decision records (exact, with all
  evidence). A check without an incremental form runs on the whole prefix at every decision (quadratic in
  the length: prefer ``buffer`` mode for such policies). The proxy runs the gate off its event loop.
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

from .call import Call, Generation, Message, TokenLogprob
from .checks import Check, Signals
from .decision import Action, Decision
from .guard import Guard
from .jsonsafe import MAX_DECODE_DEPTH, EscapeDecoder, reader_texts

StreamMode = Literal["cut", "buffer"]
_WORD = re.compile(r"\w+")


def _words(piece: str) -> int:
    return len(_WORD.findall(piece))


class _PrefixView:
    """A check as the prefix decisions see it: its incremental stream's signals (the call is not read)."""

    def __init__(self, check: Check, stream: Any) -> None:
        self.name, self.phase, self.stream = check.name, check.phase, stream

    def run(self, call: Call) -> Signals:
        return self.stream.signals()  # type: ignore[no-any-return]


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
        self._parts: list[str] = []
        self.tokens: list[TokenLogprob] = []
        self.has_logprobs = False
        #: Generation.kind of the answer checked: set "tool_call" once the streamed message is known to call tools.
        self.kind: Literal["answer", "tool_call"] = "answer"
        #: Generation.content: with kind "tool_call", the text beside the calls (set with kind, before their text).
        self.content: str | None = None
        self.cut: Decision | None = None
        self.checks_run = 0
        self._held: deque[tuple[Any, int]] = deque()  # (payload, words in its piece)
        self._held_words = 0
        self._since_check = 0
        self._decoders = [EscapeDecoder() for _ in range(MAX_DECODE_DEPTH)]
        # checks with an incremental form are fed as pieces arrive; prefix decisions read their signals
        self._streams: dict[str, Any] = {}
        for check in guard.checks["output"]:
            start = getattr(check, "stream", None)
            if callable(start):
                self._streams[check.name] = start(alert_bci=alert_bci) if check.name == "provenance" else start()
        self._prefix_guard = guard.with_checks(
            {c.name: _PrefixView(c, self._streams[c.name]) for c in guard.checks["output"] if c.name in self._streams}
        )
        self._all_incremental = all(c.name in self._streams for c in guard.checks["output"])

    @property
    def text(self) -> str:
        """The answer streamed so far."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def _generation(self) -> Generation:
        """The answer so far as the output phase reads it: every form a reader can be shown (JSON escapes
        decoded, :func:`~guardrails_uq.jsonsafe.reader_texts`)."""
        return Generation(
            text="\n".join(reader_texts(self.text)),
            tokens=list(self.tokens) if self.has_logprobs else None,
            kind=self.kind,
            content=self.content if self.kind == "tool_call" else None,
        )

    def _decide_prefix(self) -> bool:
        """The output rules on the answer so far; True (and the stream cut) when they do not allow it.

        Checks with an incremental form give their signals for the prefix without re-reading it; the others
        (none among the built-in output checks) run on the whole prefix. A prefix that does not pass is
        decided once more by the full output phase (exact, with complete evidence) before the cut."""
        self.checks_run += 1
        self._since_check = 0
        # the built-in checks never read the call here: the prefix is built only for checks that must
        generation = Generation(text="") if self._all_incremental else self._generation()
        decision = self._prefix_guard.after(
            generation, messages=self.messages, context=self.context, record=False, partial=True
        )
        if decision.action is Action.ALLOW:
            return False
        decision = self.guard.after(
            self._generation(), messages=self.messages, context=self.context, record=False, partial=True
        )
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
        self._parts.append(piece)
        if tokens:
            self.has_logprobs = True
            self.tokens.extend(tokens)
        self._held.append((payload, _words(piece)))
        self._held_words += self._held[-1][1]
        self._since_check += 1 if piece.strip() else 0
        # the incremental checks read the text as a JSON parser restores it (escapes cannot fuse or hide words)
        decoded = piece
        for decoder in self._decoders:  # JSON nested in JSON strings: as deep as reader_texts reads it
            decoded = decoder.feed(decoded)
        alerted = False
        for name, stream in list(self._streams.items()):
            try:
                alerted = stream.push(decoded, tokens) or alerted
            except Exception as exc:  # e.g. the matcher's work budget: the stream cannot be checked as it grows
                del self._streams[name]  # not fed again; the output phase at the end reads the whole answer
                if self.fail(name, exc).action is not Action.ALLOW:
                    return []
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

    def fail(self, where: str, error: BaseException | str) -> Decision:
        """Something in the stream could not be checked (``where`` names it, ``error`` says why): the policy's
        ``on_error`` Decision (:meth:`Guard.failure`). Unless it allows, the stream is cut: the Decision is
        logged, held pieces are never released, and :meth:`finish` returns it."""
        decision = self.guard.failure("output", where, error, context=self.context, record=False)
        if decision.action is Action.ALLOW or self.cut is not None:
            return decision
        metadata = {**decision.metadata, "stream_cut": True, "stream_prefix_tokens": len(self.tokens)}
        self.cut = decision.model_copy(update={"metadata": metadata, "generated": self.text})
        self.guard.record(self.cut)
        self._held.clear()
        self._held_words = 0
        return self.cut

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
