"""The informative span score: the BCI of the tokens that identify a copied passage, not of its boilerplate.

TraceShield's BCI sums the surprisal of every token of a copied span, so a phrase benign answers share with
the corpus ("here are step-by-step instructions for how to") scores like a memorised passage. The
informative score keeps only what benign text does not explain:

* a token counts only if it contains a letter (digits never count, so a span of numbers scores 0);
* and only if it lies inside at least one n-gram of ``gram`` consecutive tokens that is not one of the
  ``templates``: n-grams that also occur in benign reference text (learned at calibration,
  :func:`template_grams`);
* except that in a span of at least ``long_span`` tokens every token with a letter counts, whatever the
  templates: no benign file can make a long verbatim copy look like boilerplate.

How many corpus documents hold a span is not a discount: a passage copied into many documents is a widely
shared unsafe text, the first one to catch (issue 22; an earlier score treated n-grams in more than three
documents as formulaic, and let 32 demo corpus documents long enough to be a span through when copied
verbatim).

``score(span) = sum over informative tokens t of -log P(t)`` (P: the corpus unigram distribution, as in
:mod:`.bci`), so ``0 <= score(span) <= BCI(span)``; ``score(text)`` is the largest score over the text's
maximal copied spans (:func:`.match.find_spans`), 0 when it has none. A template-only short span scores 0;
a verbatim copy of a passage keeps (almost) its whole BCI.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bci import token_surprisal
from .index import CorpusIndex
from .match import Span, find_spans, window_intervals
from .tokenize import normalize, tokens_of

DEFAULT_GRAM = 4
#: Spans of at least this many tokens count in full (2 x the default min_span): benign answers share at most
#: 11-token phrases with the demo corpus (bench texts), and a copy this long is evidence whatever a benign file holds.
DEFAULT_LONG_SPAN = 16
#: Occurrences per shard inspected to count an n-gram's documents; more than this: saturated (see
#: :func:`document_frequency`).
SCAN_LIMIT = 10_000

SCORE_DEFINITION = (
    "max over maximal copied spans (>= min_span tokens) of the summed unigram surprisal -log P(t) of the "
    "span's informative tokens: tokens containing a letter that lie in at least one n-gram of `gram` tokens "
    "not among `templates` (n-grams of benign text); in spans of at least `long_span` tokens every token "
    "containing a letter; 0 when there is no span"
)


@dataclass(frozen=True)
class ScoreSettings:
    """How the informative score discounts boilerplate (see the module docstring).

    ``gram``: n-gram length of the templates (at most the policy's ``min_span``); ``long_span``: spans this
    long count in full; ``templates``: n-grams (tokens joined by one space) that also occur in benign text."""

    gram: int = DEFAULT_GRAM
    long_span: int = DEFAULT_LONG_SPAN
    templates: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.gram < 1 or self.long_span < 1:
            raise ValueError(f"gram and long_span must be >= 1, got gram={self.gram}, long_span={self.long_span}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (templates sorted, so equal settings serialise equally)."""
        return {"gram": self.gram, "long_span": self.long_span, "templates": sorted(self.templates)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreSettings:
        """Inverse of :meth:`to_dict`; ValueError or TypeError when a field is missing or malformed."""
        gram, long_span, templates = data["gram"], data["long_span"], data["templates"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (gram, long_span)):
            raise TypeError("gram and long_span must be integers")
        if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
            raise TypeError("templates must be a list of strings")
        return cls(gram=gram, long_span=long_span, templates=frozenset(templates))


@dataclass(frozen=True)
class TextScore:
    """A text's informative score, its copied spans and each span's score (aligned with ``spans``)."""

    score: float
    spans: list[Span]
    span_scores: list[float]

    @property
    def bci_max(self) -> float:
        """TraceShield's raw score: the largest span BCI (0 without spans)."""
        return max((s.bci for s in self.spans), default=0.0)


def document_frequency(index: CorpusIndex, grams: np.ndarray) -> np.ndarray:
    """Distinct corpus documents containing each row of ``grams`` (shape (w, m), token ids); rows with an
    unseen token have 0; a row occurring more than ``SCAN_LIMIT`` times in a shard gets ``np.iinfo(int64).max``.
    A corpus statistic (which benign n-grams the corpus holds); not a discount of the score."""
    frequency = np.zeros(len(grams), dtype=np.int64)
    valid = np.nonzero((grams > 0).all(axis=1))[0]
    if len(valid) == 0:
        return frequency
    rows = np.ascontiguousarray(grams[valid], dtype=np.int32)
    for shard in index.shards:
        lo, hi = window_intervals(shard, rows)
        for i in np.nonzero(hi > lo)[0]:
            if frequency[valid[i]] == np.iinfo(np.int64).max:
                continue
            if hi[i] - lo[i] > SCAN_LIMIT:
                frequency[valid[i]] = np.iinfo(np.int64).max
                continue
            positions = np.asarray(shard.sa[lo[i] : hi[i]], dtype=np.int64)
            docs = np.searchsorted(shard.doc_starts, positions, side="right") - 1
            frequency[valid[i]] += len(np.unique(docs))  # shards hold disjoint documents
    return frequency


def _grams(tokens: Sequence[str], ids: np.ndarray, gram: int) -> tuple[list[str], np.ndarray]:
    """The n-grams of a token sequence as text keys and as an id matrix (empty when it is too short)."""
    if len(tokens) < gram:
        return [], np.zeros((0, gram), dtype=np.int32)
    keys = [" ".join(tokens[i : i + gram]) for i in range(len(tokens) - gram + 1)]
    return keys, np.lib.stride_tricks.sliding_window_view(np.asarray(ids, dtype=np.int32), gram)


def informative_mask(tokens: Sequence[str], settings: ScoreSettings) -> np.ndarray:
    """Which tokens of one copied span (its token strings) count towards its score."""
    letters = np.fromiter((any(c.isalpha() for c in t) for t in tokens), dtype=bool, count=len(tokens))
    if len(tokens) >= settings.long_span or not settings.templates:
        return letters
    gram = settings.gram
    if len(tokens) < gram:
        return np.zeros(len(tokens), dtype=bool)
    starts = [i for i in range(len(tokens) - gram + 1) if " ".join(tokens[i : i + gram]) not in settings.templates]
    covered = np.zeros(len(tokens) + 1, dtype=np.int64)  # difference array of n-gram coverage
    np.add.at(covered, starts, 1)
    np.add.at(covered, np.asarray(starts, dtype=np.int64) + gram, -1)
    return (np.cumsum(covered[:-1]) > 0) & letters


def span_score(index: CorpusIndex, tokens: Sequence[str], ids: np.ndarray, settings: ScoreSettings) -> float:
    """Informative score of one copied span given its token strings and ids."""
    surprisal = token_surprisal(ids, index.counts, index.total)
    return float(surprisal[informative_mask(tokens, settings)].sum())


def score_text(
    index: CorpusIndex, text: str, *, min_span: int = 8, settings: ScoreSettings | None = None, max_sources: int = 5
) -> TextScore:
    """The informative score of ``text`` with its maximal copied spans (see the module docstring)."""
    settings = settings or ScoreSettings()
    spans = find_spans(index, text, min_span=min_span, max_sources=max_sources)
    if not spans:
        return TextScore(0.0, [], [])
    tokens = tokens_of(normalize(text))
    ids = index.ids(tokens)
    scores = [span_score(index, tokens[s.start : s.end], ids[s.start : s.end], settings) for s in spans]
    return TextScore(max(scores), spans, scores)


def template_grams(index: CorpusIndex, texts: Iterable[str], *, gram: int) -> frozenset[str]:
    """The n-grams of benign ``texts`` that the corpus also holds: phrases benign text shares with the corpus,
    so not evidence of copying (in spans shorter than ``long_span``)."""
    found: set[str] = set()
    for text in texts:
        tokens = tokens_of(normalize(text))
        keys, grams = _grams(tokens, index.ids(tokens), gram)
        if not keys:
            continue
        frequency = document_frequency(index, grams)
        found.update(k for k, f in zip(keys, frequency.tolist(), strict=True) if f > 0)
    return frozenset(found)


def covered_documents(
    index: CorpusIndex, settings: ScoreSettings, *, threshold: float, min_span: int
) -> list[tuple[str, list[str]]]:
    """(id, tokens) of the corpus documents that ``settings.templates`` would hide: their verbatim copy (a
    span of the whole document) scores above ``threshold`` without templates and at most ``threshold`` with
    them. Only documents of ``min_span`` to ``long_span - 1`` tokens can be hidden (shorter ones are never a
    span; longer ones count in full), and only those holding a template n-gram that occurs at most
    ``SCAN_LIMIT`` times in a shard are examined (a document made only of n-grams that frequent is boilerplate)."""
    if not settings.templates:
        return []
    keys = sorted(settings.templates)
    rows = np.stack([index.ids(key.split(" ")) for key in keys]).astype(np.int32)
    rows = np.ascontiguousarray(rows[(rows > 0).all(axis=1)])
    candidates: list[tuple[int, int, int]] = []  # (shard number, document number, tokens)
    for number, shard in enumerate(index.shards):
        lo, hi = window_intervals(shard, rows)
        docs: set[int] = set()
        for i in np.nonzero((hi > lo) & (hi - lo <= SCAN_LIMIT))[0]:
            positions = np.asarray(shard.sa[lo[i] : hi[i]], dtype=np.int64)
            docs.update((np.searchsorted(shard.doc_starts, positions, side="right") - 1).tolist())
        ends = np.append(np.asarray(shard.doc_starts[1:], dtype=np.int64), len(shard.tokens))
        lengths = ends - np.asarray(shard.doc_starts, dtype=np.int64) - 1  # each document ends with a 0
        candidates += [
            (number, d, int(lengths[d])) for d in sorted(docs) if min_span <= lengths[d] < settings.long_span
        ]
    if not candidates:
        return []
    documents = []
    for number, d, length in candidates:
        shard = index.shards[number]
        start = int(shard.doc_starts[d])
        documents.append((shard.doc_ids[d], np.asarray(shard.tokens[start : start + length], dtype=np.int64)))
    wanted = {int(i) for _, ids in documents for i in ids.tolist()}
    words = {i: w for w, i in index.vocab.items() if i in wanted}
    covered = []
    for doc_id, ids in documents:
        tokens = [words[int(i)] for i in ids.tolist()]
        surprisal = token_surprisal(ids, index.counts, index.total)
        full = float(surprisal[informative_mask(tokens, ScoreSettings(settings.gram, settings.long_span))].sum())
        if full > threshold >= float(surprisal[informative_mask(tokens, settings)].sum()):
            covered.append((doc_id, tokens))
    return covered
