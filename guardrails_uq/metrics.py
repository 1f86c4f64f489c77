"""Evaluation metrics shared by every check's evaluation: AUROC and ROC points."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve: probability that a positive scores above a negative (ties count half).

    Higher score = predicted positive. NaN when one class is absent.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_scores = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[y].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def roc_points(scores: ArrayLike, labels: ArrayLike) -> list[dict[str, float]]:
    """(threshold, true-positive rate, false-positive rate) for "score > threshold" at every distinct score."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    points = []
    positives, negatives = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    for threshold in np.concatenate([[-np.inf], np.unique(s)]):
        flagged = s > threshold
        points.append(
            {
                "threshold": float(threshold),
                "tpr": float((flagged & y).sum() / positives),
                "fpr": float((flagged & ~y).sum() / negatives),
            }
        )
    return points


def _rejection_area(uncertainty: np.ndarray, quality: np.ndarray, max_rejection: float) -> float:
    """LM-Polygraph's rejection-curve area: mean quality of the retained (least uncertain) examples,
    averaged over rejection rates 0 .. max_rejection."""
    n = len(uncertainty)
    rejected = int(max_rejection * n)
    if rejected == 0:
        return float(quality.mean())
    order = np.argsort(uncertainty, kind="stable")
    cumulative = np.cumsum(quality[order])[-rejected:]
    retained = (cumulative / np.arange(n - rejected + 1, n + 1))[::-1]
    return float(retained.sum() / rejected)


def prr(uncertainty: ArrayLike, quality: ArrayLike, *, max_rejection: float = 1.0) -> float:
    """Prediction-Rejection Ratio (Malinin et al. 2017; LM-Polygraph's definition):
    (AUC_unc - AUC_random) / (AUC_oracle - AUC_random) over rejection rates up to ``max_rejection``.

    1 = the uncertainty ranks errors like an oracle, 0 = like chance, < 0 = worse. NaN when quality is
    constant."""
    u = np.asarray(uncertainty, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    random = _rejection_area(np.zeros_like(u), np.full_like(q, q.mean()), max_rejection)
    oracle = _rejection_area(-q, q, max_rejection)
    if oracle - random == 0:
        return float("nan")
    return float((_rejection_area(u, q, max_rejection) - random) / (oracle - random))


def deferral_curve(
    uncertainty: ArrayLike, small_correct: ArrayLike, large_correct: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(deferral rates, accuracy): defer the most uncertain fraction to the large model.

    With ``large_correct`` None a deferred answer counts as correct (an oracle large model)."""
    u = np.asarray(uncertainty, dtype=np.float64)
    small = np.asarray(small_correct, dtype=np.float64)
    large = np.ones_like(small) if large_correct is None else np.asarray(large_correct, dtype=np.float64)
    n = len(u)
    order = np.argsort(-u, kind="stable")  # most uncertain first
    gain = np.concatenate([[0.0], np.cumsum(large[order] - small[order])])
    rates = np.arange(n + 1) / n
    return rates, (small.sum() + gain) / n


def deferral_auc(uncertainty: ArrayLike, small_correct: ArrayLike, large_correct: ArrayLike | None = None) -> float:
    """Area under the deferral curve (trapezoid over deferral rates 0..1); higher is better."""
    rates, accuracy = deferral_curve(uncertainty, small_correct, large_correct)
    return float(np.sum((accuracy[1:] + accuracy[:-1]) / 2 * np.diff(rates)))
