"""Policy section ``provenance`` (TraceShield): registry entry and configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ..checks import CheckDeps, CheckSpec, SignalSpec
from ..policy.schema import CheckConfig


class ProvenanceConfig(CheckConfig):
    """Find answer spans copied verbatim from an indexed corpus of unsafe text and score them by BCI."""

    index: str = Field(description="Index folder built by `guardrails-uq provenance index` (relative to the policy).")
    min_span: int = Field(default=8, ge=1, description="Shortest span, in tokens, that counts as copied.")
    max_sources: int = Field(default=5, ge=0, description="Corpus locations recorded per span in the evidence.")
    verify: Literal["full", "size"] = Field(
        default="full", description="Check index files at load by SHA-256 (full) or by size only (fast start)."
    )
    calibration: str | None = Field(
        default=None,
        description="Threshold artifact from `guardrails-uq calibrate provenance`, made with this index "
        "(relative to the policy); sets provenance.threshold from a target false-positive rate.",
    )
    threshold: float | None = Field(
        default=None,
        ge=0,
        description="Hand-set threshold on provenance.score when there is no calibration "
        "(default: TraceShield's 20, not calibrated).",
    )

    @model_validator(mode="after")
    def _one_threshold(self) -> ProvenanceConfig:
        if self.calibration is not None and self.threshold is not None:
            raise ValueError("set either calibration (a calibrated threshold) or threshold (a hand-set one), not both")
        return self


def _resolve(path: str, base_dir: Path) -> Path:
    resolved = Path(path)
    return resolved if resolved.is_absolute() else base_dir / resolved


def threshold_origin(config: Any, base_dir: Path) -> Any:
    """Where the section's threshold comes from (a :class:`.calibration.ThresholdOrigin`; its ``describe()``
    gives the target, n and in-sample rate of a calibration), reading only the calibration artifact: for
    ``policy check`` explanations. ArtifactError when the artifact is missing, damaged or edited."""
    from .calibration import ProvenanceCalibration, ThresholdOrigin
    from .check import DEFAULT_THRESHOLD

    if config.calibration is not None:
        path = _resolve(config.calibration, base_dir)
        return ProvenanceCalibration.load(path).origin(path)
    if config.threshold is not None:
        return ThresholdOrigin("policy", config.threshold)
    return ThresholdOrigin("default", DEFAULT_THRESHOLD)


def _build(config: Any, base_dir: Path, deps: CheckDeps) -> Any:
    from .check import ProvenanceCheck

    calibration = _resolve(config.calibration, base_dir) if config.calibration is not None else None
    return ProvenanceCheck.from_config(config, _resolve(config.index, base_dir), calibration)


def verify(config: Any, base_dir: Path, deps: CheckDeps) -> list[str]:
    """``policy check``: the check built as the Guard builds it, with every index file checked by SHA-256 even
    when the policy says ``verify: size`` (a fast start skips what this check is for)."""
    _build(config.model_copy(update={"verify": "full"}), base_dir, deps)
    return []


SPEC = CheckSpec(
    name="provenance",
    phase="output",
    rewrites=frozenset(),
    waits=False,
    config=ProvenanceConfig,
    signals={
        "provenance.bci_max": SignalSpec("number", "Highest Belief Conflict Index over copied spans (0 if none)."),
        "provenance.spans": SignalSpec("integer", "Number of maximal copied spans of at least min_span tokens."),
        "provenance.longest_span": SignalSpec("integer", "Length in tokens of the longest copied span (0 if none)."),
        "provenance.score": SignalSpec(
            "number",
            "Informative score: highest BCI over copied spans counting only distinctive words "
            "(no digits, no n-grams benign text shares with the corpus, unless the span is long); 0 if none.",
        ),
        "provenance.flagged": SignalSpec(
            "bool", "provenance.score > provenance.threshold: the answer reproduces unsafe corpus text."
        ),
        "provenance.threshold": SignalSpec(
            "number", "Threshold on provenance.score: calibrated (calibration), hand-set (threshold) or 20."
        ),
    },
    build=_build,
    description="TraceShield: verbatim spans from an indexed unsafe corpus, scored by the Belief Conflict Index.",
    artifacts=lambda config: {"index": config.index, "calibration": config.calibration},
    explain=lambda config, base_dir: [f"provenance.flagged: {threshold_origin(config, base_dir).describe()}"],
    verify=verify,
)
