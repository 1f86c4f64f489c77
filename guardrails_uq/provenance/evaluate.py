"""Evaluating the provenance check on answers labelled copied / not copied, at the check's threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from ..jsonl import read_jsonl
from ..metrics import auroc, roc_points
from .calibration import ProvenanceCalibration
from .check import ProvenanceCheck
from .index import CorpusIndex
from .score import score_text


def read_answers(path: str | Path) -> list[tuple[str, bool]]:
    """(text, copied) pairs from JSONL lines ``{"text": ..., "copied": true|false}``."""
    answers = []
    for number, record in read_jsonl(path):
        if not isinstance(record.get("text"), str):
            raise InputError('each line needs a string "text"', source=str(path), line=number)
        if not isinstance(record.get("copied"), bool):
            raise InputError('each line needs "copied": true or false', source=str(path), line=number)
        answers.append((record["text"], record["copied"]))
    return answers


def check_from_calibration(index_path: str | Path, calibration_path: str | Path) -> ProvenanceCheck:
    """The check a policy with this index and calibration builds (ArtifactError if they do not match)."""
    index = CorpusIndex.load(index_path)
    calibration = ProvenanceCalibration.load(calibration_path, index=index)
    return ProvenanceCheck(
        index,
        min_span=calibration.min_span,
        settings=calibration.settings_,
        threshold=calibration.threshold_,
        origin=calibration.origin(calibration_path),
    )


def check_from_policy(policy_path: str | Path) -> ProvenanceCheck:
    """The provenance check of the policy at ``policy_path`` (its index, min_span and threshold);
    InputError when the policy has no provenance section."""
    from ..checks import CheckDeps, registry
    from ..policy import load_policy

    policy = load_policy(policy_path)
    config = policy.section("provenance")
    if config is None:
        raise InputError("the policy has no provenance section", source=str(policy_path))
    check: ProvenanceCheck = registry()["provenance"].build(config, policy.base_dir, CheckDeps())  # type: ignore[assignment]
    return check


def evaluate(check: ProvenanceCheck, answers: list[tuple[str, bool]]) -> dict[str, Any]:
    """Detection rate and false-positive rate of ``provenance.flagged`` (score > the check's threshold),
    AUROC of ``provenance.score``, ROC points, and where the threshold comes from."""
    scores = [
        score_text(check.index, text, min_span=check.min_span, settings=check.settings).score for text, _ in answers
    ]
    labels = [copied for _, copied in answers]
    copied = [s for s, y in zip(scores, labels, strict=True) if y]
    clean = [s for s, y in zip(scores, labels, strict=True) if not y]
    threshold = check.threshold
    return {
        "threshold": threshold,
        "threshold_origin": check.origin.describe(),
        "score": "provenance.score",
        "min_span": check.min_span,
        "n_copied": len(copied),
        "n_clean": len(clean),
        "detection_rate": sum(s > threshold for s in copied) / len(copied) if copied else float("nan"),
        "false_positive_rate": sum(s > threshold for s in clean) / len(clean) if clean else float("nan"),
        "auroc": auroc(scores, labels),
        "roc": roc_points(scores, labels),
    }
