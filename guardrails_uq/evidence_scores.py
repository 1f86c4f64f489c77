"""Scores for evidence that no retriever scored (agents' tool results, documents a proxy client sends).

One implementation serves the LangChain middleware, the LlamaIndex agent and the proxy: a tool result is scored
like a retriever's chunk, by the cosine similarity of its embedding to the request's (unit vectors, the
``faiss-ip`` score the default retrieval calibration is made with), and a result the retrieval phase drops is
replaced by :data:`WITHHELD` in what the model reads, in this request and (:class:`RefusedResults`) in every
later one: an agent's memory keeps the raw result and hands it to the next run.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .guard import Guard

#: What the model reads in place of a tool result the retrieval phase dropped.
WITHHELD = "[withheld by guardrails: this result did not pass the retrieval check for the request]"


class RefusedResults:
    """Tool results an agent integration's retrieval phase dropped or ended a run on, remembered by a digest of
    their text (the most recent ``limit``; thread-safe). An agent's memory (a LlamaIndex memory, a LangChain
    checkpointer) keeps the raw result and gives it to the model in the next run, a new request whose retrieval
    phase judges only its own turn's results: such a result is withheld there too."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._digests: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _digest(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def add(self, texts: Iterable[str]) -> None:
        """Remember ``texts`` (the oldest are forgotten past ``limit``)."""
        with self._lock:
            for text in texts:
                key = self._digest(text)
                self._digests[key] = None
                self._digests.move_to_end(key)
            while len(self._digests) > self.limit:
                self._digests.popitem(last=False)

    def __contains__(self, text: object) -> bool:
        if not isinstance(text, str):
            return False
        with self._lock:
            return self._digest(text) in self._digests


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
