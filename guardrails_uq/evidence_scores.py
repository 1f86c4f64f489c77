"""Scores for evidence that no retriever scored (agents' tool results, documents a proxy client sends).

One implementation serves the LangChain middleware, the LlamaIndex agent and the proxy: a tool result is scored
like a retriever's chunk, by the cosine similarity of its embedding to the request's (unit vectors, the
``faiss-ip`` score the default retrieval calibration is made with), and a result the retrieval phase drops is
replaced by :data:`WITHHELD` in what the model reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .guard import Guard

#: What the model reads in place of a tool result the retrieval phase dropped.
WITHHELD = "[withheld by guardrails: this result did not pass the retrieval check for the request]"


def cosine_scores(embedder: Any, query: str, texts: Sequence[str]) -> list[float]:
    """Cosine similarity of each text to ``query`` under ``embedder`` (an :class:`~.embeddings.Embedder`
    returning unit vectors); a blank text scores -1.0 (the lowest), and nothing is embedded for it."""
    filled = [i for i, text in enumerate(texts) if text.strip()]
    scores = [-1.0] * len(texts)
    if filled:
        vectors = np.asarray(embedder.embed([query, *(texts[i] for i in filled)]))
        for i, vector in zip(filled, vectors[1:], strict=True):
            scores[i] = float(vector @ vectors[0])
    return scores


def scores_read(guard: Guard) -> bool:
    """Whether the Guard's retrieval phase reads evidence scores (a conformal ``retrieval`` check); without one,
    callers may pass 0.0 and skip the embedding."""
    return any(check.name == "retrieval" for check in guard.checks["retrieval"])
