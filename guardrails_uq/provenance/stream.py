"""Streaming provenance: feed text chunks as a model streams them; learn at once when a copied span's
BCI crosses the threshold, so the stream can be cut there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..call import TokenLogprob
from ..checks import Signals
from .index import CorpusIndex
from .match import Span, SpanMatcher
from .score import span_score
from .tokenize import TOKEN_PATTERN, normalize_with_map

if TYPE_CHECKING:
    from .check import ProvenanceCheck


@dataclass(frozen=True)
class SpanAlert:
    """A copied span whose BCI reached the threshold: answer tokens [start, end) and its text so far.

    ``char_start`` is where the span begins in the streamed text (cut the stream there)."""

    start: int
    end: int
    bci: float
    text: str
    char_start: int


class ProvenanceStream:
    """Incremental provenance over a streamed answer.

    ``feed(chunk)`` returns a :class:`SpanAlert` the first time a span crosses ``threshold`` (then None
    for that span). A token is matched once it is complete: the last token of the text so far may still
    grow, so it waits for the next chunk or :meth:`finish`.

    Text is normalised as :func:`find_spans` does it, incrementally: each feed normalises the text from
    the first character after the last matched token (a cluster boundary, so the result equals normalising
    the whole text), and a token is matched only when a later cluster follows it (a chunk may still add a
    combining mark, or the rest of an expansion such as ``½`` -> ``1⁄2``). Offsets point into the original text.
    """

    def __init__(self, index: CorpusIndex, *, threshold: float = 20.0, min_span: int = 8, max_sources: int = 5):
        self.index = index
        self.threshold = threshold
        self._parts: list[str] = []  # the text so far, joined only when needed (appending is O(chunk))
        self._length = 0
        self._tail = ""  # the text from _resume on
        self._tokens: list[str] = []
        self._resume = 0  # original offset where normalisation restarts (a cluster boundary)
        self._offsets: list[tuple[int, int]] = []
        self._alerts: list[SpanAlert] = []
        self._matcher = SpanMatcher(
            index, min_span=min_span, max_sources=max_sources, alert_bci=threshold, on_span=self._alert
        )

    @property
    def _text(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @property
    def tokens(self) -> list[str]:
        """The (lowercased) tokens matched so far, as the corpus index reads them."""
        return self._tokens

    @property
    def matcher(self) -> SpanMatcher:
        return self._matcher

    def _alert(self, start: int, end: int, value: float) -> None:
        a, b = self._offsets[start][0], self._offsets[end - 1][1]
        self._alerts.append(SpanAlert(start, end, value, self._text[a:b], a))

    def _complete_tokens(self, final: bool) -> list[str]:
        """Tokens of the text after ``_resume`` that no later chunk can change; advances ``_resume``."""
        base = self._resume
        tail = normalize_with_map(self._tail)
        new_tokens: list[str] = []
        consumed = 0  # normalised characters of the tail that are settled
        for match in TOKEN_PATTERN.finditer(tail.text):
            end = match.end()
            if not final and (end == len(tail.text) or not tail.is_boundary(end)):
                break  # may continue in the next chunk
            a, b = tail.span(match.start(), end)
            self._offsets.append((base + a, base + b))
            new_tokens.append(match.group().lower())
            consumed = end
        rest = tail.text[consumed:]
        if final or not rest.strip():  # nothing but (at most) a space left: nothing to re-read
            self._resume = self._length
        else:
            self._resume = base + tail.starts[consumed + len(rest) - len(rest.lstrip(" "))]
        self._tail = self._tail[self._resume - base :]
        self._tokens.extend(new_tokens)
        return new_tokens

    def _push_complete(self, final: bool) -> SpanAlert | None:
        before = len(self._alerts)
        new_tokens = self._complete_tokens(final)
        if new_tokens:
            self._matcher.push(self.index.ids(new_tokens))
        return self._alerts[before] if len(self._alerts) > before else None

    def feed(self, chunk: str) -> SpanAlert | None:
        """Add streamed text; the first new alert, if a span crossed the threshold."""
        self._parts.append(chunk)
        self._length += len(chunk)
        self._tail += chunk
        return self._push_complete(final=False)

    def finish(self) -> list[Span]:
        """End of stream: match the last token and return every maximal span (as :func:`find_spans`)."""
        self._push_complete(final=True)
        return self._matcher.finish(self._text, self._offsets)

    @property
    def alerts(self) -> list[SpanAlert]:
        """Every alert so far."""
        return list(self._alerts)


class ProvenanceCheckStream:
    """The provenance check's signals on a streamed answer's prefix, from the incremental matcher: each token
    is matched once as it arrives, closed spans are scored once, and only the open span is scored again at a
    decision, so deciding on the prefix never re-reads it. ``push`` returns True when a span's BCI reached
    ``alert_bci`` (decide now). Like :class:`ProvenanceStream`, the last token waits for the next chunk."""

    def __init__(self, check: ProvenanceCheck, *, alert_bci: float) -> None:
        self.check = check
        self._stream = ProvenanceStream(
            check.index, threshold=alert_bci, min_span=check.min_span, max_sources=check.max_sources
        )
        self._closed = 0  # closed spans folded into the running maxima below
        self._closed_max = (0.0, 0, 0.0)  # (bci, length, informative score) over closed spans

    def push(self, piece: str, tokens: Sequence[TokenLogprob] | None = None) -> bool:
        return self._stream.feed(piece) is not None

    def _score(self, span: Span) -> float:
        ids = np.asarray(self._stream.matcher.ids[span.start : span.end], dtype=np.int64)
        return span_score(self.check.index, self._stream.tokens[span.start : span.end], ids, self.check.settings)

    def signals(self) -> Signals:
        matcher = self._stream.matcher
        spans = matcher.spans_so_far(first=self._closed)
        closed = matcher.closed_count - self._closed
        bci, longest, score = self._closed_max
        for span in spans[:closed]:  # newly closed: folded in once
            bci, longest, score = max(bci, span.bci), max(longest, span.length), max(score, self._score(span))
        self._closed, self._closed_max = matcher.closed_count, (bci, longest, score)
        for span in spans[closed:]:  # the open span, as if the answer ended here
            bci, longest, score = max(bci, span.bci), max(longest, span.length), max(score, self._score(span))
        values = self.check.values(bci_max=bci, spans=len(spans) - closed + self._closed, longest=longest, score=score)
        return Signals(values=values, evidence={"note": "a stream's prefix: spans are in the final decision"})
