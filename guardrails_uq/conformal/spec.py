"""Policy section ``retrieval`` (CONFLARE): registry entry and configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from ..checks import CheckDeps, CheckSpec, SignalSpec
from ..policy.schema import CheckConfig


class RetrievalConfig(CheckConfig):
    """Keep the retrieved chunks that pass a conformally calibrated threshold."""

    calibration: str = Field(
        description="Artifact written by `guardrails-uq calibrate conformal` (relative to the policy)."
    )
    alpha: float = Field(
        default=0.1, gt=0, lt=1, description="Miss rate: a relevant chunk is kept with probability >= 1 - alpha."
    )
    max_kept: int | None = Field(
        default=None,
        ge=1,
        description="Cap on chunks kept (weakens the guarantee: `eval conformal` reports by how much).",
    )
    fingerprint: str | None = Field(
        default=None,
        description="Retriever the calibration must come from; default: the Guard's embedder + faiss-ip.",
    )


def _build(config: Any, base_dir: Path, deps: CheckDeps) -> Any:
    from .check import ConformalCheck

    path = Path(config.calibration)
    expected = config.fingerprint or f"{deps.embedder.name}+faiss-ip"
    return ConformalCheck.from_config(config, path if path.is_absolute() else base_dir / path, expected)


def explain(config: Any, base_dir: Path) -> list[str]:
    """The retrieval threshold's origin at the policy's alpha, from the calibration artifact."""
    from .calibration import ConformalCalibrator

    path = Path(config.calibration)
    origin = ConformalCalibrator.load(path if path.is_absolute() else base_dir / path).origin(config.alpha)
    line = (
        f"retrieval threshold {origin['threshold']:.4g}: target coverage {origin['target_coverage']:g} "
        f"(alpha {config.alpha:g}) on n={origin['n']} calibration queries, score kind {origin['score_kind']} "
        f"({origin['chosen_by']}); leave-one-out coverage {origin['loo_coverage']:.3f}"
    )
    if "cv_coverage" in origin:
        line += f"; cross-validated coverage {origin['cv_coverage']:.3f}, {origin['cv_kept_mean']:.1f} chunks kept"
    return [line + f" (from {config.calibration})"]


SPEC = CheckSpec(
    name="retrieval",
    phase="retrieval",
    rewrites=frozenset({"documents"}),
    waits=False,
    config=RetrievalConfig,
    signals={
        "retrieval.kept": SignalSpec(
            "integer", "Chunks that pass the conformal threshold (all are kept, however many)."
        ),
        "retrieval.total": SignalSpec("integer", "Chunks the retriever returned."),
        "retrieval.set_size": SignalSpec(
            "integer",
            "Chunks in the conformal set before any max_kept cap; escalate when it is too large to be useful.",
        ),
        "retrieval.kept_fraction": SignalSpec(
            "number", "set_size / total (0 when nothing was retrieved); 1.0: the threshold separated nothing."
        ),
        "retrieval.capped": SignalSpec(
            "bool", "max_kept dropped chunks of the conformal set (the coverage guarantee no longer holds)."
        ),
        "retrieval.max_score": SignalSpec("number", "Best retriever score among the chunks (-1e9 when none)."),
        "retrieval.threshold": SignalSpec("number", "The calibrated nonconformity threshold at the policy's alpha."),
    },
    build=_build,
    description="CONFLARE: keep retrieved chunks that pass a conformally calibrated threshold.",
    artifacts=lambda config: {"calibration": config.calibration},
    explain=explain,
)
