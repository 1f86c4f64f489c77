"""Single-pass uncertainty scores from per-token log-probabilities. Higher = more uncertain, always.

Inputs are arrays: ``logprobs`` (n,) of the generated tokens, and ``top`` (n, k) of the alternatives'
log-probabilities at each position (padding: -inf). Each score is one small vectorised function.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np

from ..call import TokenLogprob

#: Quantile levels of the per-token NLL used by Chow-Quantile and the learned (Post-Hoc-Quantile) deferral.
QUANTILES: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def arrays(tokens: Sequence[TokenLogprob]) -> tuple[np.ndarray, np.ndarray]:
    """(logprobs (n,), top alternatives (n, k) padded with -inf) from parsed tokens."""
    logprobs = np.array([t.logprob for t in tokens], dtype=np.float64)
    rows = [[a.logprob for a in t.top] for t in tokens]
    width = max(map(len, rows), default=0)
    if all(len(row) == width for row in rows):  # the common case: a fixed top_logprobs
        return logprobs, np.array(rows, dtype=np.float64).reshape(len(rows), width)
    top = np.full((len(tokens), width), -np.inf)
    for i, row in enumerate(rows):
        top[i, : len(row)] = row
    return logprobs, top


def g_nll(logprobs: np.ndarray) -> float:
    """Chow-Sum (Gupta et al. 2024): negative log-likelihood of the whole answer, -sum_t log p(y_t)."""
    return float(-logprobs.sum())


def mean_nll(logprobs: np.ndarray) -> float:
    """Chow-Average (Gupta et al. 2024): length-normalised NLL, -(1/n) sum_t log p(y_t)."""
    return float(-logprobs.mean()) if len(logprobs) else 0.0


def max_nll(logprobs: np.ndarray) -> float:
    """Largest single-token NLL, max_t -log p(y_t) (the least confident token)."""
    return float(-logprobs.min()) if len(logprobs) else 0.0


def nll_quantiles(logprobs: np.ndarray, levels: Sequence[float] = QUANTILES) -> np.ndarray:
    """Chow-Quantile (Gupta et al. 2024): quantiles of the per-token NLL -log p(y_t) at ``levels``
    (linear interpolation, as numpy.quantile's default)."""
    return quantiles_of_sorted(np.sort(-logprobs), levels)


def quantiles_of_sorted(ordered: Sequence[float] | np.ndarray, levels: Sequence[float] = QUANTILES) -> np.ndarray:
    """:func:`nll_quantiles` from the NLLs already sorted ascending (reads two values a level: O(levels))."""
    n = len(ordered)
    if not n:
        return np.zeros(len(levels))
    out = np.empty(len(levels))
    for i, level in enumerate(levels):
        position = level * (n - 1)
        low = math.floor(position)
        high = min(low + 1, n - 1)
        out[i] = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    return out


def perplexity(logprobs: np.ndarray) -> float:
    """exp(mean NLL) (Jelinek et al. 1977)."""
    return float(np.exp(mean_nll(logprobs)))


def one_minus_geo_mean_prob(logprobs: np.ndarray) -> float:
    """1 - geometric mean token probability, 1 - exp((1/n) sum_t log p(y_t))."""
    return float(1.0 - np.exp(-mean_nll(logprobs)))


def one_minus_mean_prob(logprobs: np.ndarray) -> float:
    """1 - arithmetic mean token probability, 1 - (1/n) sum_t p(y_t)."""
    return float(1.0 - np.exp(logprobs).mean()) if len(logprobs) else 0.0


def mean_entropy(top: np.ndarray) -> float:
    """Mean over tokens of the entropy of the (renormalised) top-k alternatives,
    (1/n) sum_t -sum_j p_tj log p_tj (Malinin & Gales 2021, token-level predictive entropy)."""
    return float(token_entropies(top).mean()) if top.size else 0.0


def token_entropies(top: np.ndarray) -> np.ndarray:
    """The entropy of each row's renormalised alternatives (the terms :func:`mean_entropy` averages)."""
    if top.size == 0:
        return np.zeros(len(top))
    shifted = top - top.max(axis=1, keepdims=True)
    probs = np.exp(shifted)  # exp(-inf) = 0 for padding
    total = probs.sum(axis=1, keepdims=True)
    log_probs = shifted - np.log(total)
    p = probs / total
    terms = np.where(p > 0, p * np.where(np.isfinite(log_probs), log_probs, 0.0), 0.0)
    return -terms.sum(axis=1)


def neg_kurtosis(top: np.ndarray) -> float:
    """Negated mean excess kurtosis of the top-k alternatives' log-probabilities at each position.

    A peaked distribution (one clear winner among the alternatives) has high kurtosis; negating keeps
    "higher = more uncertain". Positions with fewer than 4 finite alternatives contribute 0.
    """
    return float(-token_kurtosis(top).mean()) if top.size else 0.0


def token_kurtosis(top: np.ndarray) -> np.ndarray:
    """The excess kurtosis of each row's alternatives (0 below 4 finite ones): the terms of :func:`neg_kurtosis`."""
    if top.size == 0:
        return np.zeros(len(top))
    finite = np.isfinite(top)
    if finite.all():  # fast path: a fixed number of alternatives
        if top.shape[1] < 4:
            return np.zeros(len(top))
        centred = top - top.mean(axis=1, keepdims=True)
        squared = centred * centred
        m2 = squared.mean(axis=1)
        m4 = (squared * squared).mean(axis=1)
        enough = m2 > 0
    else:
        counts = finite.sum(axis=1)
        mean = np.where(finite, top, 0.0).sum(axis=1) / np.maximum(counts, 1)
        centred = np.where(finite, top - mean[:, None], 0.0)
        squared = centred * centred
        m2 = squared.sum(axis=1) / np.maximum(counts, 1)
        m4 = (squared * squared).sum(axis=1) / np.maximum(counts, 1)
        enough = (counts >= 4) & (m2 > 0)
    kurtosis = np.zeros(len(top))
    kurtosis[enough] = m4[enough] / m2[enough] ** 2 - 3.0
    return kurtosis


def token_scores(tokens: Sequence[TokenLogprob]) -> dict[str, float]:
    """Every single-pass score, by signal leaf name. Empty answers score 0."""
    return scores_from_arrays(*arrays(tokens))


def scores_from_arrays(logprobs: np.ndarray, top: np.ndarray) -> dict[str, float]:
    """Every single-pass score from the arrays of :func:`arrays` (compute them once, share them)."""
    scores = {
        "g_nll": g_nll(logprobs),
        "mean_nll": mean_nll(logprobs),
        "max_nll": max_nll(logprobs),
        "perplexity": perplexity(logprobs),
        "one_minus_geo_prob": one_minus_geo_mean_prob(logprobs),
        "one_minus_mean_prob": one_minus_mean_prob(logprobs),
        "mean_entropy": mean_entropy(top),
        "neg_kurtosis": neg_kurtosis(top),
    }
    for level, value in zip(QUANTILES, nll_quantiles(logprobs), strict=True):
        scores[quantile_name(level)] = float(value)
    return scores


def quantile_name(level: float) -> str:
    """Signal leaf name of an NLL quantile, e.g. 0.9 -> nll_q90."""
    return f"nll_q{round(level * 100):02d}"


TOKEN_SCORE_NAMES: tuple[str, ...] = (
    "g_nll", "mean_nll", "max_nll", "perplexity", "one_minus_geo_prob", "one_minus_mean_prob", "mean_entropy",
    "neg_kurtosis", *(quantile_name(q) for q in QUANTILES),
)  # fmt: skip


class TokenScoreStream:
    """:func:`token_scores` of a growing answer (a stream), kept up to date as tokens arrive: each token costs
    O(log n) plus a sorted insert, and :meth:`scores` is O(1) in the answer's length. The same definitions as
    the batch functions (running sums of the same terms; quantiles from the sorted NLLs), equal to them up to
    floating-point summation order."""

    def __init__(self) -> None:
        self.n = 0
        self._sum_lp = 0.0
        self._sum_p = 0.0
        self._min_lp = math.inf
        self._sum_entropy = 0.0
        self._sum_kurtosis = 0.0
        self._sorted_nll: list[float] = []

    def push(self, tokens: Sequence[TokenLogprob]) -> None:
        if not tokens:
            return
        logprobs, top = arrays(tokens)
        self.n += len(logprobs)
        self._sum_lp += float(logprobs.sum())
        self._sum_p += float(np.exp(logprobs).sum())
        self._min_lp = min(self._min_lp, float(logprobs.min()))
        self._sum_entropy += float(token_entropies(top).sum())
        self._sum_kurtosis += float(token_kurtosis(top).sum())
        for value in (-logprobs).tolist():
            bisect.insort(self._sorted_nll, value)

    def quantiles(self) -> np.ndarray:
        return quantiles_of_sorted(self._sorted_nll)

    def scores(self) -> dict[str, float]:
        """Every single-pass score of the tokens so far, by signal leaf name (as :func:`token_scores`)."""
        n = self.n
        mean = -self._sum_lp / n if n else 0.0
        scores = {
            "g_nll": -self._sum_lp,
            "mean_nll": mean,
            "max_nll": -self._min_lp if n else 0.0,
            "perplexity": float(np.exp(mean)),
            "one_minus_geo_prob": float(1.0 - np.exp(-mean)),
            "one_minus_mean_prob": 1.0 - self._sum_p / n if n else 0.0,
            "mean_entropy": self._sum_entropy / n if n else 0.0,
            "neg_kurtosis": -self._sum_kurtosis / n if n else 0.0,
        }
        for level, value in zip(QUANTILES, self.quantiles(), strict=True):
            scores[quantile_name(level)] = float(value)
        return scores
