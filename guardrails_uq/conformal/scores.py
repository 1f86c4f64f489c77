"""Score kinds of CONFLARE's conformal filter, as one *conformity* per retrieved chunk.

A score kind turns one retrieved list (the retriever's scores, and for the lexical kinds the query and the
chunks' texts) into a conformity ``c`` per chunk: higher = kept first. Everything else follows from it:

* the list's nonconformity is ``a = -max(c over the relevant chunks)`` (``+inf`` when none was retrieved);
* at threshold ``q`` a chunk is kept when ``c >= -q`` (``q = +inf`` keeps every chunk).

With ``v`` the retriever scores oriented so that higher = closer (distances are negated):

=================== =========================================== ==============================================
kind                conformity ``c``                            kept when
=================== =========================================== ==============================================
``similarity``      ``v`` (the paper)                           ``v >= -q``
``relative``        ``v - max(v)``                              within ``q`` of the list's top score
``rank``            ``-r``, ``r`` the 0-based rank by ``v``     the first ``floor(q) + 1`` chunks
``hybrid``          ``h = v + w * bm25 / max(bm25)``            ``h >= -q``
``hybrid-relative`` ``h - max(h)``                              within ``q`` of the list's top fused score
=================== =========================================== ==============================================

The hybrid score fuses the dense score with Okapi BM25 (the ``bm25s`` library, Lucene variant, k1 = 1.5,
b = 0.75, English stop words, text normalised by :mod:`guardrails_uq.textnorm`) of the query against the
chunks *of the same list*: the list is the corpus for the BM25 statistics (document frequencies, mean length),
so the score needs nothing but what reaches the check at request time (the query and the documents' texts).
Dividing by the list's best BM25 score puts the lexical part in [0, 1], where ``w`` (``HYBRID_WEIGHT``)
says how much similarity a perfect lexical match is worth; the dense score stays raw, so adding or removing
weak chunks at the bottom of the list barely moves the kept set. Because the statistics come from the list,
calibration must see lists of the depth production retrieves (``calibrate conformal --top-k``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from ..errors import InputError

ScoreKind = Literal["similarity", "relative", "rank", "hybrid", "hybrid-relative"]
Direction = Literal["similarity", "distance"]
SCORE_KINDS: tuple[ScoreKind, ...] = ("similarity", "relative", "rank", "hybrid", "hybrid-relative")
#: Kinds that read the query and the chunks' texts (BM25), not only the retriever's scores.
LEXICAL_KINDS: frozenset[str] = frozenset({"hybrid", "hybrid-relative"})
#: Kinds that always keep a list's top chunk, however poor it is: with them ``retrieval.kept == 0`` never
#: happens, so a policy that abstains for lack of evidence needs an absolute kind (similarity or hybrid).
KEEPS_TOP_KINDS: frozenset[str] = frozenset({"relative", "rank", "hybrid-relative"})
#: Similarity a perfect lexical match adds to a chunk's dense score (measured in ``bench/conformal.py``).
HYBRID_WEIGHT = 0.2
BM25_K1, BM25_B = 1.5, 0.75
#: Names the lexical scorer, recorded in artifacts beside the weight.
LEXICAL_SCHEME = f"bm25s-lucene-k1={BM25_K1}-b={BM25_B}-stopwords=en-nfkc-cf-ws-v1"


def conformal_rank(n: int, alpha: float) -> int:
    """k = ceil((n + 1)(1 - alpha)), the 1-based order statistic of the split-conformal quantile."""
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must be in (0, 1), got {alpha}", source="alpha")
    return math.ceil((n + 1) * (1.0 - alpha) - 1e-12)


def conformal_quantile(nonconformity: np.ndarray, alpha: float) -> float:
    """The k-th smallest of the scores, k = conformal_rank(n, alpha); +inf (keep all) when k > n."""
    n = len(nonconformity)
    k = conformal_rank(n, alpha)
    if k > n:
        return math.inf
    return float(np.partition(np.asarray(nonconformity, dtype=np.float64), k - 1)[k - 1])


def _tokenize(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    from ..textnorm import normalize

    return bm25s.tokenize(
        [normalize(t) for t in texts], stopwords="en", return_ids=False, show_progress=False, allow_empty=True
    )


#: Tokens of recently seen chunk texts: a knowledge base's chunks recur across requests, and tokenising is
#: most of the cost of the lexical kinds. Bounded (cleared when full); guarded by a lock (the check is shared).
_TOKEN_CACHE_SIZE = 100_000
_token_cache: dict[str, tuple[str, ...]] = {}
_token_lock = threading.Lock()


def _tokens(texts: Sequence[str]) -> list[list[str]]:
    """bm25s tokens of each text (normalised, lowercased, English stop words removed), through the cache."""
    with _token_lock:
        known = {t: _token_cache.get(t) for t in texts}
    missing = [t for t, tokens in known.items() if tokens is None]
    if missing:
        fresh = {t: tuple(tokens) for t, tokens in zip(missing, _tokenize(missing), strict=True)}
        with _token_lock:
            if len(_token_cache) + len(fresh) > _TOKEN_CACHE_SIZE:
                _token_cache.clear()
            _token_cache.update(fresh)
        known.update(fresh)
    return [list(known[t] or ()) for t in texts]


@lru_cache(maxsize=8)
def _bm25_index(texts: tuple[str, ...]) -> Any:
    """A BM25 index over ``texts`` (sorted, so that lists holding the same chunks share it)."""
    import bm25s

    index = bm25s.BM25(method="lucene", k1=BM25_K1, b=BM25_B)
    index.index(_tokens(texts), show_progress=False)
    return index


def bm25_scores(query: str, texts: Sequence[str]) -> np.ndarray:
    """Okapi BM25 (Lucene variant) of ``query`` against each of ``texts``, the texts being the whole corpus.

    Order-independent: a text's score depends on the multiset of texts, not on where it sits. 0 for every
    text when no query token (after stop words) occurs in any of them; 0 for an empty list."""
    if not texts:
        return np.zeros(0)
    key = tuple(sorted(texts))
    index = _bm25_index(key)
    query_tokens = [t for t in _tokenize([query])[0] if t and t in index.vocab_dict]
    if not query_tokens:
        return np.zeros(len(texts))
    by_sorted = np.asarray(index.get_scores(query_tokens), dtype=np.float64)
    position = {text: i for i, text in enumerate(key)}
    return by_sorted[[position[t] for t in texts]]


def oriented(scores: Sequence[float] | np.ndarray, direction: Direction) -> np.ndarray:
    """The retriever's scores with higher = closer (distances negated)."""
    values = np.asarray(scores, dtype=np.float64)
    return values if direction == "similarity" else -values


def hybrid_scores(values: np.ndarray, query: str, texts: Sequence[str], weight: float = HYBRID_WEIGHT) -> np.ndarray:
    """``values + weight * bm25 / max(bm25)`` over the list (the lexical part is 0 when no text matches)."""
    lexical = bm25_scores(query, texts)
    top = float(lexical.max()) if len(lexical) else 0.0
    return values + (weight * lexical / top if top > 0 else 0.0)


def conformity(
    scores: Sequence[float] | np.ndarray,
    kind: ScoreKind,
    direction: Direction = "similarity",
    *,
    query: str | None = None,
    texts: Sequence[str] | None = None,
    weight: float = HYBRID_WEIGHT,
) -> np.ndarray:
    """Conformity of each chunk of one retrieved list (see the module docstring). Lexical kinds need
    ``query`` and ``texts`` (aligned with ``scores``); InputError otherwise."""
    values = oriented(scores, direction)
    if len(values) == 0:
        return values
    if kind == "similarity":
        return values
    if kind == "relative":
        return values - values.max()
    if kind == "rank":
        ranks = np.empty(len(values))
        ranks[np.argsort(-values, kind="stable")] = np.arange(len(values))
        return -ranks
    if kind not in LEXICAL_KINDS:
        raise InputError(f"score kind must be one of {SCORE_KINDS}, got {kind!r}", source="score_kind")
    if query is None or texts is None or len(texts) != len(values):
        raise InputError(f"score kind {kind!r} needs the query and the text of every chunk", source="score_kind")
    fused = hybrid_scores(values, query, texts, weight)
    return fused if kind == "hybrid" else fused - fused.max()


def nonconformity_of(conformities: np.ndarray, relevant: Sequence[bool] | np.ndarray) -> float:
    """``-max(c)`` over the relevant chunks; +inf when no relevant chunk was retrieved."""
    flags = np.asarray(relevant, dtype=bool)
    return -float(conformities[flags].max()) if flags.any() else math.inf


def kept_by_conformity(conformities: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of the chunks kept at ``threshold`` (all of them when it is +inf)."""
    if math.isinf(threshold):
        return np.ones(len(conformities), dtype=bool)
    return conformities >= -threshold


def nonconformity(
    scores: Sequence[float],
    relevant: Sequence[bool],
    kind: ScoreKind,
    direction: Direction = "similarity",
    *,
    query: str | None = None,
    texts: Sequence[str] | None = None,
    weight: float = HYBRID_WEIGHT,
) -> float:
    """Nonconformity of one retrieved list (scores in retrieval order; relevant flags aligned)."""
    c = conformity(scores, kind, direction, query=query, texts=texts, weight=weight)
    return nonconformity_of(c, relevant)


def keep_mask(
    scores: Sequence[float],
    threshold: float,
    kind: ScoreKind,
    direction: Direction,
    *,
    query: str | None = None,
    texts: Sequence[str] | None = None,
    weight: float = HYBRID_WEIGHT,
) -> np.ndarray:
    """Which documents (in the given order) are on the kept side of ``threshold`` for this score kind."""
    c = conformity(scores, kind, direction, query=query, texts=texts, weight=weight)
    return kept_by_conformity(c, threshold)
