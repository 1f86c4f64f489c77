"""Policy section ``uncertainty`` (LM cascades): registry entry and configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..checks import CheckDeps, CheckSpec, SignalSpec
from ..policy.schema import CheckConfig
from .token_scores import TOKEN_SCORE_NAMES

ScoreName = Literal[TOKEN_SCORE_NAMES]  # type: ignore[valid-type]
#: Upper bound of uncertainty.samples: each sample is a full extra completion.
MAX_SAMPLES = 32


class UncertaintyConfig(CheckConfig):
    """Token-level (and sample-based) uncertainty of the answer, and the learned deferral probability."""

    score: ScoreName = Field(default="g_nll", description="Score published as uncertainty.score (Chow-Sum by default).")
    deferral: str | None = Field(
        default=None, description="Post-hoc deferral model from `guardrails-uq deferral fit` (relative to the policy)."
    )
    samples: int = Field(
        default=0,
        ge=0,
        le=MAX_SAMPLES,
        description="Extra sampled answers requested in the same call as the answer (n = 1 + samples), by the "
        "proxy and `generate_with_samples`; the sample-based scores need at least 1.",
    )
    similarity: Literal["cosine", "combined"] = Field(
        default="combined",
        description="Similarity of two samples: embedding cosine, or cosine combined with content-word "
        "overlap and negation and number checks (tells 'you can' from 'you cannot').",
    )
    set_threshold: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Similarity above which two samples share a semantic set (default: 0.85 for cosine, "
        "0.65 for combined).",
    )
    sar: bool = Field(
        default=False,
        description="Publish uncertainty.token_sar (SAR's relevance-weighted token NLL; one embedding per "
        "answer token).",
    )
    sar_max_tokens: int = Field(
        default=64, ge=1, le=512, description="Longest answer (in tokens) for which token_sar is computed."
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
        similarity=config.similarity,
        samples=config.samples,
        sar=config.sar,
        sar_max_tokens=config.sar_max_tokens,
        calibration_path=resolve(config.calibration),
    )


#: What ``policy check`` says about streams when the policy asks for samples (the proxy's choice, item 11).
SAMPLES_AND_STREAMS = (
    "uncertainty.samples: {n} extra answers are requested in the same call as the answer; streamed requests "
    "through `guardrails-uq serve` get them too: the proxy asks the upstream for the whole answer and its samples "
    "(n = 1 + {n}, not streamed), decides exactly as for a JSON request, and only then sends the stream (nothing "
    "is shown before the decision; --stream-mode does not apply)"
)


def explain(config: Any, base_dir: Path) -> list[str]:
    """How the samples reach streams (when the policy asks for samples), and the deferral threshold's origin,
    from the risk-control artifact (none: no calibrated threshold)."""
    lines = [SAMPLES_AND_STREAMS.format(n=config.samples)] if config.samples else []
    return lines + _deferral_origin(config, base_dir)


def _deferral_origin(config: Any, base_dir: Path) -> list[str]:
    if not config.calibration:
        return ["uncertainty.defer: no calibration (null); rules on raw scores use hand-set numbers"]
    from .risk import RiskControl

    path = Path(config.calibration)
    control = RiskControl.load(path if path.is_absolute() else base_dir / path)
    if not control.certified:
        return [f"uncertainty.defer: nothing certified for error <= {control.target_error:g} at delta "
                f"{control.delta:g} on n={control.n} calls: every answer is deferred (from {config.calibration})"]  # fmt: skip
    return [
        f"uncertainty.defer: {control.score} > {control.threshold:.4g}: error among allowed answers <= "
        f"{control.target_error:g} with probability >= {1 - control.delta:g} (n={control.n} calls; on them it "
        f"allows {control.allowed_fraction:.1%} with error {control.calibration_error:.3f}) (from {config.calibration})"
    ]


SPEC = CheckSpec(
    name="uncertainty",
    phase="output",
    rewrites=frozenset(),
    waits=False,
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
        "uncertainty.semantic_volume": SignalSpec(
            "number",
            "Semantic Volume (Li et al. 2025): log-determinant of the samples' embedding Gram matrix; higher = "
            "more spread out, or null below 2 texts (answer and samples).",
        ),
        "uncertainty.token_sar": SignalSpec(
            "number",
            "TokenSAR (Duan et al.): token NLL weighted by each token's relevance (from the embedder); higher = "
            "more uncertain, or null unless sar is on and the answer has logprobs and at most sar_max_tokens tokens.",
        ),
        "uncertainty.claims": SignalSpec(
            "integer", "Sentences (claims) in the answer, from its tokens (0 without logprobs)."
        ),
        "uncertainty.worst_claim_nll": SignalSpec(
            "number",
            "Mean token NLL of the least confident claim (sentence); higher = more uncertain, or null without "
            "logprobs.",
        ),
    },
    build=_build,
    description="LM cascades: token-level and sample-based uncertainty, learned deferral probability.",
    artifacts=lambda config: {"deferral": config.deferral, "calibration": config.calibration},
    explain=explain,
)
