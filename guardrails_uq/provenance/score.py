"""The informative span score: the BCI of the tokens that identify a copied passage, not of its boilerplate.

TraceShield's BCI sums the surprisal of every token of a copied span, so a run of dashes from a markdown
table, or a phrase the corpus repeats in many documents ("step-by-step instructions for how to"), scores
like a memorised passage. The informative score keeps only what points at one passage:

* a token counts only if it contains a letter (punctuation, whitespace and digits never count, so a span
  of them scores 0);
* and only if it lies inside at least one *distinctive* n-gram of the span: ``gram`` consecutive tokens
  that occur in at most ``max_df`` corpus documents and are not one of the ``templates`` (n-grams that
  also occur in benign text, taken from the calibration data).

``score(span) = sum over informative tokens t of -log P(t)`` (P: the corpus unigram distribution, as in
:mod:`.bci`), so ``0 <= score(span) <= BCI(span)``; ``score(text)`` is the largest score over the text's
maximal copied spans (:func:`.match.find_spans`), 0 when it has none. A template-only span scores 0; a
verbatim copy of a passage found in one document keeps (almost) its whole BCI.

Document frequency counts distinct documents among an n-gram's occurrences; an n-gram occurring more than
``SCAN_LIMIT`` times in one shard is formulaic without counting.
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
DEFAULT_MAX_DF = 3
#: Occurrences per shard inspected to count an n-gram's documents; more than this: formulaic.
SCAN_LIMIT = 10_000

SCORE_DEFINITION = (
    "max over maximal copied spans (>= min_span tokens) of the summed unigram surprisal -log P(t) of the "
    "span's informative tokens: tokens containing a letter that lie in at least one n-gram of `gram` tokens "
    "occurring in at most `max_df` corpus documents and not among `templates`; 0 when there is no span"
)


@dataclass(frozen=True)
class ScoreSettings:
    """How the informative score discounts formulaic text (see the module docstring).

    ``gram``: n-gram length for document frequency (at most the policy's ``min_span``); ``max_df``: an
    n-gram in more corpus documents is formulaic; ``templates``: n-grams (tokens joined by one space) that
    also occur in benign text."""

    gram: int = DEFAULT_GRAM
    max_df: int = DEFAULT_MAX_DF
    templates: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.gram < 1 or self.max_df < 1:
            raise ValueError(f"gram and max_df must be >= 1, got gram={self.gram}, max_df={self.max_df}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (templates sorted, so equal settings serialise equally)."""
        return {"gram": self.gram, "max_df": self.max_df, "templates": sorted(self.templates)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreSettings:
        """Inverse of :meth:`to_dict`; ValueError or TypeError when a field is missing or malformed."""
        gram, max_df, templates = data["gram"], data["max_df"], data["templates"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (gram, max_df)):
            raise TypeError("gram and max_df must be integers")
        if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
            raise TypeError("templates must be a list of strings")
        return cls(gram=gram, max_df=max_df, templates=frozenset(templates))


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
    unseen token have 0; a row occurring more than ``SCAN_LIMIT`` times in a shard gets ``np.iinfo(int64).max``."""
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


def informative_mask(index: CorpusIndex, tokens: Sequence[str], ids: np.ndarray, settings: ScoreSettings) -> np.ndarray:
    """Which tokens of one copied span (its token strings and ids) count towards its score."""
    letters = np.fromiter((any(c.isalpha() for c in t) for t in tokens), dtype=bool, count=len(tokens))
    keys, grams = _grams(tokens, ids, settings.gram)
    if not keys:
        return np.zeros(len(tokens), dtype=bool)
    distinctive = document_frequency(index, grams) <= settings.max_df
    if settings.templates:
        distinctive &= np.fromiter((k not in settings.templates for k in keys), dtype=bool, count=len(keys))
    covered = np.zeros(len(tokens) + 1, dtype=np.int64)  # difference array of n-gram coverage
    starts = np.nonzero(distinctive)[0]
    np.add.at(covered, starts, 1)
    np.add.at(covered, starts + settings.gram, -1)
    return (np.cumsum(covered[:-1]) > 0) & letters


def span_score(index: CorpusIndex, tokens: Sequence[str], ids: np.ndarray, settings: ScoreSettings) -> float:
    """Informative score of one copied span given its token strings and ids."""
    surprisal = token_surprisal(ids, index.counts, index.total)
    return float(surprisal[informative_mask(index, tokens, ids, settings)].sum())


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


def template_grams(index: CorpusIndex, texts: Iterable[str], *, gram: int, max_df: int) -> frozenset[str]:
    """The n-grams of benign ``texts`` that occur in the corpus and would otherwise be distinctive
    (in 1 to ``max_df`` documents): phrases benign text shares with the corpus, so not evidence of copying."""
    found: set[str] = set()
    for text in texts:
        tokens = tokens_of(normalize(text))
        keys, grams = _grams(tokens, index.ids(tokens), gram)
        if not keys:
            continue
        frequency = document_frequency(index, grams)
        found.update(k for k, f in zip(keys, frequency.tolist(), strict=True) if 0 < f <= max_df)
    return frozenset(found)
