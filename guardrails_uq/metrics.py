"""Evaluation metrics shared by every check's evaluation: AUROC and ROC points."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
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


def roc_points(scores: Sequence[float], labels: Sequence[bool]) -> list[dict[str, float]]:
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
