"""ConformalRetriever: keep only the documents that pass a conformally calibrated threshold."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict, Field, PrivateAttr

from guardrails_uq import Action, Guard, ScoredDocument, violation_for
from guardrails_uq.conformal import ConformalCalibrator, calibrate


def _scored(source: BaseRetriever | VectorStore, query: str, k: int, score_key: str) -> list[tuple[Document, float]]:
    """(document, score) pairs: from a vector store's similarity_search_with_score, or from a retriever whose
    documents carry ``metadata[score_key]``."""
    if isinstance(source, VectorStore):
        return list(source.similarity_search_with_score(query, k=k))
    pairs = []
    for document in source.invoke(query):
        if score_key not in document.metadata:
            raise ValueError(
                f"document {document.id!r} has no metadata[{score_key!r}]: the conformal threshold needs the "
                "retriever's scores (wrap a vector store, or set score_key)"
            )
        pairs.append((document, float(document.metadata[score_key])))
    return pairs


def _doc_id(document: Document, position: int) -> str:
    return str(document.id) if document.id is not None else str(document.metadata.get("id", position))


class ConformalRetriever(BaseRetriever):
    """Wraps a vector store (scores from ``similarity_search_with_score``) or a retriever whose documents carry
    a score in metadata, and keeps the documents the policy's conformal check keeps (every one past the
    threshold, however many). When none pass or a retrieval rule blocks: ``on_empty="empty"`` returns [];
    ``"raise"`` raises EscalateViolation if the rule escalated, AbstainViolation otherwise (both carry the
    Decision)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    source: BaseRetriever | VectorStore = Field(description="The vector store or scored retriever wrapped.")
    k: int = Field(default=20, ge=1, description="Candidates fetched from a vector store before filtering.")
    score_key: str = Field(default="score", description="Metadata key of a retriever document's score.")
    on_empty: Literal["empty", "raise"] = Field(default="empty", description="What to do when nothing passes.")
    _guard: Guard = PrivateAttr()

    def __init__(self, *, guard: Guard | str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._guard = guard if isinstance(guard, Guard) else Guard.from_policy(guard)

    def _filter(self, query: str) -> list[Document]:
        pairs = _scored(self.source, query, self.k, self.score_key)
        scored = [ScoredDocument(id=_doc_id(d, i), text=d.page_content, score=s) for i, (d, s) in enumerate(pairs)]
        decision = self._guard.retrieve(query, scored)
        kept = {d.id for d in decision.documents or []} if decision.documents is not None else {d.id for d in scored}
        documents = [
            Document(id=d.id, page_content=d.page_content, metadata={**d.metadata, self.score_key: s})
            for (d, s), sd in zip(pairs, scored, strict=True)
            if sd.id in kept
        ]
        blocked = decision.final and decision.action is not Action.ALLOW
        if (not documents or blocked) and self.on_empty == "raise":
            raise violation_for(decision)
        return [] if blocked else documents

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return self._filter(query)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return await asyncio.to_thread(self._filter, query)


def calibrate_retriever(
    source: BaseRetriever | VectorStore,
    pairs: Iterable[tuple[str, Iterable[str]]],
    *,
    fingerprint: str,
    k: int = 20,
    score_key: str = "score",
    score_kind: str = "similarity",
) -> ConformalCalibrator:
    """Calibrate on the LangChain retriever itself, so the threshold applies to exactly its scores.
    ``pairs``: (query, relevant document ids); document ids are ``Document.id`` (or metadata "id")."""

    def retrieve(query: str) -> list[ScoredDocument]:
        return [
            ScoredDocument(id=_doc_id(d, i), score=s) for i, (d, s) in enumerate(_scored(source, query, k, score_key))
        ]

    return calibrate(retrieve, pairs, score_kind=score_kind, fingerprint=fingerprint)  # type: ignore[arg-type]
