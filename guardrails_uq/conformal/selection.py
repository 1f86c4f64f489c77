"""Choosing the score kind on the calibration data (``score_kind="auto"``).

Every kind gives the conformal guarantee; they differ in how many chunks they keep to give it, and which one
keeps fewest depends on the retriever and the corpus (``similarity`` on chatterbot, ``relative`` on a bank
knowledge base). So the choice is made on the calibration queries by K-fold cross-validation, repeated over
a few shuffles: for each candidate kind and each alpha of a grid, the conformal threshold of K-1 folds is
applied to the held-out fold, and the held-out coverage and chunks kept are averaged over all folds and
repeats. The chosen kind keeps the fewest chunks (mean over the grid) among the kinds whose cross-validated
coverage is at least ``1 - alpha - z * sqrt(alpha (1 - alpha) / n)`` at every alpha of the grid (a
Monte-Carlo slack of ``z`` binomial standard errors); ties go to the earlier kind in ``SCORE_KINDS``.

Validity. The chosen kind is then calibrated on *all* the queries, the same ones that chose it. Picking the
smallest of a few (at most five) conformal sets is a mild data reuse: each kind's threshold alone covers with
probability >= 1 - alpha, and the selection is driven by set size, not coverage, so what it can cost is
bounded by the spread of the few candidates' coverage around their target (a union bound over the candidates'
calibration-conditional coverage, each Beta(k, n + 1 - k) distributed). ``evaluate(kinds=["auto"])`` measures
it instead of bounding it: the whole procedure (selection by cross-validation, then calibration) runs on the
calibration half of each random split and coverage is measured on the other half. Splitting off selection
data would make the guarantee exact but would calibrate on fewer queries, which costs chunks at every alpha
(the order statistic moves outward as n shrinks); the measured loss from reuse is within Monte-Carlo error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .scores import SCORE_KINDS, ScoreKind, conformal_quantile, nonconformity_of

DEFAULT_ALPHAS = (0.05, 0.1, 0.2)
DEFAULT_FOLDS = 5
DEFAULT_REPEATS = 3
SLACK_Z = 2.0
#: The paper's kind: chosen when no kind can be assessed (fewer than two queries).
FALLBACK: ScoreKind = "similarity"


@dataclass(frozen=True)
class KindTable:
    """One score kind over a set of retrieved lists (one row per query).

    ``conformity``: each list's conformities sorted best first, padded with -inf; ``nonconformity``: each
    list's score (+inf when no relevant chunk was retrieved); ``best_position``: where its best relevant chunk
    sits in that order (+inf if none); ``lengths``: list lengths."""

    conformity: np.ndarray
    nonconformity: np.ndarray
    best_position: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_lists(cls, conformities: Sequence[np.ndarray], relevant: Sequence[Sequence[bool]]) -> KindTable:
        """From per-list conformities (any order) and the aligned relevant flags."""
        depth = max((len(c) for c in conformities), default=0)
        matrix = np.full((len(conformities), depth), -np.inf)
        best = np.full(len(conformities), np.inf)
        scores = np.full(len(conformities), np.inf)
        for i, (row, wanted) in enumerate(zip(conformities, relevant, strict=True)):
            values, flags = np.asarray(row, dtype=np.float64), np.asarray(wanted, dtype=bool)
            order = np.argsort(-values, kind="stable")
            matrix[i, : len(values)] = values[order]
            scores[i] = nonconformity_of(values, flags)
            if flags.any():
                best[i] = int((values > -scores[i]).sum())  # chunks ranked strictly above it
        return cls(matrix, scores, best, np.array([len(c) for c in conformities]))

    def subset(self, rows: np.ndarray) -> KindTable:
        return KindTable(self.conformity[rows], self.nonconformity[rows], self.best_position[rows], self.lengths[rows])

    def kept(self, threshold: float, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Chunks each list in ``rows`` keeps at ``threshold``."""
        if math.isinf(threshold):
            return self.lengths[rows]
        return (self.conformity[rows] >= -threshold).sum(axis=1)

    def covered(self, threshold: float, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Whether each list in ``rows`` keeps a relevant chunk at ``threshold``."""
        a = self.nonconformity[rows]
        return np.isfinite(a) & (a <= threshold)


@dataclass(frozen=True)
class Selection:
    """What ``auto`` chose and why: the cross-validation table (one row per kind and alpha) and the rule."""

    chosen: ScoreKind
    reason: str
    alphas: tuple[float, ...]
    folds: int
    repeats: int
    seed: int
    slack_z: float
    table: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "requested": "auto",
            "chosen": self.chosen,
            "reason": self.reason,
            "alphas": list(self.alphas),
            "folds": self.folds,
            "repeats": self.repeats,
            "seed": self.seed,
            "slack_z": self.slack_z,
            "table": [dict(row) for row in self.table],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Selection:
        """Inverse of ``to_dict``; KeyError/TypeError/ValueError on a malformed record."""
        if data["chosen"] not in SCORE_KINDS or not isinstance(data["table"], list):
            raise ValueError("selection record names an unknown kind or has no table")
        return cls(
            chosen=data["chosen"],
            reason=str(data["reason"]),
            alphas=tuple(float(a) for a in data["alphas"]),
            folds=int(data["folds"]),
            repeats=int(data["repeats"]),
            seed=int(data["seed"]),
            slack_z=float(data["slack_z"]),
            table=tuple(dict(row) for row in data["table"]),
        )

    def row(self, kind: str, alpha: float) -> dict[str, Any] | None:
        """The table row of ``kind`` at ``alpha``, if the grid has that alpha."""
        return next((r for r in self.table if r["score_kind"] == kind and math.isclose(r["alpha"], alpha)), None)


def cross_validate(
    tables: Mapping[ScoreKind, KindTable],
    alphas: Sequence[float],
    *,
    folds: int = DEFAULT_FOLDS,
    repeats: int = DEFAULT_REPEATS,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Held-out coverage and mean chunks kept per kind and alpha, over ``repeats`` shuffles of K folds.

    Every kind sees the same folds. Each query is held out once per repeat, so both numbers are means over
    ``n * repeats`` held-out lists. Needs at least two queries (``folds`` is lowered to n if larger)."""
    n = len(next(iter(tables.values())).nonconformity)
    folds = max(2, min(folds, n))
    rng = np.random.default_rng(seed)
    assignments = [np.array_split(rng.permutation(n), folds) for _ in range(repeats)]
    rows = []
    for kind, table in tables.items():
        for alpha in alphas:
            covered, kept = 0, 0
            for parts in assignments:
                for f, held_out in enumerate(parts):
                    fit_rows = np.concatenate([p for g, p in enumerate(parts) if g != f])
                    threshold = conformal_quantile(table.nonconformity[fit_rows], alpha)
                    covered += int(table.covered(threshold, held_out).sum())
                    kept += int(table.kept(threshold, held_out).sum())
            total = n * repeats
            rows.append({"score_kind": kind, "alpha": alpha, "coverage": covered / total, "kept_mean": kept / total})
    return rows


def choose(rows: Sequence[Mapping[str, Any]], n: int, *, slack_z: float = SLACK_Z) -> tuple[ScoreKind, str]:
    """The kind with the fewest chunks kept (mean over alphas) among those covering at every alpha."""
    kinds = list(dict.fromkeys(r["score_kind"] for r in rows))

    def covers(row: Mapping[str, Any]) -> bool:
        alpha = row["alpha"]
        return row["coverage"] >= 1 - alpha - slack_z * math.sqrt(alpha * (1 - alpha) / n)

    eligible = [k for k in kinds if all(covers(r) for r in rows if r["score_kind"] == k)]
    kept = {k: float(np.mean([r["kept_mean"] for r in rows if r["score_kind"] == k])) for k in kinds}
    if not eligible:
        best = max(kinds, key=lambda k: min(r["coverage"] - (1 - r["alpha"]) for r in rows if r["score_kind"] == k))
        return best, f"no kind reached its coverage within the slack; {best} came closest"
    chosen = min(eligible, key=lambda k: (kept[k], SCORE_KINDS.index(k)))
    others = ", ".join(f"{k} {kept[k]:.1f}" for k in kinds if k != chosen)
    return chosen, f"fewest chunks kept (mean {kept[chosen]:.1f}; {others}) among kinds that cover"


def select_kind(
    tables: Mapping[ScoreKind, KindTable],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    *,
    folds: int = DEFAULT_FOLDS,
    repeats: int = DEFAULT_REPEATS,
    seed: int = 0,
    slack_z: float = SLACK_Z,
) -> Selection:
    """Cross-validate every candidate in ``tables`` and choose one (see the module docstring)."""
    n = len(next(iter(tables.values())).nonconformity)
    alphas = tuple(float(a) for a in alphas)
    if n < 2:
        chosen: ScoreKind = FALLBACK if FALLBACK in tables else next(iter(tables))
        return Selection(chosen, "fewer than two queries: nothing to cross-validate", alphas, 0, 0, seed, slack_z, ())
    rows = cross_validate(tables, alphas, folds=folds, repeats=repeats, seed=seed)
    chosen, reason = choose(rows, n, slack_z=slack_z)
    return Selection(chosen, reason, alphas, max(2, min(folds, n)), repeats, seed, slack_z, tuple(rows))
