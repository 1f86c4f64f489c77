"""Finding the answer spans that occur verbatim in the indexed corpus.

A span is reported when it is *maximal*: it occurs in the corpus, has at least ``min_span`` tokens, and
cannot be extended left or right without ceasing to occur. The matcher walks the answer once, left to
right, keeping the suffix-array interval (per shard) of the span currently being matched:

* a span starts when the window of the last ``min_span`` tokens occurs (one binary search per shard; the
  end of its interval is found by looking at the next suffix first, as most windows occur once);
* it grows while its interval narrowed by the next token stays non-empty (a ``searchsorted`` on the
  interval's next column, or a binary search when the interval is large); once the span has at most
  64 occurrences, the corpus text after each is compared with every answer token known in one gather,
  so a long copied span costs a few array operations, not a few per token;
* when it dies, the next span is the earliest start whose text through the new token still occurs
  (a binary search over starts: "occurs" is monotone in the start).

Work is O(answer length x log corpus size) plus the length of the spans found; the corpus is never
scanned. :class:`SpanMatcher` serves both callers: :func:`find_spans` computes every window's interval in
one vectorised search up front, the streaming use computes each window as its last token arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import WorkBudgetError
from .bci import token_surprisal
from .index import CorpusIndex, Shard
from .tokenize import normalize_with_map, token_spans, tokens_of

#: Intervals up to this size are narrowed with one gather + searchsorted; larger ones by binary search.
_GATHER_MAX = 4096

Intervals = dict[int, tuple[int, int]]  # shard number -> [lo, hi) in its suffix array


def window_intervals(shard: Shard, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) suffix-array intervals of each row of ``windows`` (shape (w, k)), vectorised over rows.

    The upper bound is searched only for rows whose lower bound is an exact match (rare for novel text)."""
    lower = _bound(shard, windows, upper=False)
    upper = lower.copy()
    inside = lower < len(shard.sa)
    if inside.any():
        rows = np.nonzero(inside)[0]
        positions = np.asarray(shard.sa[lower[rows]], dtype=np.int64)
        columns = np.arange(windows.shape[1], dtype=np.int64)
        prefix = shard.tokens[np.minimum(positions[:, None] + columns, len(shard.tokens) - 1)]
        hits = rows[(prefix == windows[rows]).all(axis=1)]
        upper[hits] = lower[hits] + 1
        # most windows occur once: the next suffix differs, so the bound is lower + 1 without a search
        probe = hits[lower[hits] + 1 < len(shard.sa)]
        if len(probe):
            positions = np.asarray(shard.sa[lower[probe] + 1], dtype=np.int64)
            prefix = shard.tokens[np.minimum(positions[:, None] + columns, len(shard.tokens) - 1)]
            more = probe[(prefix == windows[probe]).all(axis=1)]
            if len(more):
                upper[more] = _bound(shard, windows[more], upper=True)
    return lower, upper


def _bound(shard: Shard, windows: np.ndarray, *, upper: bool) -> np.ndarray:
    tokens, sa = shard.tokens, shard.sa
    count, width = windows.shape
    last = len(tokens) - 1
    lo = np.zeros(count, dtype=np.int64)
    hi = np.full(count, len(sa), dtype=np.int64)
    columns = np.arange(width, dtype=np.int64)
    while True:
        active = np.nonzero(lo < hi)[0]
        if len(active) == 0:
            return lo
        mid = (lo[active] + hi[active]) // 2
        positions = np.asarray(sa[mid], dtype=np.int64)
        prefix = tokens[np.minimum(positions[:, None] + columns, last)]
        wanted = windows[active]
        differs = prefix != wanted
        any_diff = differs.any(axis=1)
        first = differs.argmax(axis=1)
        rows = np.arange(len(active))
        less = any_diff & (prefix[rows, first] < wanted[rows, first])
        right = less | ~any_diff if upper else less
        lo[active[right]] = mid[right] + 1
        hi[active[~right]] = mid[~right]


def _narrow(shard: Shard, lo: int, hi: int, offset: int, token: int) -> tuple[int, int]:
    """Sub-interval of [lo, hi) whose suffixes have ``token`` at ``offset`` (the interval shares ``offset``
    leading tokens, so that column is sorted)."""
    tokens, sa = shard.tokens, shard.sa
    last = len(tokens) - 1
    if hi - lo <= _GATHER_MAX:
        column = tokens[np.minimum(np.asarray(sa[lo:hi], dtype=np.int64) + offset, last)]
        return lo + int(np.searchsorted(column, token, "left")), lo + int(np.searchsorted(column, token, "right"))

    def at(k: int) -> int:
        return int(tokens[min(int(sa[k]) + offset, last)])

    a, b = lo, hi
    while a < b:
        m = (a + b) // 2
        if at(m) < token:
            a = m + 1
        else:
            b = m
    c, d = a, hi
    while c < d:
        m = (c + d) // 2
        if at(m) <= token:
            c = m + 1
        else:
            d = m
    return a, c


@dataclass(frozen=True)
class Source:
    """Where a span occurs: document id and token offset in that document."""

    doc: str
    offset: int


@dataclass(frozen=True)
class Span:
    """A maximal answer span found in the corpus: token positions [start, end) in the answer.

    ``char_start``/``char_end``: where the span is in the original answer text (before normalisation), so
    ``answer[char_start:char_end] == text`` is what the user saw, invisible characters inside included."""

    start: int
    end: int
    text: str
    bci: float
    count: int
    sources: tuple[Source, ...]
    char_start: int = 0
    char_end: int = 0

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def bci_density(self) -> float:
        """BCI per token."""
        return self.bci / self.length

    def to_evidence(self) -> dict[str, object]:
        return {
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "char_start": self.char_start,
            "char_end": self.char_end,
            "length": self.length,
            "bci": round(self.bci, 4),
            "bci_density": round(self.bci_density, 4),
            "count": self.count,
            "sources": [{"doc": s.doc, "offset": s.offset} for s in self.sources],
        }


#: Work budget of one answer: token-by-token narrowing steps allowed, a base plus a number per answer token.
#: Ordinary answers use a few per token; an answer repeating one token for thousands of tokens against a corpus
#: holding a long run of it needs (run length) per token (quadratic): past the budget, matching raises
#: WorkBudgetError, which fails closed whatever the policy's on_error says (an attack signal), instead of stalling.
_STEPS_BASE = 20_000
_STEPS_PER_TOKEN = 64

#: An open span whose occurrences number at most this many is extended by comparing the corpus text after
#: each occurrence with the answer directly (one gather for all the answer tokens known), not token by token.
_DIRECT_MAX = 64
_DIRECT_CHUNK = 512  # answer tokens compared per gather


@dataclass
class _Reach:
    """The occurrences of an open span in one shard and how far each keeps matching the answer.

    ``positions`` are the suffixes of the shard's interval starting at SA index ``lo``, in suffix-array
    order; ``reach[i]`` is how many answer tokens from the span start occurrence i matches (exact when below
    ``limit``, the answer tokens known then; ``limit`` means "at least"). The occurrences matching the
    first n tokens are those with reach >= n, a contiguous run of the interval (suffix-array order)."""

    lo: int
    positions: np.ndarray
    reach: np.ndarray
    limit: int

    def extend(self, shard: Shard, answer: np.ndarray, start: int) -> _Reach:
        """Compare the occurrences that matched every token known so far with the answer tokens after
        them (``answer[start:]`` is the span's text onwards), in chunks; returns self."""
        known = len(answer) - start
        last = len(shard.tokens)
        pending = np.flatnonzero(self.reach == self.limit)
        while len(pending):
            done = int(self.reach[pending[0]])  # every pending occurrence has matched exactly this many
            width = min(_DIRECT_CHUNK, known - done)
            if width <= 0:
                break
            at = self.positions[pending, None] + done + np.arange(width, dtype=np.int64)
            same = (shard.tokens[np.minimum(at, last - 1)] == answer[start + done : start + done + width]) & (at < last)
            matched = np.where(same.all(axis=1), width, same.argmin(axis=1))
            self.reach[pending] = done + matched
            pending = pending[matched == width]
        self.limit = known
        return self

    def interval(self, length: int) -> tuple[int, int] | None:
        alive = np.flatnonzero(self.reach >= length)
        return (self.lo + int(alive[0]), self.lo + int(alive[-1]) + 1) if len(alive) else None


@dataclass
class _Active:
    start: int
    intervals: Intervals  # of ids[start:start + length]; stale while ``reaches`` is in use
    length: int
    reported: bool = False
    reaches: dict[int, _Reach] | None = None
    furthest: int = 0  # max reach over ``reaches``


@dataclass
class SpanMatcher:
    """Incremental maximal-span matcher over one answer.

    ``push(ids)`` appends token ids; ``finish()`` closes the open span and returns every span found.
    ``on_span(start, end, bci)`` (optional) is called as soon as the open span's BCI reaches
    ``alert_bci`` (once per span): streaming integrations cut the stream there.
    """

    index: CorpusIndex
    min_span: int = 8
    max_sources: int = 5
    alert_bci: float | None = None
    on_span: Callable[[int, int, float], None] | None = None
    windows: list[Intervals | None] | None = None  # precomputed by find_spans; None: computed on arrival
    ids: list[int] = field(default_factory=list)
    _surprisal: list[float] = field(default_factory=lambda: [0.0])  # prefix sums
    _cache: dict[int, Intervals] = field(default_factory=dict)
    _active: _Active | None = None
    _found: list[tuple[int, int, Intervals]] = field(default_factory=list)
    _last_start: int = -1
    _known: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # self.ids as an array
    _buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # _known is its prefix
    _steps: int = 0  # token-by-token narrowing steps so far (bounded: see _STEPS_BASE)

    def push(self, ids: Iterable[int]) -> None:
        """Feed the next token ids of the answer."""
        batch = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        surprisal = token_surprisal(batch, self.index.counts, self.index.total)
        first = len(self.ids)
        self.ids.extend(batch.tolist())  # steps read only tokens up to their own, except _reach's look-ahead
        used = len(self.ids) - len(batch)
        if used + len(batch) > len(self._buffer):  # grows by doubling: amortised O(1) a token, not a full copy
            grown = np.empty(max(2 * len(self._buffer), used + len(batch), 64), dtype=np.int64)
            grown[:used] = self._buffer[:used]
            self._buffer = grown
        self._buffer[used : used + len(batch)] = batch
        self._known = self._buffer[: used + len(batch)]
        for p, value in enumerate(surprisal.tolist(), start=first):
            self._surprisal.append(self._surprisal[-1] + value)
            self._step(p)

    def bci(self, start: int, end: int) -> float:
        """BCI of answer tokens [start, end)."""
        return self._surprisal[end] - self._surprisal[start]

    def _window(self, start: int) -> Intervals:
        if start in self._cache:
            return self._cache[start]
        if self.windows is not None:
            found = self.windows[start] or {}
        else:
            row = np.asarray(self.ids[start : start + self.min_span], dtype=np.int32)[None, :]
            found = {}
            if (row > 0).all():
                for number, shard in enumerate(self.index.shards):
                    lo, hi = window_intervals(shard, row)
                    if hi[0] > lo[0]:
                        found[number] = (int(lo[0]), int(hi[0]))
        self._cache[start] = found
        return found

    def _extend(self, start: int, intervals: Intervals, length: int, target: int) -> Intervals:
        """Narrow ``intervals`` (matching ids[start:start+length]) to ids[start:start+target]; {} if none."""
        current = dict(intervals)
        self._steps += max(target - length, 0)
        if self._steps > _STEPS_BASE + _STEPS_PER_TOKEN * len(self.ids):
            raise WorkBudgetError(
                f"the answer is too repetitive to match within the provenance work budget ({self._steps:,} "
                f"narrowing steps for {len(self.ids):,} tokens): failing closed",
                source="provenance",
            )
        for offset in range(length, target):
            token = self.ids[start + offset]
            if token <= 0:
                return {}
            narrowed = {}
            for number, (lo, hi) in current.items():
                a, b = _narrow(self.index.shards[number], lo, hi, offset, token)
                if b > a:
                    narrowed[number] = (a, b)
            if not narrowed:
                return {}
            current = narrowed
        return current

    def _occurs_through(self, start: int, end: int) -> Intervals:
        """Intervals of ids[start:end] (end - start >= min_span), {} when it does not occur."""
        window = self._window(start)
        return self._extend(start, window, self.min_span, end - start) if window else {}

    def _grow(self, active: _Active, p: int) -> bool:
        """Extend the open span by token p; False when ids[start:p + 1] does not occur."""
        length = p + 1 - active.start
        if active.reaches is None and sum(hi - lo for lo, hi in active.intervals.values()) <= _DIRECT_MAX:
            active.reaches = {}
            for number, (lo, hi) in active.intervals.items():
                shard = self.index.shards[number]
                positions = np.asarray(shard.sa[lo:hi], dtype=np.int64)
                reach = _Reach(lo, positions, np.full(len(positions), active.length, dtype=np.int64), active.length)
                active.reaches[number] = reach.extend(shard, self._known, active.start)
            active.furthest = max(int(r.reach.max()) for r in active.reaches.values())
        if active.reaches is not None:
            if length > active.furthest and any(length > r.limit for r in active.reaches.values()):
                for number, reach in active.reaches.items():  # answer tokens arrived since: compare those too
                    reach.extend(self.index.shards[number], self._known, active.start)
                active.furthest = max(int(r.reach.max()) for r in active.reaches.values())
            if length > active.furthest:
                return False
            active.length = length
            return True
        grown = self._extend(active.start, active.intervals, active.length, length)
        if not grown:
            return False
        active.intervals, active.length = grown, length
        return True

    def _step(self, p: int) -> None:
        k = self.min_span
        active = self._active
        if active is not None:
            if self._grow(active, p):
                self._maybe_alert(active, p + 1)
                return
            self._close(p)
            floor = active.start + 1
        else:
            floor = self._last_start + 1
        newest = p - k + 1
        if newest < floor or newest < 0 or not self._window(newest):
            return
        lo, hi = floor, newest  # the smallest start in [floor, newest] whose text through p occurs
        while lo < hi:
            mid = (lo + hi) // 2
            if self._occurs_through(mid, p + 1):
                hi = mid
            else:
                lo = mid + 1
        intervals = self._occurs_through(lo, p + 1)
        self._active = _Active(start=lo, intervals=intervals, length=p + 1 - lo)
        self._last_start = lo
        self._maybe_alert(self._active, p + 1)

    def _maybe_alert(self, active: _Active, end: int) -> None:
        if active.reported or self.alert_bci is None or self.on_span is None:
            return
        value = self.bci(active.start, end)
        if value >= self.alert_bci:
            active.reported = True
            self.on_span(active.start, end, value)

    def _close(self, end: int) -> None:
        if self._active is not None:
            self._found.append(self._closing(self._active, end))
            self._active = None

    @staticmethod
    def _closing(active: _Active, end: int) -> tuple[int, int, Intervals]:
        """(start, end, intervals) of the open span were it closed at ``end``."""
        intervals = active.intervals
        if active.reaches is not None:
            narrowed = {n: r.interval(end - active.start) for n, r in active.reaches.items()}
            intervals = {n: span for n, span in narrowed.items() if span is not None}
        return active.start, end, intervals

    @property
    def closed_count(self) -> int:
        """How many spans are closed (they never change again)."""
        return len(self._found)

    def has_spans(self) -> bool:
        """True when a span was found so far (closed or still open)."""
        return bool(self._found) or self._active is not None

    def finish(self, text: str = "", offsets: Sequence[tuple[int, int]] = ()) -> list[Span]:
        """Close the open span; every maximal span found, in answer order.

        ``offsets[i]`` is token i's (start, end) in the original ``text`` (as from ``tokenize_with_offsets``):
        with both, each span carries its text and character offsets; without, text "" and offsets 0."""
        self._close(len(self.ids))
        return self.spans_so_far(text, offsets)

    def spans_so_far(self, text: str = "", offsets: Sequence[tuple[int, int]] = (), *, first: int = 0) -> list[Span]:
        """The spans found so far, the open one as if the answer ended here (nothing is closed: pushing
        may go on), from the ``first``-th closed span on (callers that keep earlier ones pass how many)."""
        found = self._found[first:]
        if self._active is not None:
            found = [*found, self._closing(self._active, len(self.ids))]
        spans = []
        for start, end, intervals in found:
            char_start, char_end = (offsets[start][0], offsets[end - 1][1]) if offsets else (0, 0)
            spans.append(
                Span(
                    start=start,
                    end=end,
                    text=text[char_start:char_end],
                    bci=self.bci(start, end),
                    count=sum(hi - lo for lo, hi in intervals.values()),
                    sources=tuple(self._sources(intervals)),
                    char_start=char_start,
                    char_end=char_end,
                )
            )
        return spans

    def _sources(self, intervals: Intervals) -> list[Source]:
        sources: list[Source] = []
        for number, (lo, hi) in sorted(intervals.items()):
            shard = self.index.shards[number]
            take = min(hi - lo, self.max_sources - len(sources))
            if take <= 0:
                break
            positions = np.sort(np.asarray(shard.sa[lo : lo + take], dtype=np.int64))
            docs = np.searchsorted(shard.doc_starts, positions, side="right") - 1
            for position, doc in zip(positions, docs, strict=True):
                sources.append(Source(doc=shard.doc_ids[doc], offset=int(position - shard.doc_starts[doc])))
        return sources


def find_spans(index: CorpusIndex, text: str, *, min_span: int = 8, max_sources: int = 5) -> list[Span]:
    """Every maximal span of ``text`` (>= ``min_span`` tokens) that occurs in the corpus once both are
    normalised (:mod:`guardrails_uq.textnorm`); spans carry offsets into the original ``text``."""
    normalized = normalize_with_map(text)
    ids = index.ids(tokens_of(normalized.text))
    matcher = SpanMatcher(index, min_span=min_span, max_sources=max_sources)
    matcher.windows = _all_windows(index, ids, min_span)
    matcher.push(ids)
    if not matcher.has_spans():  # the common case: no offsets needed
        return []
    return matcher.finish(text, token_spans(normalized))


def _all_windows(index: CorpusIndex, ids: np.ndarray, k: int) -> list[Intervals | None]:
    """Intervals of every length-k window of ``ids``, one vectorised search per shard."""
    count = len(ids) - k + 1
    if count <= 0:
        return []
    windows = np.lib.stride_tricks.sliding_window_view(ids, k)
    valid = np.nonzero((windows > 0).all(axis=1))[0]  # a window with an unseen token cannot occur
    result: list[Intervals | None] = [None] * count
    if len(valid) == 0:
        return result
    rows = np.ascontiguousarray(windows[valid])
    for number, shard in enumerate(index.shards):
        lo, hi = window_intervals(shard, rows)
        for i in np.nonzero(hi > lo)[0]:
            entry = result[valid[i]]
            if entry is None:
                entry = result[valid[i]] = {}
            entry[number] = (int(lo[i]), int(hi[i]))
    return result
