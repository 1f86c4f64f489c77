"""CONFLARE's split-conformal calibration of a retrieval threshold (Rouzrokh et al., 2024).

For each calibration query the *nonconformity* of its retrieved list is how far down the list its best
relevant chunk sits, in one of three measures (``score_kind``):

* ``similarity`` (the paper): ``a = -s*``, with ``s*`` the similarity of the best relevant chunk;
  a chunk is kept when ``-s <= q``, i.e. ``s >= -q``.
* ``relative``: ``a = s_top - s*``, the gap to the query's own top score; keep when ``s_top - s <= q``.
* ``rank``: ``a = r*``, the 0-based rank of the best relevant chunk; keep the first ``q + 1`` chunks.

With n calibration scores and level alpha, ``q`` is the k-th smallest score, ``k = ceil((n+1)(1-alpha))``
(the finite-sample split-conformal quantile; a plain percentile under-covers). If ``k > n``, ``q = +inf``
and everything is kept. A query whose relevant chunks were not retrieved at all scores ``+inf``.
Guarantee (exchangeability): on a new query, P(a relevant chunk is kept) >= 1 - alpha.
Retrievers that return *distances* (lower = closer) are handled by negating scores (``direction``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..artifacts import field, read_artifact, write_artifact
from ..call import ScoredDocument
from ..errors import ArtifactError, InputError, NotFittedError

ScoreKind = Literal["similarity", "relative", "rank"]
Direction = Literal["similarity", "distance"]
SCORE_KINDS: tuple[ScoreKind, ...] = ("similarity", "relative", "rank")
FORMAT_VERSION = 2  # 2: the checksum covers every field (1 covered only the scores)
KIND = "guardrails-uq/conformal-calibration"


class CoverageWarning(UserWarning):
    """alpha is too small for the number of calibration queries: the threshold keeps everything."""


def conformal_rank(n: int, alpha: float) -> int:
    """k = ceil((n + 1)(1 - alpha)), the 1-based order statistic of the split-conformal quantile."""
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must be in (0, 1), got {alpha}", source="alpha")
    return math.ceil((n + 1) * (1.0 - alpha) - 1e-12)


def _oriented(scores: np.ndarray, direction: Direction) -> np.ndarray:
    return scores if direction == "similarity" else -scores


def nonconformity(
    scores: Sequence[float], relevant: Sequence[bool], kind: ScoreKind, direction: Direction = "similarity"
) -> float:
    """Nonconformity of one retrieved list (scores in retrieval order; relevant flags aligned)."""
    values = _oriented(np.asarray(scores, dtype=np.float64), direction)
    flags = np.asarray(relevant, dtype=bool)
    if not flags.any():
        return math.inf
    if kind == "rank":
        order = np.argsort(-values, kind="stable")
        return float(np.nonzero(flags[order])[0][0])
    best = float(values[flags].max())
    if kind == "similarity":
        return -best
    return float(values.max()) - best


def keep_mask(scores: Sequence[float], threshold: float, kind: ScoreKind, direction: Direction) -> np.ndarray:
    """Which documents (in the given order) are on the kept side of ``threshold`` for this score kind."""
    values = _oriented(np.asarray(scores, dtype=np.float64), direction)
    if len(values) == 0 or math.isinf(threshold):
        return np.ones(len(values), dtype=bool)
    if kind == "similarity":
        return -values <= threshold
    if kind == "relative":
        return values.max() - values <= threshold
    order = np.argsort(-values, kind="stable")
    mask = np.zeros(len(values), dtype=bool)
    mask[order[: int(threshold) + 1]] = True
    return mask


@dataclass(frozen=True)
class CalibrationPair:
    """A calibration query and the ids of the chunks that answer it."""

    query: str
    relevant: frozenset[str]


class ConformalCalibrator:
    """Fit-then-apply conformal threshold (scikit-learn style). Learned state ends in ``_``.

    ``fit(lists, relevant)`` stores one nonconformity score per calibration query; ``threshold(alpha)``
    computes the conformal quantile for any alpha without refitting; ``save``/``load`` write a JSON artifact.
    """

    def __init__(
        self, *, score_kind: ScoreKind = "similarity", direction: Direction = "similarity", fingerprint: str = ""
    ) -> None:
        if score_kind not in SCORE_KINDS:
            raise InputError(f"score_kind must be one of {SCORE_KINDS}, got {score_kind!r}", source="score_kind")
        if direction not in ("similarity", "distance"):
            raise InputError(f"direction must be similarity or distance, got {direction!r}", source="direction")
        self.score_kind: ScoreKind = score_kind
        self.direction: Direction = direction
        self.fingerprint = fingerprint

    def fit(
        self, retrieved: Iterable[Sequence[ScoredDocument]], relevant: Iterable[Iterable[str]]
    ) -> ConformalCalibrator:
        """Learn from retrieved lists (one per calibration query) and the relevant ids of each."""
        scores = []
        for documents, wanted in zip(retrieved, relevant, strict=True):
            wanted = set(wanted)
            scores.append(
                nonconformity(
                    [d.score for d in documents], [d.id in wanted for d in documents], self.score_kind, self.direction
                )
            )
        if not scores:
            raise InputError("no calibration queries", source="fit")
        self.scores_ = np.sort(np.asarray(scores, dtype=np.float64))
        self.n_calibration_ = len(scores)
        self.created_ = time.time()
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "scores_"):
            raise NotFittedError("this ConformalCalibrator is not fitted: call fit() or load() first")

    def threshold(self, alpha: float, *, warn: bool = True) -> float:
        """The nonconformity quantile for level alpha (+inf keeps everything, with a CoverageWarning)."""
        self._check_fitted()
        k = conformal_rank(self.n_calibration_, alpha)
        if k > self.n_calibration_:
            if warn:
                warnings.warn(
                    f"alpha={alpha} needs at least {math.ceil(1 / alpha - 1)} calibration queries, have "
                    f"{self.n_calibration_}: every chunk will be kept",
                    CoverageWarning,
                    stacklevel=2,
                )
            return math.inf
        return float(self.scores_[k - 1])

    def keep(self, documents: Sequence[ScoredDocument], alpha: float) -> np.ndarray:
        """Mask of the documents kept at level alpha."""
        return keep_mask([d.score for d in documents], self.threshold(alpha), self.score_kind, self.direction)

    # -- artifact --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, object]:
        self._check_fitted()
        from .. import __version__

        scores = [None if math.isinf(s) else s for s in self.scores_.tolist()]
        return {
            "format": FORMAT_VERSION,
            "kind": KIND,
            "library_version": __version__,
            "created": self.created_,
            "score_kind": self.score_kind,
            "direction": self.direction,
            "fingerprint": self.fingerprint,
            "n": self.n_calibration_,
            "scores": scores,
        }

    def save(self, path: str | Path) -> Path:
        """Write the artifact (JSON; unretrieved queries' +inf scores are stored as null)."""
        return write_artifact(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ConformalCalibrator:
        """Read an artifact; ArtifactError when it is missing, damaged or of another format."""
        path = Path(path)
        fix = "recalibrate: guardrails-uq calibrate conformal ..."
        data = read_artifact(path, kind=KIND, version=FORMAT_VERSION, what="conformal calibration", fix=fix)
        scores = field(data, "scores", list, path, fix)
        n = field(data, "n", int, path, fix)
        if len(scores) != n or not scores:
            raise ArtifactError(path, f"calibration says n={n} but holds {len(scores)} scores", fix=fix)
        if not all(s is None or (isinstance(s, int | float) and not isinstance(s, bool)) for s in scores):
            raise ArtifactError(path, "calibration scores must be numbers (or null for +inf)", fix=fix)
        try:
            calibrator = cls(
                score_kind=field(data, "score_kind", str, path, fix),
                direction=field(data, "direction", str, path, fix),
                fingerprint=field(data, "fingerprint", str, path, fix),
            )
        except InputError as exc:
            raise ArtifactError(path, f"calibration header is invalid: {exc}", fix=fix) from None
        calibrator.scores_ = np.sort(np.asarray([math.inf if s is None else s for s in scores], dtype=np.float64))
        calibrator.n_calibration_ = n
        calibrator.created_ = float(field(data, "created", (int, float), path, fix))
        return calibrator

    def __repr__(self) -> str:
        fitted = f", n={self.n_calibration_}" if hasattr(self, "scores_") else ", unfitted"
        return f"ConformalCalibrator(score_kind={self.score_kind!r}, direction={self.direction!r}{fitted})"


def calibrate(
    retrieve: Callable[[str], Sequence[ScoredDocument]],
    pairs: Iterable[CalibrationPair | tuple[str, Iterable[str]]],
    *,
    score_kind: ScoreKind = "similarity",
    direction: Direction = "similarity",
    fingerprint: str,
) -> ConformalCalibrator:
    """Calibrate on the app's own retriever: ``retrieve(query)`` returns scored documents exactly as in
    production, so the threshold applies to the scores production produces. ``fingerprint`` names the
    retriever; the check refuses the artifact under a different one."""
    queries, relevant = [], []
    for pair in pairs:
        query, ids = (pair.query, pair.relevant) if isinstance(pair, CalibrationPair) else pair
        queries.append(query)
        relevant.append(set(ids))
    return ConformalCalibrator(score_kind=score_kind, direction=direction, fingerprint=fingerprint).fit(
        (retrieve(q) for q in queries), relevant
    )
