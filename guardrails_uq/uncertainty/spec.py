"""Policy section ``uncertainty`` (LM cascades): registry entry and configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..checks import CheckDeps, CheckSpec, SignalSpec
from ..policy.schema import StrictModel
from .token_scores import TOKEN_SCORE_NAMES

ScoreName = Literal[TOKEN_SCORE_NAMES]  # type: ignore[valid-type]


class UncertaintyConfig(StrictModel):
    """Token-level (and sample-based) uncertainty of the answer, and the learned deferral probability."""

    score: ScoreName = Field(default="g_nll", description="Score published as uncertainty.score (Chow-Sum by default).")
    deferral: str | None = Field(
        default=None, description="Post-hoc deferral model from `guardrails-uq deferral fit` (relative to the policy)."
    )
    set_threshold: float = Field(
        default=0.85, gt=0, le=1, description="Similarity above which two samples share a semantic set."
    )
    calibration: str | None = Field(
        default=None,
        description="Risk-controlled deferral threshold from `guardrails-uq calibrate deferral` (relative to the "
        "policy): publishes uncertainty.defer.",
    )


_TOKEN_DOCS = {
    "g_nll": "Chow-Sum: -sum of token logprobs",
    "mean_nll": "Chow-Average: mean token NLL",
    "max_nll": "largest token NLL",
    "perplexity": "exp(mean NLL)",
    "one_minus_geo_prob": "1 - geometric mean token probability",
    "one_minus_mean_prob": "1 - arithmetic mean token probability",
    "mean_entropy": "mean entropy of the renormalised top alternatives",
    "neg_kurtosis": "negated mean kurtosis of the top alternatives' logprobs",
}


def _doc(name: str) -> str:
    text = _TOKEN_DOCS.get(name) or f"Chow-Quantile: {int(name[5:])}th percentile of token NLL"
    return f"{text}; higher = more uncertain, or null without logprobs."


def _build(config: Any, base_dir: Path, deps: CheckDeps) -> Any:
    from .check import UncertaintyCheck

    def resolve(value: str | None) -> Path | None:
        return None if not value else (Path(value) if Path(value).is_absolute() else base_dir / value)

    return UncertaintyCheck(
        score=config.score,
        deferral_path=resolve(config.deferral),
        embedder=deps.embedder,
        set_threshold=config.set_threshold,
        calibration_path=resolve(config.calibration),
    )


SPEC = CheckSpec(
    name="uncertainty",
    phase="output",
    config=UncertaintyConfig,
    signals={
        "uncertainty.available": SignalSpec("bool", "True when the answer came with per-token logprobs."),
        "uncertainty.tokens": SignalSpec("integer", "Number of answer tokens with logprobs (0 when unavailable)."),
        **{f"uncertainty.{name}": SignalSpec("number", _doc(name)) for name in TOKEN_SCORE_NAMES},
        "uncertainty.score": SignalSpec("number", "The policy's chosen score (uncertainty.score setting), or null."),
        "uncertainty.defer_prob": SignalSpec(
            "number", "Learned post-hoc deferral: P(answer incorrect), or null without a model or logprobs."
        ),
        "uncertainty.defer": SignalSpec(
            "bool",
            "Risk-controlled deferral (calibration set): true when the calibrated score is above the certified "
            "threshold, or missing; or null without a calibration.",
        ),
        "uncertainty.defer_threshold": SignalSpec(
            "number", "The certified threshold (-inf: nothing could be certified, defer all), or null."
        ),
        "uncertainty.samples": SignalSpec("integer", "Number of extra sampled answers given with the call."),
        "uncertainty.num_sem_sets": SignalSpec("number", "Semantic sets among the samples (Lin et al.), or null."),
        "uncertainty.eigv": SignalSpec("number", "Laplacian eigenvalue score over samples (Lin et al.), or null."),
        "uncertainty.deg": SignalSpec("number", "Degree score over samples (Lin et al.), or null."),
        "uncertainty.ecc": SignalSpec("number", "Eccentricity score over samples (Lin et al.), or null."),
    },
    build=_build,
    description="LM cascades: token-level and sample-based uncertainty, learned deferral probability.",
    artifacts=lambda config: {"deferral": config.deferral, "calibration": config.calibration},
)
