"""Streaming provenance: feed text chunks as a model streams them; learn at once when a copied span's
BCI crosses the threshold, so the stream can be cut there."""

from __future__ import annotations

from dataclasses import dataclass

from .index import CorpusIndex
from .match import Span, SpanMatcher
from .tokenize import TOKEN_PATTERN


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
    """

    def __init__(self, index: CorpusIndex, *, threshold: float = 20.0, min_span: int = 8, max_sources: int = 5):
        self.index = index
        self.threshold = threshold
        self._text = ""
        self._offsets: list[tuple[int, int]] = []
        self._alerts: list[SpanAlert] = []
        self._matcher = SpanMatcher(
            index, min_span=min_span, max_sources=max_sources, alert_bci=threshold, on_span=self._alert
        )

    def _alert(self, start: int, end: int, value: float) -> None:
        a, b = self._offsets[start][0], self._offsets[end - 1][1]
        self._alerts.append(SpanAlert(start, end, value, self._text[a:b], a))

    def _push_complete(self, final: bool) -> SpanAlert | None:
        before = len(self._alerts)
        done = len(self._offsets)
        new_tokens: list[str] = []
        for match in TOKEN_PATTERN.finditer(self._text, self._offsets[-1][1] if self._offsets else 0):
            if not final and match.end() == len(self._text):
                break  # may continue in the next chunk
            self._offsets.append(match.span())
            new_tokens.append(match.group().lower())
        if len(self._offsets) > done:
            self._matcher.push(self.index.ids(new_tokens))
        return self._alerts[before] if len(self._alerts) > before else None

    def feed(self, chunk: str) -> SpanAlert | None:
        """Add streamed text; the first new alert, if a span crossed the threshold."""
        self._text += chunk
        return self._push_complete(final=False)

    def finish(self) -> list[Span]:
        """End of stream: match the last token and return every maximal span (as :func:`find_spans`)."""
        self._push_complete(final=True)
        return self._matcher.finish(lambda a, b: self._text[self._offsets[a][0] : self._offsets[b - 1][1]])

    @property
    def alerts(self) -> list[SpanAlert]:
        """Every alert so far."""
        return list(self._alerts)
