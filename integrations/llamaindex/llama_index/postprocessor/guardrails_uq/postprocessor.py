"""ConformalPostprocessor: keep the nodes that pass the calibrated conformal threshold."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle
from pydantic import ConfigDict, PrivateAttr

from guardrails_uq import Action, Guard, ScoredDocument
from guardrails_uq.conformal import ConformalCalibrator, calibrate

from . import _context


class ConformalPostprocessor(BaseNodePostprocessor):
    """Runs the policy's retrieval phase on the retrieved nodes (their scores) and keeps every node past the
    threshold, however many. When a retrieval rule abstains (e.g. ``retrieval.kept == 0``), no node is kept
    and a GuardedQueryEngine or GuardedChatEngine around the call answers the policy's message.

    Inside a guarded call the retrieval Decision continues the call's request (its id, the input phase's
    signals, an earlier verdict); outside one it is a request of its own."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _guard: Guard = PrivateAttr()

    def __init__(self, guard: Guard | str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._guard = guard if isinstance(guard, Guard) else Guard.from_policy(guard)

    @classmethod
    def class_name(cls) -> str:
        return "ConformalPostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        state = _context.current.get()
        query = query_bundle.query_str if query_bundle is not None else ""
        if state is not None and state.question is not None:
            query = state.question  # the user's question, not the guided prompt
        elif query_bundle is not None and query_bundle.custom_embedding_strs:
            query = query_bundle.custom_embedding_strs[0]
        scored = [
            ScoredDocument(
                id=n.node.node_id, text=n.node.get_content(), score=float(n.score if n.score is not None else 0.0)
            )
            for n in nodes
        ]
        decision = self._guard.retrieve(query, scored, context=state.context if state is not None else None)
        if state is not None:
            state.retrieval = decision
        if decision.final and decision.action is not Action.ALLOW:
            return []
        kept = {d.id for d in decision.documents} if decision.documents is not None else {d.id for d in scored}
        return [n for n in nodes if n.node.node_id in kept]

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._postprocess_nodes, nodes, query_bundle)


def calibrate_llamaindex_retriever(
    retriever: Any, pairs: Iterable[tuple[str, Iterable[str]]], *, fingerprint: str, score_kind: str = "similarity"
) -> ConformalCalibrator:
    """Calibrate on a LlamaIndex retriever, so the threshold applies to its own scores.
    ``pairs``: (query, relevant node ids)."""

    def retrieve(query: str) -> list[ScoredDocument]:
        return [ScoredDocument(id=n.node.node_id, score=float(n.score or 0.0)) for n in retriever.retrieve(query)]

    return calibrate(retrieve, pairs, score_kind=score_kind, fingerprint=fingerprint)  # type: ignore[arg-type]
