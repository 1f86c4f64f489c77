"""The guidelines check: retrieve, inject, report; with a calibration, also score the request's harmfulness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..call import Call
from ..checks import Signals
from ..errors import ArtifactError, InputError
from ..textnorm import normalize
from .calibration import FIX, HarmDetector
from .index import GuidelineIndex
from .library import GuidelineLibrary
from .render import render_messages

#: How many earlier user and system messages the detector reads besides the request (the latest ones).
MAX_SCORED_MESSAGES = 8


class GuidelinesCheck:
    """Input-phase check. Thread-safe (FAISS search, the embedder and the detector's numpy maths are).

    The normalised request is embedded once; the vector serves both the guideline search and, when a
    :class:`HarmDetector` is given, its P(harmful) (``guidelines.harm_prob``) and the calibrated flag
    (``guidelines.flagged``: harm_prob > the threshold for the target false-positive rate). The detector also
    reads the other user and system messages (the latest MAX_SCORED_MESSAGES) and reports the largest
    probability, so a harmful request cannot hide in an earlier turn or a system prompt. Without a
    detector both signals are null, so a rule reading them fails closed (``on_error``) instead of allowing.
    A blank request retrieves nothing and scores 0 (not flagged).
    """

    name = "guidelines"
    phase = "input"

    def __init__(
        self,
        index: GuidelineIndex,
        *,
        top_k: int = 4,
        min_score: float = 0.35,
        dedup: float = 0.9,
        inject: bool = True,
        detector: HarmDetector | None = None,
        target_fpr: float | None = None,
    ) -> None:
        self.index = index
        self.top_k = top_k
        self.min_score = min_score
        self.dedup = dedup
        self.inject = inject
        self.detector = detector
        self.target_fpr = target_fpr if detector is None or target_fpr is not None else detector.target_fpr
        self.threshold: float | None = None
        if detector is not None:
            source = detector.loaded_from
            detector.check_compatible(index, path=source)
            try:
                self.threshold = detector.threshold(self.target_fpr)  # type: ignore[arg-type]
            except InputError as exc:
                raise ArtifactError(source, str(exc), fix=f"state a larger target_fpr, or {FIX}") from None

    @classmethod
    def from_config(
        cls, config: Any, library_path: Path, embedder: Any, calibration_path: Path | None = None
    ) -> GuidelinesCheck:
        """Build from the policy section; loads (and checks) the calibration artifact when one is named."""
        index = GuidelineIndex.open(GuidelineLibrary.load(library_path), embedder)
        detector = HarmDetector.load(calibration_path) if calibration_path is not None else None
        return cls(
            index,
            top_k=config.top_k,
            min_score=config.min_score,
            dedup=config.dedup,
            inject=config.inject,
            detector=detector,
            target_fpr=getattr(config, "target_fpr", None),
        )

    def run(self, call: Call) -> Signals:
        request = normalize(call.user_input)  # zero-width or fullwidth disguises embed like the plain text
        others = self._other_texts(call, request) if self.detector is not None else []
        texts = ([request] if request.strip() else []) + others
        vectors = self.index.embedder.embed(texts) if texts else None
        vector = vectors[:1] if vectors is not None and request.strip() else None
        retrieved = (
            self.index.search(vector[0], top_k=self.top_k, min_score=self.min_score, dedup=self.dedup)
            if vector is not None
            else []
        )
        harm_prob, flagged = self._harm(vectors)
        evidence: dict[str, Any] = {
            "guidelines": [
                {
                    "id": r.guideline.id,
                    "title": r.guideline.title,
                    "category": r.guideline.category,
                    "score": round(r.score, 4),
                }
                for r in retrieved
            ]
        }
        if self.threshold is not None:
            evidence["harm"] = {"prob": harm_prob, "threshold": self.threshold, "target_fpr": self.target_fpr}
        return Signals(
            values={
                "guidelines.count": len(retrieved),
                "guidelines.top_score": retrieved[0].score if retrieved else 0.0,
                "guidelines.ids": [r.guideline.id for r in retrieved],
                "guidelines.categories": [r.guideline.category for r in retrieved],
                "guidelines.harm_prob": harm_prob,
                "guidelines.flagged": flagged,
            },
            evidence=evidence,
            messages=render_messages(call.messages, retrieved) if self.inject and retrieved and call.messages else None,
        )

    @staticmethod
    def _other_texts(call: Call, request: str) -> list[str]:
        """Every other user and system message (the latest MAX_SCORED_MESSAGES), normalised and distinct: a
        harmful request moved to an earlier turn or into a system message is still read by the detector."""
        seen = {request}
        texts = []
        for message in reversed(call.messages):
            if message.role not in ("user", "system"):
                continue
            text = normalize(message.content)
            if text.strip() and text not in seen:
                seen.add(text)
                texts.append(text)
            if len(texts) >= MAX_SCORED_MESSAGES:
                break
        return texts

    def _harm(self, vectors: Any) -> tuple[float | None, bool | None]:
        """The largest P(harmful) over the scored messages, and the calibrated flag."""
        if self.detector is None or self.threshold is None:
            return None, None
        if vectors is None:
            return 0.0, False
        probability = float(max(self.detector.predict_proba(self.index, vectors)))
        return probability, probability > self.threshold
