"""The harmful-answer check: the guidelines check's harm detector on what the model wrote."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import calibrated_threshold
from ..call import Call
from ..checks import Signals
from ..errors import WorkBudgetError
from ..guidelines.calibration import HarmDetector
from ..guidelines.detector import segments
from ..guidelines.index import GuidelineIndex
from ..guidelines.library import GuidelineLibrary
from ..textnorm import read_as_model
from .spec import REBUILD

#: Most parts (the output, its sentences, word windows) scored per call; more fails the check with a
#: WorkBudgetError (abstain, whatever on_error says: the length is the model's, which a user can ask for).
MAX_SEGMENTS = 2048
#: Probabilities of recently scored parts kept (a streamed answer is scored again as its prefix grows).
CACHE_SIZE = 4096


class AnswerHarmCheck:
    """Output-phase check; thread-safe (the embedder and the detector's numpy maths are; the cache is locked).

    Reads ``call.generation.text`` (the answer, and for a tool-calling step its calls as the tool reads them),
    first as a reader reads it (:func:`~guardrails_uq.textnorm.read_as_model`: tag characters, base64,
    look-alike letters, leetspeak decoded), then scores every part (:func:`~guardrails_uq.guidelines.detector.
    segments`: the text, each sentence, word windows) with a :class:`HarmDetector`; ``answer_harm.prob`` is the
    largest probability, ``answer_harm.flagged`` compares it with the threshold for the target false-positive
    rate. The evidence names the part that scored highest. It runs on streamed prefixes as on whole answers
    (parts seen before come from a cache)."""

    name = "answer_harm"
    phase = "output"

    def __init__(self, index: GuidelineIndex, detector: HarmDetector, *, target_fpr: float | None = None) -> None:
        self.index = index
        self.detector = detector
        self.target_fpr = target_fpr if target_fpr is not None else detector.target_fpr
        detector.check_compatible(index, path=detector.loaded_from)
        self.threshold = calibrated_threshold(detector, self.target_fpr, f"rebuild: {REBUILD}")
        self._scores: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls, library: Path, calibration: Path, embedder: Any, target_fpr: float | None = None
    ) -> AnswerHarmCheck:
        """Build from the section's paths: the library's index (shared cache with the guidelines check's) and
        the calibration artifact (checked against the library and embedder)."""
        index = GuidelineIndex.open(GuidelineLibrary.load(library), embedder)
        return cls(index, HarmDetector.load(calibration), target_fpr=target_fpr)

    def run(self, call: Call) -> Signals:
        text = call.generation.text if call.generation is not None else ""
        reading = read_as_model(text)
        parts = segments(reading.text)
        if len(parts) > MAX_SEGMENTS:
            raise WorkBudgetError(  # the model's padding: fails closed whatever on_error says
                f"the output has {len(parts)} parts to score, more than {MAX_SEGMENTS}: the check does not read an "
                "output in part",
                source=self.name,
            )
        scores = self._score(parts)
        best = int(np.argmax(scores)) if parts else None
        prob = float(scores[best]) if best is not None else 0.0
        evidence: dict[str, Any] = {"prob": prob, "threshold": self.threshold, "target_fpr": self.target_fpr}
        if best is not None:
            evidence["part"] = parts[best][:500]
        if reading.channels:
            evidence["hidden"] = {"channels": sorted(reading.channels), "output_as_read": reading.text[:500]}
        return Signals(
            values={
                "answer_harm.prob": prob,
                "answer_harm.flagged": prob > self.threshold,
                "answer_harm.hidden": sorted(reading.channels),
            },
            evidence=evidence,
        )

    def _score(self, parts: list[str]) -> np.ndarray:
        """P(harmful) of each part (cached by text; one embedder call for the parts not seen before)."""
        with self._lock:
            known = {p: self._scores[p] for p in parts if p in self._scores}
        fresh = [p for p in dict.fromkeys(parts) if p not in known]
        if fresh:
            vectors = np.asarray(self.index.embedder.embed(fresh), dtype=np.float32)
            probabilities = self.detector.predict_proba(self.index, vectors)
            with self._lock:
                for part, probability in zip(fresh, probabilities, strict=True):
                    known[part] = self._scores[part] = float(probability)
                while len(self._scores) > CACHE_SIZE:
                    self._scores.popitem(last=False)
        return np.array([known[p] for p in parts], dtype=np.float64)
