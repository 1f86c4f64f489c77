"""Empirical coverage and efficiency of conformal filtering over random calibration/test splits.

Every retrieved list is reduced once, per score kind, to its conformities sorted best first and its
nonconformity (:class:`~.selection.KindTable`); a split then costs only a quantile and a few vectorised
comparisons. ``auto`` is evaluated as it is used: on the calibration half of each split the kind is chosen
by cross-validation and calibrated, and coverage is measured on the other half, so its numbers include the
cost of choosing the kind on the calibration data.

Because the split is uniformly random, the mean test coverage over splits of a fixed data set has
expectation >= 1 - alpha (exchangeability under permutation), so the only slack is Monte-Carlo error.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .calibration import ConformalCalibrator
from .scores import HYBRID_WEIGHT, LEXICAL_KINDS, SCORE_KINDS, Direction, ScoreKind, conformal_quantile, conformity
from .selection import DEFAULT_ALPHAS, DEFAULT_FOLDS, DEFAULT_REPEATS, KindTable, select_kind


@dataclass(frozen=True)
class RetrievedSet:
    """Per query: raw scores best first (rows padded with -inf), rank of the best relevant, list lengths,
    and one :class:`KindTable` per score kind that can be computed (lexical kinds need queries and texts)."""

    scores: np.ndarray  # (queries, depth), descending, -inf padding
    best_rank: np.ndarray  # (queries,), float, inf if no relevant retrieved
    lengths: np.ndarray
    tables: Mapping[ScoreKind, KindTable]

    @classmethod
    def from_lists(
        cls,
        scores: Sequence[Sequence[float]],
        relevant: Sequence[Sequence[bool]],
        *,
        queries: Sequence[str] | None = None,
        texts: Sequence[Sequence[str]] | None = None,
        direction: Direction = "similarity",
        hybrid_weight: float = HYBRID_WEIGHT,
    ) -> RetrievedSet:
        """From the retriever's lists; with ``queries`` and ``texts`` (aligned) the lexical kinds too."""
        lexical = queries is not None and texts is not None
        tables = {}
        for kind in SCORE_KINDS:
            if kind in LEXICAL_KINDS and not lexical:
                continue
            conformities = [
                conformity(
                    row,
                    kind,
                    direction,
                    query=queries[i] if queries is not None else None,
                    texts=texts[i] if texts is not None else None,
                    weight=hybrid_weight,
                )
                for i, row in enumerate(scores)
            ]
            tables[kind] = KindTable.from_lists(conformities, relevant)
        similarity = tables["similarity"]
        raw = similarity.conformity if direction == "similarity" else -similarity.conformity
        return cls(raw, tables["rank"].best_position, similarity.lengths, tables)

    @property
    def kinds(self) -> tuple[ScoreKind, ...]:
        return tuple(self.tables)

    def table(self, kind: ScoreKind) -> KindTable:
        if kind not in self.tables:
            raise InputError(f"score kind {kind!r} needs the queries and the chunks' texts", source="evaluate")
        return self.tables[kind]

    def nonconformity(self, kind: ScoreKind) -> np.ndarray:
        """Per-query nonconformity (matches calibration.nonconformity)."""
        return self.table(kind).nonconformity

    def kept(self, kind: ScoreKind, threshold: float, rows: np.ndarray) -> np.ndarray:
        """How many chunks each query in ``rows`` keeps at ``threshold`` (always a best-first prefix)."""
        return self.table(kind).kept(threshold, rows)


def _auto_choices(
    tables: Mapping[ScoreKind, KindTable], permutations: Sequence[np.ndarray], n_cal: int, options: Mapping[str, Any]
) -> list[ScoreKind]:
    """The kind ``auto`` picks on the calibration half of each split."""
    choices = []
    for perm in permutations:
        cal = perm[:n_cal]
        choices.append(select_kind({k: t.subset(cal) for k, t in tables.items()}, **options).chosen)
    return choices


def _row(kind: str, alpha: float, coverage: list, capped: list, kept_all: list, max_kept: int | None) -> dict:
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
        row["coverage_capped_mean"] = float(np.mean(capped))
        row["kept_capped_mean"] = float(np.minimum(kept_flat, max_kept).mean())
    return row


def _baselines(data: RetrievedSet) -> list[dict[str, object]]:
    all_rows = np.arange(len(data.best_rank))
    baselines: list[dict[str, object]] = []
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
    return baselines


def evaluate(
    data: RetrievedSet,
    alphas: Sequence[float],
    *,
    splits: int = 100,
    calibration_fraction: float = 0.5,
    kinds: Sequence[str] | None = None,
    max_kept: int | None = None,
    seed: int = 0,
    select_alphas: Sequence[float] = DEFAULT_ALPHAS,
    folds: int = DEFAULT_FOLDS,
    repeats: int = DEFAULT_REPEATS,
    candidates: Sequence[ScoreKind] | None = None,
) -> dict[str, Any]:
    """Coverage (fraction of test queries with a relevant chunk kept) and chunks kept, per kind and alpha,
    averaged over random splits; plus fixed top-k and fixed-cutoff baselines on all queries.

    ``kinds`` defaults to every kind ``data`` has, then ``"auto"``. With ``"auto"``, its rows also count
    which kind it picked over the splits (``picks``), and ``selection`` is what it picks on all the queries
    (what ``calibrate conformal`` would write); ``candidates`` limits the kinds it chooses among."""
    kinds = [*data.kinds, "auto"] if kinds is None else list(kinds)
    rng = np.random.default_rng(seed)
    n = len(data.best_rank)
    n_cal = round(n * calibration_fraction)
    permutations = [rng.permutation(n) for _ in range(splits)]
    options: dict[str, Any] = {"alphas": tuple(select_alphas), "folds": folds, "repeats": repeats, "seed": seed}
    pool = {k: t for k, t in data.tables.items() if candidates is None or k in candidates}
    if not pool:
        raise InputError(f"no candidate kind among {list(candidates or [])} can be scored here", source="evaluate")
    auto = _auto_choices(pool, permutations, n_cal, options) if "auto" in kinds else []
    results = []
    for kind in kinds:
        for alpha in alphas:
            coverage, coverage_capped, kept_all = [], [], []
            for s, perm in enumerate(permutations):
                cal, test = perm[:n_cal], perm[n_cal:]
                table = data.table(auto[s] if kind == "auto" else kind)  # type: ignore[arg-type]
                threshold = conformal_quantile(table.nonconformity[cal], alpha)
                kept = table.kept(threshold, test)
                coverage.append(float(table.covered(threshold, test).mean()))
                if max_kept is not None:
                    coverage_capped.append(float((table.best_position[test] < np.minimum(kept, max_kept)).mean()))
                kept_all.append(kept)
            row = _row(kind, alpha, coverage, coverage_capped, kept_all, max_kept)
            if kind == "auto":
                row["picks"] = dict(Counter(auto).most_common())
            results.append(row)
    report: dict[str, Any] = {"results": results, "baselines": _baselines(data)}
    if "auto" in kinds:
        report["selection"] = select_kind(pool, **options).to_dict()
    return report


def evaluate_calibration(
    data: RetrievedSet, calibrator: ConformalCalibrator, alphas: Sequence[float]
) -> list[dict[str, Any]]:
    """Held-out coverage and chunks kept of a calibration artifact on ``data`` (queries it was not fitted
    on), at each alpha: the artifact's own kind and thresholds, no refitting."""
    table = data.table(calibrator.kind)
    rows = []
    for alpha in alphas:
        threshold = calibrator.threshold(alpha, warn=False)
        kept = table.kept(threshold)
        rows.append(
            {
                "score_kind": calibrator.kind,
                "alpha": alpha,
                "coverage": float(table.covered(threshold).mean()),
                "kept_mean": float(kept.mean()),
                "kept_median": float(np.median(kept)),
                "threshold": threshold if math.isfinite(threshold) else None,
            }
        )
    return rows


__all__ = ["RetrievedSet", "evaluate", "evaluate_calibration"]
