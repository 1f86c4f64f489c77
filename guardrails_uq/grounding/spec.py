"""Policy section ``grounding``: registry entry and configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from ..checks import CheckDeps, CheckSpec, SignalSpec
from ..policy.schema import CheckConfig, StrictModel


class JudgeEndpoint(StrictModel):
    """An OpenAI-compatible chat model with logprobs, asked per claim whether the documents support it."""

    url: str = Field(description="Base URL ending before /chat/completions, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(description="Model name sent in the request body.")
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the API key (never the key)."
    )
    timeout: float = Field(default=10.0, gt=0, description="Seconds before one judge request is abandoned.")
    max_retries: int = Field(default=1, ge=0, description="Retries on 429 and 5xx, with exponential backoff.")
    concurrency: int = Field(default=4, ge=1, le=64, description="Judge requests in flight at once per answer.")


class GroundingConfig(CheckConfig):
    """Check that the answer's claims are supported by the evidence the guard kept."""

    calibration: str | None = Field(
        default=None,
        description="Artifact from `guardrails-uq calibrate grounding` (relative to the policy): the offline "
        "scorer fitted on your knowledge base and the threshold for a target false-positive rate "
        "(or, made with --judge-url, the judge's calibrated threshold).",
    )
    target_fpr: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="False-positive rate on supported answers that grounding.flagged may have "
        "(finite-sample bound from the calibration's answers); default: the calibration's own target.",
    )
    judge: JudgeEndpoint | None = Field(
        default=None, description="Score claims with this model instead of the offline scorer."
    )
    threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Hand-set threshold on grounding.support for a judge without a calibration "
        "(default 0.5, not calibrated).",
    )
    ccp: bool = Field(
        default=False,
        description="Also publish grounding.ccp (claim-conditioned probability from the answer's token "
        "alternatives, grouped by the scorer); costs one scorer call per claim with alternatives.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> GroundingConfig:
        if self.calibration is None and self.judge is None:
            raise ValueError(
                "set calibration: (from `guardrails-uq calibrate grounding`) or judge: {url, model} - the offline "
                "scorer is fitted on your knowledge base"
            )
        if self.calibration is not None and self.threshold is not None:
            raise ValueError("set either calibration (a calibrated threshold) or threshold (a hand-set one), not both")
        if self.target_fpr is not None and self.calibration is None:
            raise ValueError("target_fpr needs calibration: (an artifact from `guardrails-uq calibrate grounding`)")
        return self


def _resolve(path: str, base_dir: Path) -> Path:
    resolved = Path(path)
    return resolved if resolved.is_absolute() else base_dir / resolved


def explain(config: Any, base_dir: Path) -> list[str]:
    """Where the threshold comes from (target, n, rates), for ``policy check``; reads the artifact only."""
    if config.calibration is None:
        from .check import DEFAULT_JUDGE_THRESHOLD

        value = config.threshold if config.threshold is not None else DEFAULT_JUDGE_THRESHOLD
        origin = "hand-set" if config.threshold is not None else "default"
        return [f"grounding.flagged: support < {value} ({origin}, not calibrated; judge {config.judge.model})"]
    from .calibration import GroundingCalibration

    calibration = GroundingCalibration.load(_resolve(config.calibration, base_dir))
    return [f"{calibration.describe(config.target_fpr)} (from {config.calibration})"]


def _build(config: Any, base_dir: Path, deps: CheckDeps) -> Any:
    from .check import GroundingCheck

    return GroundingCheck.from_config(config, base_dir, deps.embedder)


def verify(config: Any, base_dir: Path, deps: CheckDeps) -> list[str]:
    """``policy check``: the check built as the Guard builds it; with a judge (whose client is not opened here)
    the calibration artifact is loaded and checked alone."""
    if config.judge is None:
        _build(config, base_dir, deps)
    elif config.calibration is not None:
        from .calibration import GroundingCalibration

        GroundingCalibration.load(_resolve(config.calibration, base_dir))
    return []


SPEC = CheckSpec(
    name="grounding",
    phase="output",
    rewrites=frozenset(),
    waits=False,
    config=GroundingConfig,
    signals={
        "grounding.checked": SignalSpec(
            "bool", "True when the answer had claims and there was evidence to compare them with."
        ),
        "grounding.claims": SignalSpec("integer", "Claims scored (answer sentences with content; 0 if none)."),
        "grounding.support": SignalSpec(
            "number",
            "Lowest claim support (P(supported) against its aligned sentence), 0..1; or null when not checked.",
        ),
        "grounding.contradiction": SignalSpec(
            "number", "Highest claim contradiction (P(contradicted)), 0..1; or null when not checked."
        ),
        "grounding.unsupported_claims": SignalSpec(
            "integer",
            "Claims whose support is below grounding.threshold (verdict contradicted or unsupported); or null when not checked.",
        ),
        "grounding.flagged": SignalSpec(
            "bool", "grounding.support < grounding.threshold (calibrated); or null when not checked."
        ),
        "grounding.threshold": SignalSpec("number", "Threshold on grounding.support: calibrated, hand-set or 0.5."),
        "grounding.ccp": SignalSpec(
            "number",
            "1 - the lowest claim CCP (claim-conditioned probability from the answer's own token alternatives; "
            "higher = less sure), 0..1; or null when ccp is off or the answer has no token alternatives.",
        ),
    },
    build=_build,
    description="Grounding: the answer's claims aligned with the kept evidence (AlignScore-style), calibrated flag.",
    artifacts=lambda config: {"calibration": config.calibration},
    explain=explain,
    verify=verify,
)
