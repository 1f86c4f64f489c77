"""The guidelines check: retrieve, inject, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..call import Call
from ..checks import Signals
from ..textnorm import normalize
from .index import GuidelineIndex
from .library import GuidelineLibrary
from .render import render_messages


class GuidelinesCheck:
    """Input-phase check. Thread-safe (FAISS search and the embedder are)."""

    name = "guidelines"
    phase = "input"

    def __init__(
        self, index: GuidelineIndex, *, top_k: int = 4, min_score: float = 0.35, dedup: float = 0.9, inject: bool = True
    ) -> None:
        self.index = index
        self.top_k = top_k
        self.min_score = min_score
        self.dedup = dedup
        self.inject = inject

    @classmethod
    def from_config(cls, config: Any, library_path: Path, embedder: Any) -> GuidelinesCheck:
        index = GuidelineIndex.open(GuidelineLibrary.load(library_path), embedder)
        return cls(index, top_k=config.top_k, min_score=config.min_score, dedup=config.dedup, inject=config.inject)

    def run(self, call: Call) -> Signals:
        request = normalize(call.user_input)  # zero-width or fullwidth disguises embed like the plain text
        retrieved = (
            self.index.search(request, top_k=self.top_k, min_score=self.min_score, dedup=self.dedup)
            if request.strip()
            else []
        )
        return Signals(
            values={
                "guidelines.count": len(retrieved),
                "guidelines.top_score": retrieved[0].score if retrieved else 0.0,
                "guidelines.ids": [r.guideline.id for r in retrieved],
                "guidelines.categories": [r.guideline.category for r in retrieved],
            },
            evidence={
                "guidelines": [
                    {
                        "id": r.guideline.id,
                        "title": r.guideline.title,
                        "category": r.guideline.category,
                        "score": round(r.score, 4),
                    }
                    for r in retrieved
                ]
            },
            messages=render_messages(call.messages, retrieved) if self.inject and retrieved and call.messages else None,
        )
