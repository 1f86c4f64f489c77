"""ConformalRetriever: keep only the documents that pass a conformally calibrated threshold."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict, Field, PrivateAttr

from guardrails_uq import Decision, Guard, Message, ScoredDocument
from guardrails_uq.conformal import ConformalCalibrator, calibrate

from ._phases import RequestPhases, blocked
from ._requests import ensure_tracking, request_of


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
    threshold, however many).

    It is the retrieval phase of its request (see ``_requests``): when the request has not run the input
    phase on this query yet, it runs it first (a harmful question is refused before anything is retrieved;
    the chain's model then reuses that Decision). When the policy blocks the request (an input or retrieval
    rule abstains or escalates, e.g. no-evidence when nothing passes):

    * ``on_block="raise"`` (default) raises AbstainViolation, or EscalateViolation when a rule escalated;
      both carry the Decision, so the chain stops and the caller reads ``violation.decision.message``.
    * ``on_block="empty"`` returns [] and leaves the verdict with the request: a GuardedChatModel later in
      the same chain answers with the policy's message without calling its model. Use it only when such a
      model follows; any other model would answer without evidence.

    When nothing passes and no rule blocks, the policy allowed it: [] is returned.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    source: BaseRetriever | VectorStore = Field(description="The vector store or scored retriever wrapped.")
    k: int = Field(default=20, ge=1, description="Candidates fetched from a vector store before filtering.")
    score_key: str = Field(default="score", description="Metadata key of a retriever document's score.")
    on_block: Literal["raise", "empty"] = Field(
        default="raise", description="When the policy blocks the request: raise its violation, or return []."
    )
    input_phase: bool = Field(
        default=True, description="Run the input phase on the query when the request has not run it yet."
    )
    _guard: Guard = PrivateAttr()

    def __init__(self, *, guard: Guard | str | Path, on_empty: Literal["raise", "empty"] | None = None, **kwargs: Any):
        """``on_empty`` is the former name of ``on_block`` (same values)."""
        if on_empty is not None:
            kwargs.setdefault("on_block", on_empty)
        super().__init__(**kwargs)
        self._guard = guard if isinstance(guard, Guard) else Guard.from_policy(guard)
        ensure_tracking()

    @property
    def guard(self) -> Guard:
        return self._guard

    def _filter(self, query: str, run_id: UUID | None) -> list[Document]:
        phases = RequestPhases(self._guard, request_of(run_id))
        if self.input_phase:
            before = phases.before([Message(role="user", content=query)])
            if blocked(before):
                return self._blocked(phases, before)
        pairs = _scored(self.source, query, self.k, self.score_key)
        scored = [ScoredDocument(id=_doc_id(d, i), text=d.page_content, score=s) for i, (d, s) in enumerate(pairs)]
        decision = phases.retrieve(query, scored)
        if blocked(decision):
            return self._blocked(phases, decision)
        kept = {d.id for d in decision.documents} if decision.documents is not None else {d.id for d in scored}
        return [
            Document(id=d.id, page_content=d.page_content, metadata={**d.metadata, self.score_key: s})
            for (d, s), sd in zip(pairs, scored, strict=True)
            if sd.id in kept
        ]

    def _blocked(self, phases: RequestPhases, decision: Decision) -> list[Document]:
        if self.on_block == "raise":
            raise phases.violation(decision)
        return []

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return self._filter(query, run_manager.run_id)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return await asyncio.to_thread(self._filter, query, run_manager.run_id)


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
