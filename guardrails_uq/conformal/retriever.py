"""A dense retriever over chunks: embeddings in an exact FAISS inner-product index."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import faiss
import numpy as np

from ..call import ScoredDocument
from ..embeddings import Embedder


class EmbeddingRetriever:
    """Cosine-similarity retrieval (normalised embeddings, ``IndexFlatIP``). Thread-safe for search."""

    def __init__(self, embedder: Embedder, chunks: Mapping[str, str]) -> None:
        self.embedder = embedder
        self.ids = list(chunks)
        self.texts = [chunks[i] for i in self.ids]
        vectors = embedder.embed(self.texts)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    @property
    def fingerprint(self) -> str:
        """Identifies the scores this retriever produces: embedder and similarity."""
        return f"{self.embedder.name}+faiss-ip"

    def search_many(self, queries: Sequence[str], k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, chunk positions) of the top ``k`` (default: all) chunks for each query, best first."""
        k = len(self.ids) if k is None else min(k, len(self.ids))
        return self.index.search(self.embedder.embed(list(queries)), k)

    def retrieve_many(self, queries: Sequence[str], k: int | None = None) -> list[list[ScoredDocument]]:
        """The top ``k`` (default: all) chunks of each query as scored documents with their texts, best first."""
        scores, positions = self.search_many(queries, k)
        return [
            [ScoredDocument(id=self.ids[p], text=self.texts[p], score=float(s)) for s, p in zip(row, ps, strict=True)]
            for row, ps in zip(scores, positions, strict=True)
        ]

    def __call__(self, query: str, k: int | None = None) -> list[ScoredDocument]:
        return self.retrieve_many([query], k)[0]
