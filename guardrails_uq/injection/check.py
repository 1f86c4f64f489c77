"""The injection check: score each document of the retrieval phase (tool results, retrieved chunks) for
instructions aimed at the model, with its hidden channels decoded."""

from __future__ import annotations

from typing import Any

from ..artifacts import calibrated_threshold
from ..call import Call, ScoredDocument
from ..checks import Signals
from ..errors import WorkBudgetError
from .calibration import FIX, InjectionDetector
from .detector import windows_of
from .markup import reveal


class InjectionCheck:
    """Retrieval-phase check. Thread-safe: read-only state (the embedder is thread-safe by contract).

    Reads ``call.documents`` (the agent integrations pass every new tool result there, the RAG ones every
    retrieved chunk) and the call's ``tool`` messages (id ``message:<index>``). Publishes the highest score,
    the calibrated flag, the triggering window, the flagged ids and the hidden channels found; with ``drop``
    the flagged documents leave the phase's documents, so the integrations withhold them from the model.
    """

    name = "injection"
    phase = "retrieval"

    def __init__(
        self,
        detector: InjectionDetector,
        embedder: Any,
        *,
        target_fpr: float | None = None,
        drop: bool = False,
        max_windows: int = 2000,
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.target_fpr = target_fpr if target_fpr is not None else detector.target_fpr
        self.drop = drop
        self.max_windows = max_windows
        detector.check_compatible(embedder, path=detector.loaded_from)
        self.threshold = calibrated_threshold(detector, self.target_fpr, FIX)

    def run(self, call: Call) -> Signals:
        documents = list(call.documents or [])
        items = [(d.id, d.text) for d in documents]
        items += [(f"message:{i}", m.content) for i, m in enumerate(call.messages) if m.role == "tool"]
        pieces = [reveal(text) for _, text in items]
        cut = [windows_of(p) for p in pieces]
        count = sum(len(w) for w in cut)
        if count > self.max_windows:
            raise WorkBudgetError(  # padding is the writer's choice: fails closed whatever on_error says
                f"{count} windows to score, more than max_windows={self.max_windows}: raise it or split the documents",
                source=self.name,
            )
        scored = self.detector.score_windows(self.embedder, cut)
        channels = sorted({p.channel for found in pieces for p in found if p.hidden})
        flagged = [(key, s) for (key, _), s in zip(items, scored, strict=True) if s.score > self.threshold]
        best = max(range(len(scored)), key=lambda i: scored[i].score, default=None)
        top = scored[best] if best is not None else None
        evidence: dict[str, Any] = {
            "threshold": self.threshold,
            "target_fpr": self.target_fpr,
            "documents": [
                {
                    "id": key,
                    "score": round(s.score, 4),
                    "span": s.window.text if s.window else "",
                    "channel": s.window.channel if s.window else None,
                    "start": s.window.start if s.window else None,
                    "end": s.window.end if s.window else None,
                }
                for key, s in flagged
            ],
        }
        kept: list[ScoredDocument] | None = None
        if self.drop and call.documents is not None:
            ids = {key for key, _ in flagged}
            kept = [d for d in documents if d.id not in ids]
        return Signals(
            values={
                "injection.score": top.score if top is not None else 0.0,
                "injection.flagged": top is not None and top.score > self.threshold,
                "injection.span": top.window.text if top is not None and top.window is not None else "",
                "injection.flagged_ids": [key for key, _ in flagged],
                "injection.channels": channels,
            },
            evidence=evidence,
            documents=kept,
        )
