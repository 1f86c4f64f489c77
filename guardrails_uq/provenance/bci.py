"""The Belief Conflict Index (TraceAlign, Das et al. 2025).

For a span s of tokens, ``BCI(s) = -sum_{t in s} log P(t)``, with P the corpus unigram distribution
(count / total tokens) and P = 1e-9 for a token the corpus never saw. High BCI: a long span made of rare
tokens, i.e. specific text unlikely to be reproduced by chance. TraceShield refuses above 20.
"""

from __future__ import annotations

import numpy as np

UNSEEN_PROBABILITY = 1e-9


def token_surprisal(ids: np.ndarray, counts: np.ndarray, total: int) -> np.ndarray:
    """-log P(t) >= 0 for each token id (ids < 1 or beyond the vocabulary are unseen; P is capped at 1)."""
    ids = np.asarray(ids, dtype=np.int64)
    known = (ids > 0) & (ids < len(counts))
    probability = np.full(ids.shape, UNSEEN_PROBABILITY, dtype=np.float64)
    if total > 0:
        hits = counts[ids[known]].astype(np.float64) / float(total)
        probability[known] = np.where(hits > 0, np.minimum(hits, 1.0), UNSEEN_PROBABILITY)
    return -np.log(probability)  # >= 0: P <= 1 even if counts and total disagree


def bci(ids: np.ndarray, counts: np.ndarray, total: int) -> float:
    """BCI of a span given as token ids."""
    return float(token_surprisal(ids, counts, total).sum())
