"""The conformal retrieval check: filters the call's scored documents by the calibrated threshold."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..call import Call, ScoredDocument
from ..checks import Signals
from ..errors import ArtifactError, CheckError
from .calibration import ConformalCalibrator
from .scores import LEXICAL_KINDS, kept_by_conformity

_NO_SCORE = -1e9


class ConformalCheck:
    """Retrieval-phase check. Thread-safe: the threshold is computed once, at build time.

    Keeps every document on the kept side of the threshold (the *conformal set*, whose size the guarantee
    is about: ``retrieval.set_size``), then, when the policy sets ``max_kept``, the best ``max_kept`` of them
    by the same score (``retrieval.kept``; ``retrieval.capped`` says the cap dropped some). The lexical
    score kinds read the query and every document's text; a call without them fails the check (``on_error``
    decides) rather than being scored as if no text matched."""

    name = "retrieval"
    phase = "retrieval"

    def __init__(self, calibrator: ConformalCalibrator, *, alpha: float, max_kept: int | None = None) -> None:
        self.calibrator = calibrator
        self.alpha = alpha
        self.max_kept = max_kept
        self.threshold = calibrator.threshold(alpha)

    @classmethod
    def from_config(cls, config: Any, path: Path, expected_fingerprint: str) -> ConformalCheck:
        calibrator = ConformalCalibrator.load(path)
        if calibrator.fingerprint != expected_fingerprint:
            raise ArtifactError(
                path,
                f"calibrated on {calibrator.fingerprint!r}, but this Guard's retriever is {expected_fingerprint!r}",
                fix="recalibrate with the production retriever, or set retrieval.fingerprint to the retriever "
                "the calibration was made with (only if that retriever really scores production's chunks)",
            )
        return cls(calibrator, alpha=config.alpha, max_kept=config.max_kept)

    def origin(self) -> dict[str, Any]:
        """Where this check's threshold comes from (target coverage, n, score kind and how it was chosen,
        leave-one-out and cross-validated coverage): :meth:`ConformalCalibrator.origin` at the policy's alpha."""
        return {"alpha": self.alpha, "max_kept": self.max_kept, **self.calibrator.origin(self.alpha)}

    def _conformity(self, call: Call, documents: list[ScoredDocument]) -> np.ndarray:
        kind = self.calibrator.kind
        if kind in LEXICAL_KINDS and documents:
            if call.query is None:
                raise CheckError(self.name, f"score kind {kind!r} needs the query (Guard.retrieve(query, ...))")
            missing = [d.id for d in documents if not d.text.strip()]
            if missing:
                raise CheckError(self.name, f"score kind {kind!r} needs every document's text; none for {missing[:3]}")
        return self.calibrator.conformity(documents, call.query)

    def run(self, call: Call) -> Signals:
        documents = list(call.documents or [])
        conformities = self._conformity(call, documents)
        mask = kept_by_conformity(conformities, self.threshold)
        chosen = np.flatnonzero(mask)
        set_size = len(chosen)
        if self.max_kept is not None and set_size > self.max_kept:
            chosen = chosen[np.argsort(-conformities[chosen], kind="stable")][: self.max_kept]  # best first
        keep = set(chosen.tolist())
        kept = [documents[i] for i in chosen.tolist()]
        dropped = [d for i, d in enumerate(documents) if i not in keep]
        best = max((d.score for d in documents), default=_NO_SCORE)
        if self.calibrator.direction == "distance" and documents:
            best = min(d.score for d in documents)
        return Signals(
            values={
                "retrieval.kept": len(kept),
                "retrieval.total": len(documents),
                "retrieval.set_size": set_size,
                "retrieval.kept_fraction": set_size / len(documents) if documents else 0.0,
                "retrieval.capped": len(kept) < set_size,
                "retrieval.max_score": float(best),
                "retrieval.threshold": self.threshold if math.isfinite(self.threshold) else 1e9,
            },
            evidence={
                "score_kind": self.calibrator.kind,
                "alpha": self.alpha,
                "threshold": self.threshold if math.isfinite(self.threshold) else None,
                "set_size": set_size,
                "kept": [{"id": d.id, "score": d.score} for d in kept],
                "dropped": [{"id": d.id, "score": d.score} for d in dropped],
            },
            documents=kept,
        )
