"""The conformal retrieval check: filters the call's scored documents by the calibrated threshold."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..call import Call
from ..checks import Signals
from ..errors import ArtifactError
from .calibration import ConformalCalibrator, keep_mask

_NO_SCORE = -1e9


class ConformalCheck:
    """Retrieval-phase check. Thread-safe: the threshold is computed once, at build time."""

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

    def run(self, call: Call) -> Signals:
        documents = list(call.documents or [])
        mask = keep_mask(
            [d.score for d in documents], self.threshold, self.calibrator.score_kind, self.calibrator.direction
        )
        kept = [d for d, keep in zip(documents, mask, strict=True) if keep]
        dropped = [d for d, keep in zip(documents, mask, strict=True) if not keep]
        if self.max_kept is not None and len(kept) > self.max_kept:
            sign = 1.0 if self.calibrator.direction == "similarity" else -1.0
            ranked = sorted(kept, key=lambda d: -sign * d.score)
            kept, dropped = ranked[: self.max_kept], dropped + ranked[self.max_kept :]
        best = max((d.score for d in documents), default=_NO_SCORE)
        if self.calibrator.direction == "distance" and documents:
            best = min(d.score for d in documents)
        return Signals(
            values={
                "retrieval.kept": len(kept),
                "retrieval.total": len(documents),
                "retrieval.max_score": float(best),
                "retrieval.threshold": self.threshold if math.isfinite(self.threshold) else 1e9,
            },
            evidence={
                "score_kind": self.calibrator.score_kind,
                "alpha": self.alpha,
                "threshold": self.threshold if math.isfinite(self.threshold) else None,
                "kept": [{"id": d.id, "score": d.score} for d in kept],
                "dropped": [{"id": d.id, "score": d.score} for d in dropped],
            },
            documents=kept,
        )
