"""The provenance check: maximal copied spans of the answer, their BCI and informative score, the corpus
locations, and whether the answer is flagged at the (calibrated) threshold."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..call import Call
from ..checks import Signals
from ..errors import ArtifactError
from ..types import Phase
from .calibration import ProvenanceCalibration, ThresholdOrigin
from .index import CorpusIndex
from .score import DEFAULT_GRAM, DEFAULT_LONG_SPAN, ScoreSettings, score_text

if TYPE_CHECKING:
    from .stream import ProvenanceCheckStream

#: TraceShield's refusal threshold, used on the informative score when the policy sets none.
DEFAULT_THRESHOLD = 20.0


class ProvenanceCheck:
    """Output-phase check. Thread-safe: the index is read-only memory maps, the rest is immutable.

    Publishes ``provenance.score`` (informative score, :mod:`.score`), ``provenance.flagged``
    (score > threshold) and ``provenance.threshold`` beside TraceShield's ``provenance.bci_max``; the
    evidence holds every span (with its informative score) and the threshold's origin."""

    name = "provenance"
    phase: Phase = "output"

    def __init__(
        self,
        index: CorpusIndex,
        *,
        min_span: int = 8,
        max_sources: int = 5,
        settings: ScoreSettings | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        origin: ThresholdOrigin | None = None,
    ) -> None:
        self.index = index
        self.min_span = min_span
        self.max_sources = max_sources
        self.settings = settings or ScoreSettings(
            gram=min(DEFAULT_GRAM, min_span), long_span=max(DEFAULT_LONG_SPAN, min_span)
        )
        self.threshold = threshold
        self.origin = origin or ThresholdOrigin("default", threshold)

    @classmethod
    def from_config(cls, config: Any, index_path: Path, calibration_path: Path | None = None) -> ProvenanceCheck:
        """Built from the policy section: the index, and the threshold from the calibration artifact (which
        must have been made with this index and min_span), the section's ``threshold``, or the default."""
        index = CorpusIndex.load(index_path, verify=config.verify)
        common = {"min_span": config.min_span, "max_sources": config.max_sources}
        if calibration_path is not None:
            calibration = ProvenanceCalibration.load(calibration_path, index=index)
            if calibration.min_span != config.min_span:
                raise ArtifactError(
                    calibration_path,
                    f"calibrated with min_span {calibration.min_span}, but the policy sets min_span {config.min_span}",
                    fix=f"set provenance.min_span: {calibration.min_span}, or recalibrate with "
                    f"--min-span {config.min_span}",
                )
            return cls(
                index,
                **common,
                settings=calibration.settings_,
                threshold=calibration.threshold_,
                origin=calibration.origin(calibration_path),
            )
        if config.threshold is not None:
            return cls(index, **common, threshold=config.threshold, origin=ThresholdOrigin("policy", config.threshold))
        return cls(index, **common)

    @property
    def alert_bci(self) -> float:
        """The raw span BCI from which the informative score can exceed the threshold (score <= BCI): a
        streaming matcher alerting at this BCI never misses a crossing."""
        return self.threshold

    def run(self, call: Call) -> Signals:
        text = call.generation.text if call.generation is not None else ""
        scored = score_text(
            self.index, text, min_span=self.min_span, settings=self.settings, max_sources=self.max_sources
        )
        spans = [
            {**span.to_evidence(), "score": round(value, 4)}
            for span, value in zip(scored.spans, scored.span_scores, strict=True)
        ]
        return Signals(
            values=self.values(
                bci_max=scored.bci_max,
                spans=len(scored.spans),
                longest=max((s.length for s in scored.spans), default=0),
                score=scored.score,
            ),
            evidence={"index": str(self.index.path), "spans": spans, "threshold": self.origin.to_evidence()},
        )

    def values(self, *, bci_max: float, spans: int, longest: int, score: float) -> dict[str, Any]:
        """The signals from the copied spans' largest BCI, count, longest length and largest score."""
        return {
            "provenance.bci_max": bci_max,
            "provenance.spans": spans,
            "provenance.longest_span": longest,
            "provenance.score": score,
            "provenance.flagged": score > self.threshold,
            "provenance.threshold": self.threshold,
        }

    def stream(self, *, alert_bci: float | None = None) -> ProvenanceCheckStream:
        """The signals of a growing answer from the incremental matcher (:class:`ProvenanceCheckStream`);
        ``alert_bci`` (default :attr:`alert_bci`): the span BCI at which ``push`` asks for a decision."""
        from .stream import ProvenanceCheckStream

        return ProvenanceCheckStream(self, alert_bci=self.alert_bci if alert_bci is None else alert_bci)
