"""Policy section ``answer_harm``: the harm detector run on the model's output (answers and tool calls)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from ..checks import CheckDeps, CheckSpec, SignalSpec
from ..policy.schema import CheckConfig

#: How the shipped answer calibration is rebuilt (the fix named by errors about it).
REBUILD = (
    "guardrails-uq answer-harm calibration-data -o D && guardrails-uq calibrate guidelines --library L "
    "--harmful D/harmful.jsonl --benign D/benign.jsonl --target-fpr 0.05 --l2 25 -o FILE"
)


class AnswerHarmConfig(CheckConfig):
    """Score the model's output (answer text and tool calls) with a harm detector calibrated on answers."""

    library: str = Field(
        description="Guideline library the calibration was made with (relative to the policy; usually the "
        "guidelines section's): the detector's features include the similarity to its categories."
    )
    calibration: str = Field(
        description="Detector from `guardrails-uq calibrate guidelines` fitted on labelled answers "
        "(`guardrails-uq answer-harm calibration-data`; relative to the policy). The request calibration "
        "(guidelines.calibration) flags benign how-to answers far above its target: calibrate on answers."
    )
    target_fpr: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="False-positive rate on benign answers that answer_harm.flagged may have (finite-sample bound "
        "from the calibration's benign texts of each source); default: the calibration's own target.",
    )


def _resolve(path: str, base_dir: Path) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else base_dir / candidate


def _build(config: Any, base_dir: Path, deps: CheckDeps) -> Any:
    from .check import AnswerHarmCheck

    return AnswerHarmCheck.from_config(
        _resolve(config.library, base_dir), _resolve(config.calibration, base_dir), deps.embedder, config.target_fpr
    )


def explain(config: Any, base_dir: Path) -> list[str]:
    """Where answer_harm.flagged's threshold comes from, one line (for ``policy check``)."""
    from ..guidelines.calibration import HarmDetector

    described = HarmDetector.load(_resolve(config.calibration, base_dir)).describe(config.target_fpr)
    return [described.replace("guidelines.flagged = harm_prob", "answer_harm.flagged = prob", 1)]


SPEC = CheckSpec(
    name="answer_harm",
    phase="output",
    config=AnswerHarmConfig,
    signals={
        "answer_harm.prob": SignalSpec(
            "number",
            "P(the output is harmful): the largest over the parts (sentences, word windows) of the answer and its "
            "tool calls, read as a reader reads them; 0 for an empty output.",
        ),
        "answer_harm.flagged": SignalSpec(
            "bool", "answer_harm.prob above the threshold calibrated to target_fpr on benign answers."
        ),
        "answer_harm.hidden": SignalSpec(
            "list", "Hidden channels decoded in the output before scoring (tags, base64, confusables, leetspeak)."
        ),
    },
    build=_build,
    rewrites=frozenset(),
    waits=False,
    description="Harm in answers: the harm detector run on the model's output, calibrated on answers.",
    artifacts=lambda config: {"library": config.library, "calibration": config.calibration},
    explain=explain,
)
