"""Policy section ``guidelines`` (Guide-Align): registry entry and configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from ..checks import CheckDeps, CheckSpec, SignalSpec
from ..policy.schema import CheckConfig


class GuidelinesConfig(CheckConfig):
    """Retrieve the written guidelines that apply to a request and inject them into the prompt."""

    library: str = Field(description="Guideline library, YAML or JSONL (relative to the policy).")
    top_k: int = Field(default=4, ge=1, le=50, description="Most guidelines injected (the paper uses 6).")
    min_score: float = Field(default=0.35, ge=-1, le=1, description="Least cosine similarity to the request.")
    dedup: float = Field(default=0.9, gt=0, le=1, description="Drop a candidate this similar to a kept guideline.")
    inject: bool = Field(default=True, description="Rewrite the prompt (a system message); false: signals only.")
    calibration: str | None = Field(
        default=None,
        description="Harmful-request detector from `guardrails-uq calibrate guidelines` (relative to the policy); "
        "publishes guidelines.harm_prob and guidelines.flagged.",
    )
    target_fpr: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="False-positive rate on benign requests that guidelines.flagged may have (finite-sample "
        "bound from the calibration's benign requests); default: the calibration's own target.",
    )

    languages: list[str] = Field(
        default_factory=lambda: ["en"],
        min_length=1,
        description="Languages the embedder reads (codes from guardrails_uq.guidelines.language: en, fr, es, de, it, "
        "pt, nl, or a script such as cyrillic); a turn in another one sets guidelines.unreadable.",
    )

    @model_validator(mode="after")
    def _target_needs_calibration(self) -> GuidelinesConfig:
        if self.target_fpr is not None and self.calibration is None:
            raise ValueError("target_fpr needs calibration: (an artifact from `guardrails-uq calibrate guidelines`)")
        return self


def _resolve(path: str, base_dir: Path) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else base_dir / candidate


def _build(config: Any, base_dir: Path, deps: CheckDeps) -> Any:
    from .check import GuidelinesCheck

    calibration = _resolve(config.calibration, base_dir) if config.calibration else None
    return GuidelinesCheck.from_config(config, _resolve(config.library, base_dir), deps.embedder, calibration)


def explain(config: Any, base_dir: Path) -> list[str]:
    """Where each threshold of this section comes from (target, n, achieved rate), one line each; for
    ``policy check``. Reads the calibration artifact (ArtifactError when it is unusable)."""
    if not config.calibration:
        return ["guidelines.flagged: no calibration (guidelines.harm_prob and guidelines.flagged are null)"]
    from .calibration import HarmDetector

    path = _resolve(config.calibration, base_dir)
    detector = HarmDetector.load(path)
    return [f"{detector.describe(config.target_fpr)} (from {config.calibration})", detector.describe_recall()]


def verify(config: Any, base_dir: Path, deps: CheckDeps) -> list[str]:
    """``policy check``: the library, its saved index (checksums; ArtifactError when damaged) and the calibration
    (checksum, embedder, library, target), with the loaders the Guard uses; nothing is embedded or written."""
    from ..artifacts import calibrated_threshold
    from .calibration import FIX, HarmDetector
    from .check import GuidelinesCheck
    from .index import GuidelineIndex
    from .library import GuidelineLibrary

    library = GuidelineLibrary.load(_resolve(config.library, base_dir))
    folder = GuidelineIndex.folder_of(library)
    index = GuidelineIndex.saved(folder, library, deps.embedder) if folder is not None else None
    warnings = []
    if index is None:
        warnings.append(
            f"guidelines.library: no index of this library for embedder {deps.embedder.name!r} in {folder}: the Guard "
            f"builds it when it starts (embeds {len(library)} guidelines)"
        )
    if not config.calibration:
        return warnings
    detector = HarmDetector.load(_resolve(config.calibration, base_dir))
    detector.check_matches(deps.embedder.name, library, path=detector.loaded_from)
    if index is not None:
        GuidelinesCheck(index, detector=detector, target_fpr=config.target_fpr)  # what the Guard checks at start
    else:
        calibrated_threshold(detector, config.target_fpr, FIX)
    return warnings + detector.recall_warnings(config.target_fpr)


SPEC = CheckSpec(
    name="guidelines",
    phase="input",
    rewrites=frozenset({"messages"}),
    waits=False,
    config=GuidelinesConfig,
    signals={
        "guidelines.count": SignalSpec("integer", "Guidelines retrieved for the request (0 to top_k)."),
        "guidelines.top_score": SignalSpec(
            "number", "Similarity of the best guideline (0 when none passed min_score)."
        ),
        "guidelines.ids": SignalSpec("list", "Ids of the retrieved guidelines, best first."),
        "guidelines.categories": SignalSpec("list", "Their categories (with repeats), best first."),
        "guidelines.harm_prob": SignalSpec(
            "number",
            "P(the request is harmful) from the calibrated detector (embedding + guideline similarity), "
            "or null without a calibration.",
        ),
        "guidelines.flagged": SignalSpec(
            "bool",
            "harm_prob above the threshold calibrated to target_fpr on benign requests, or null without a calibration.",
        ),
        "guidelines.hidden": SignalSpec(
            "list",
            "Hidden channels found in any turn and decoded before scoring (tags, base64, confusables, leetspeak); "
            "empty for plain text.",
        ),
        "guidelines.language": SignalSpec(
            "string", "Language of the request as read (en, fr, es, de, it, pt, nl, und, or a script name)."
        ),
        "guidelines.unreadable": SignalSpec(
            "bool",
            "Some turn is in a language the embedder does not read (outside guidelines.languages): its harm score "
            "means little; escalate it.",
        ),
    },
    build=_build,
    description="Guide-Align: retrieve applicable guidelines and inject them into the prompt.",
    artifacts=lambda config: {"library": config.library, "calibration": config.calibration},
    explain=explain,
    verify=verify,
)
