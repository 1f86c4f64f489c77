"""Policy section ``injection``: instructions aimed at the model inside tool results and retrieved chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from ..checks import CheckDeps, CheckSpec, SignalSpec
from ..policy.schema import CheckConfig


class InjectionConfig(CheckConfig):
    """Score every tool result and retrieved chunk (hidden channels decoded) for instructions to the model."""

    calibration: str = Field(
        description="Detector from `guardrails-uq calibrate injection` (relative to the policy); it holds the "
        "model and the benign scores the threshold comes from."
    )
    target_fpr: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="False-positive rate on benign tool results that injection.flagged may have (split-conformal "
        "bound from the calibration's benign documents); default: the calibration's own target.",
    )
    drop: bool = Field(
        default=False,
        description="Withhold flagged documents from the model (they leave decision.documents) instead of only "
        "reporting them; a rule on injection.flagged can still abstain or escalate.",
    )
    max_windows: int = Field(
        default=2000,
        ge=1,
        description="Most windows (sentences and sentence pairs of every decoded piece) scored per call; more is "
        "a check failure that abstains whatever on_error says (the padding is the writer's: a work budget), never "
        "a partial check.",
    )


def _resolve(path: str, base_dir: Path) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else base_dir / candidate


def _build(config: Any, base_dir: Path, deps: CheckDeps) -> Any:
    from .calibration import InjectionDetector
    from .check import InjectionCheck

    detector = InjectionDetector.load(_resolve(config.calibration, base_dir))
    return InjectionCheck(
        detector, deps.embedder, target_fpr=config.target_fpr, drop=config.drop, max_windows=config.max_windows
    )


def explain(config: Any, base_dir: Path) -> list[str]:
    """Where injection.flagged's threshold comes from, one line (for ``policy check``)."""
    from .calibration import InjectionDetector

    detector = InjectionDetector.load(_resolve(config.calibration, base_dir))
    return [f"{detector.describe(config.target_fpr)} (from {config.calibration})"]


SPEC = CheckSpec(
    name="injection",
    phase="retrieval",
    rewrites=frozenset({"documents"}),
    waits=False,
    config=InjectionConfig,
    signals={
        "injection.score": SignalSpec(
            "number",
            "Highest P(instruction aimed at the model) over every window of every document of the phase (tool "
            "results, retrieved chunks), hidden channels decoded; 0 when there are no documents.",
        ),
        "injection.flagged": SignalSpec(
            "bool", "score above the threshold calibrated to target_fpr on benign tool results."
        ),
        "injection.span": SignalSpec("string", "The window (normalised text) that gave the highest score, or ''."),
        "injection.flagged_ids": SignalSpec("list", "Ids of the documents above the threshold."),
        "injection.channels": SignalSpec(
            "list",
            "Hidden channels found in the documents (html-comment, hidden-element, attribute, markdown-title, "
            "markdown-comment, base64, unicode-tags), sorted; their presence alone flags nothing.",
        ),
    },
    build=_build,
    description="Indirect prompt injection: instructions to the model in tool results and retrieved chunks.",
    artifacts=lambda config: {"calibration": config.calibration},
    explain=explain,
)
