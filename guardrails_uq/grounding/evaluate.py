"""Evaluating the grounding check on labelled answers: AUROC, balanced accuracy, flagged rate per label.

Each answer goes through the check itself (``GroundingCheck.run`` on a call holding the question, the
context as documents and the answer), so the numbers are the policy's. Positive class: not supported
(contradicted or unsupported); the score is ``1 - grounding.support`` (higher = riskier); flagged is
``grounding.flagged``. Answers the check could not judge (no claims) count as not flagged and are counted
in ``unchecked``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..call import Call, Generation, Message, ScoredDocument
from ..metrics import auroc
from .check import GroundingCheck
from .data import LabelledAnswer
from .model import LABELS

SCORE = "grounding.support"


def _call(answer: LabelledAnswer) -> Call:
    return Call(
        messages=[Message(role="user", content=answer.question)] if answer.question else [],
        documents=[ScoredDocument(id=doc_id, text=text, score=1.0) for doc_id, text in answer.documents],
        generation=Generation(text=answer.answer),
    )


def _rates(labels: np.ndarray, flagged: np.ndarray, risk: np.ndarray) -> dict[str, Any]:
    positive = labels != "supported"
    score = auroc(risk, positive) if len(risk) else float("nan")
    tpr = float(flagged[positive].mean()) if positive.any() else float("nan")
    tnr = float(1.0 - flagged[~positive].mean()) if (~positive).any() else float("nan")
    balanced = (tpr + tnr) / 2
    return {
        "n": len(labels),
        "auroc": None if math.isnan(score) else round(score, 4),
        "balanced_accuracy": None if math.isnan(balanced) else round(balanced, 4),
        "flagged_rate": {
            label: round(float(flagged[labels == label].mean()), 4) if (labels == label).any() else None
            for label in LABELS
        },
    }


def evaluate_answers(
    check: GroundingCheck, answers: Sequence[LabelledAnswer], *, group_by: str | None = None
) -> dict[str, Any]:
    """The report ``guardrails-uq eval grounding --json`` prints (strict JSON: undefined rates are null)."""
    labels, flagged, risk, groups = [], [], [], []
    unchecked = 0
    for answer in answers:
        values = check.run(_call(answer)).values
        raw = values["grounding.support"]
        support = float(raw) if isinstance(raw, int | float) else None
        if support is None:
            unchecked += 1
        labels.append(answer.label)
        flagged.append(bool(values["grounding.flagged"]))
        risk.append(1.0 - support if support is not None else 0.0)
        groups.append(str(answer.get(group_by)) if group_by else "")
    y, f, r = np.asarray(labels), np.asarray(flagged, dtype=bool), np.asarray(risk)
    report: dict[str, Any] = {
        **_rates(y, f, r),
        "threshold": check.threshold,
        "score": SCORE,
        "unchecked": unchecked,
        "scorer": check.scorer.name,
    }
    if group_by:
        g = np.asarray(groups)
        report["groups"] = {value: _rates(y[g == value], f[g == value], r[g == value]) for value in sorted(set(groups))}
    return report
