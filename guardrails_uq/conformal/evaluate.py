"""Empirical coverage and efficiency of conformal filtering over random calibration/test splits.

Every retrieved list is reduced to three per-query quantities, computed once: its scores sorted best
first, the 0-based rank of its best relevant chunk (``inf`` if none was retrieved), and its nonconformity
for each score kind. A split then costs only a quantile and a few vectorised comparisons.

Because the split is uniformly random, the mean test coverage over splits of a fixed data set has
expectation >= 1 - alpha (exchangeability under permutation), so the only slack is Monte-Carlo error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .calibration import SCORE_KINDS, ScoreKind, conformal_rank


@dataclass(frozen=True)
class RetrievedSet:
    """Per query: scores best first (rows padded with -inf), rank of the best relevant, list lengths."""

    scores: np.ndarray  # (queries, depth), descending, -inf padding
    best_rank: np.ndarray  # (queries,), float, inf if no relevant retrieved
    lengths: np.ndarray

    @classmethod
    def from_lists(cls, scores: Sequence[Sequence[float]], relevant: Sequence[Sequence[bool]]) -> RetrievedSet:
        depth = max(len(s) for s in scores)
        matrix = np.full((len(scores), depth), -np.inf)
        best = np.full(len(scores), np.inf)
        for i, (row, flags) in enumerate(zip(scores, relevant, strict=True)):
            order = np.argsort(-np.asarray(row, dtype=np.float64), kind="stable")
            matrix[i, : len(row)] = np.asarray(row, dtype=np.float64)[order]
            hits = np.nonzero(np.asarray(flags, dtype=bool)[order])[0]
            if len(hits):
                best[i] = hits[0]
        return cls(matrix, best, np.array([len(s) for s in scores]))

    def nonconformity(self, kind: ScoreKind) -> np.ndarray:
        """Per-query nonconformity (matches calibration.nonconformity)."""
        finite = np.isfinite(self.best_rank)
        out = np.full(len(self.best_rank), np.inf)
        rows = np.nonzero(finite)[0]
        best = self.scores[rows, self.best_rank[rows].astype(int)]
        if kind == "rank":
            out[rows] = self.best_rank[rows]
        elif kind == "similarity":
            out[rows] = -best
        else:
            out[rows] = self.scores[rows, 0] - best
        return out

    def kept(self, kind: ScoreKind, threshold: float, rows: np.ndarray) -> np.ndarray:
        """How many chunks each query in ``rows`` keeps at ``threshold`` (always a best-first prefix)."""
        if math.isinf(threshold):
            return self.lengths[rows]
        if kind == "rank":
            return np.minimum(self.lengths[rows], int(threshold) + 1)
        scores = self.scores[rows]
        if kind == "similarity":
            return (scores >= -threshold).sum(axis=1)
        return (scores[:, :1] - scores <= threshold).sum(axis=1)


def evaluate(
    data: RetrievedSet,
    alphas: Sequence[float],
    *,
    splits: int = 100,
    calibration_fraction: float = 0.5,
    kinds: Sequence[ScoreKind] = SCORE_KINDS,
    max_kept: int | None = None,
    seed: int = 0,
) -> dict[str, list[dict[str, object]]]:
    """Coverage (fraction of test queries with a relevant chunk kept) and chunks kept, per kind and alpha,
    averaged over random splits; plus fixed top-k and fixed-cutoff baselines on all queries."""
    rng = np.random.default_rng(seed)
    n = len(data.best_rank)
    n_cal = round(n * calibration_fraction)
    permutations = [rng.permutation(n) for _ in range(splits)]
    results = []
    for kind in kinds:
        a = data.nonconformity(kind)
        for alpha in alphas:
            coverage, coverage_capped, kept_all = [], [], []
            for perm in permutations:
                cal, test = perm[:n_cal], perm[n_cal:]
                k = conformal_rank(n_cal, alpha)
                threshold = math.inf if k > n_cal else float(np.sort(a[cal])[k - 1])
                kept = data.kept(kind, threshold, test)
                coverage.append(float((data.best_rank[test] < kept).mean()))
                if max_kept is not None:
                    coverage_capped.append(float((data.best_rank[test] < np.minimum(kept, max_kept)).mean()))
                kept_all.append(kept)
            kept_flat = np.concatenate(kept_all)
            row: dict[str, object] = {
                "score_kind": kind,
                "alpha": alpha,
                "coverage_mean": float(np.mean(coverage)),
                "coverage_std": float(np.std(coverage)),
                "kept_mean": float(kept_flat.mean()),
                "kept_median": float(np.median(kept_flat)),
            }
            if max_kept is not None:
                row["max_kept"] = max_kept
                row["coverage_capped_mean"] = float(np.mean(coverage_capped))
                row["kept_capped_mean"] = float(np.minimum(kept_flat, max_kept).mean())
            results.append(row)
    all_rows = np.arange(n)
    baselines = []
    for k in (1, 3, 5, 10, 20):
        kept = np.minimum(data.lengths, k)
        baselines.append(
            {"baseline": f"top-{k}", "coverage": float((data.best_rank < kept).mean()), "kept_mean": float(kept.mean())}
        )
    for cutoff in (0.3, 0.5, 0.7):
        kept = data.kept("similarity", -cutoff, all_rows)
        baselines.append(
            {
                "baseline": f"similarity>={cutoff}",
                "coverage": float((data.best_rank < kept).mean()),
                "kept_mean": float(kept.mean()),
            }
        )
    return {"results": results, "baselines": baselines}
