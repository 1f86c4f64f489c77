"""CONFLARE's split-conformal calibration of a retrieval threshold (Rouzrokh et al., 2024).

For each calibration query the *nonconformity* of its retrieved list is how far down the list its best
relevant chunk sits, in one of the measures of :mod:`.scores` (``score_kind``):

* ``similarity`` (the paper): ``a = -s*``, with ``s*`` the similarity of the best relevant chunk;
  a chunk is kept when ``-s <= q``, i.e. ``s >= -q``.
* ``relative``: ``a = s_top - s*``, the gap to the query's own top score; keep when ``s_top - s <= q``.
* ``rank``: ``a = r*``, the 0-based rank of the best relevant chunk; keep the first ``q + 1`` chunks.
* ``hybrid`` and ``hybrid-relative``: the same two on the dense score fused with BM25 over the list's texts.
* ``auto`` (the default): the kind that keeps the fewest chunks at equal coverage, chosen on the calibration
  queries by cross-validation (:mod:`.selection`) and recorded in the artifact with its table.

With n calibration scores and level alpha, ``q`` is the k-th smallest score, ``k = ceil((n+1)(1-alpha))``
(the finite-sample split-conformal quantile; a plain percentile under-covers). If ``k > n``, ``q = +inf``
and everything is kept. A query whose relevant chunks were not retrieved at all scores ``+inf``.
Guarantee (exchangeability): on a new query, P(a relevant chunk is kept) >= 1 - alpha (for ``auto``, up to
the mild data reuse of choosing among five kinds on the same queries: see :mod:`.selection`).
Retrievers that return *distances* (lower = closer) are handled by negating scores (``direction``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..artifacts import field, read_artifact, write_artifact
from ..call import ScoredDocument
from ..errors import ArtifactError, InputError, NotFittedError
from .scores import (
    HYBRID_WEIGHT,
    LEXICAL_KINDS,
    LEXICAL_SCHEME,
    SCORE_KINDS,
    Direction,
    ScoreKind,
    conformal_rank,
    conformity,
    keep_mask,
    kept_by_conformity,
    nonconformity,
)
from .selection import DEFAULT_ALPHAS, DEFAULT_FOLDS, DEFAULT_REPEATS, KindTable, Selection, select_kind

KindChoice = ScoreKind | Literal["auto"]
KIND_CHOICES: tuple[str, ...] = (*SCORE_KINDS, "auto")
FORMAT_VERSION = 2  # 2: the checksum covers every field (1 covered only the scores)
KIND = "guardrails-uq/conformal-calibration"
__all__ = [
    "FORMAT_VERSION",
    "KIND",
    "KIND_CHOICES",
    "SCORE_KINDS",
    "CalibrationPair",
    "ConformalCalibrator",
    "CoverageWarning",
    "Direction",
    "KindChoice",
    "ScoreKind",
    "calibrate",
    "conformal_rank",
    "keep_mask",
    "nonconformity",
]


class CoverageWarning(UserWarning):
    """alpha is too small for the number of calibration queries: the threshold keeps everything."""


@dataclass(frozen=True)
class CalibrationPair:
    """A calibration query and the ids of the chunks that answer it."""

    query: str
    relevant: frozenset[str]


class ConformalCalibrator:
    """Fit-then-apply conformal threshold (scikit-learn style). Learned state ends in ``_``.

    ``fit(lists, relevant, queries)`` stores one nonconformity score per calibration query for the score kind
    in use (``score_kind_``: the requested kind, or the one ``auto`` chose, with ``selection_`` saying why);
    ``threshold(alpha)`` computes the conformal quantile for any alpha without refitting; ``save``/``load``
    write a JSON artifact. Lexical kinds need the queries and every document's text; ``auto`` tries them
    only when both are there. ``candidates`` limits the kinds ``auto`` chooses among: relative, rank and
    hybrid-relative always keep the top chunk (``KEEPS_TOP_KINDS``), so a policy that abstains when
    ``retrieval.kept == 0`` should calibrate with ``candidates=("similarity", "hybrid")``.
    """

    def __init__(
        self,
        *,
        score_kind: KindChoice = "auto",
        direction: Direction = "similarity",
        fingerprint: str = "",
        hybrid_weight: float = HYBRID_WEIGHT,
        select_alphas: Sequence[float] = DEFAULT_ALPHAS,
        folds: int = DEFAULT_FOLDS,
        repeats: int = DEFAULT_REPEATS,
        seed: int = 0,
        candidates: Sequence[ScoreKind] = SCORE_KINDS,
    ) -> None:
        if score_kind not in KIND_CHOICES:
            raise InputError(f"score_kind must be one of {KIND_CHOICES}, got {score_kind!r}", source="score_kind")
        if direction not in ("similarity", "distance"):
            raise InputError(f"direction must be similarity or distance, got {direction!r}", source="direction")
        if not (math.isfinite(hybrid_weight) and hybrid_weight >= 0):
            raise InputError(f"hybrid_weight must be a finite number >= 0, got {hybrid_weight}", source="hybrid_weight")
        if not select_alphas or not all(0 < a < 1 for a in select_alphas):
            raise InputError(f"select_alphas must be levels in (0, 1), got {select_alphas}", source="select_alphas")
        unknown = [k for k in candidates if k not in SCORE_KINDS]
        if not candidates or unknown:
            raise InputError(
                f"candidates must be kinds among {SCORE_KINDS}, got {list(candidates)}", source="candidates"
            )
        self.score_kind: KindChoice = score_kind
        self.candidates: tuple[ScoreKind, ...] = tuple(k for k in SCORE_KINDS if k in candidates)
        self.direction: Direction = direction
        self.fingerprint = fingerprint
        self.hybrid_weight = float(hybrid_weight)
        self.select_alphas = tuple(float(a) for a in select_alphas)
        self.folds, self.repeats, self.seed = folds, repeats, seed

    @property
    def kind(self) -> ScoreKind:
        """The score kind in use: the fitted (or loaded) one; before fitting, the requested one unless auto."""
        fitted = getattr(self, "score_kind_", None)
        if fitted is not None:
            return fitted
        if self.score_kind == "auto":
            raise NotFittedError("score_kind='auto' chooses its kind in fit(): call fit() or load() first")
        return self.score_kind

    def _candidates(self, lists: list[list[ScoredDocument]], queries: list[str] | None) -> tuple[ScoreKind, ...]:
        lexical_ok = queries is not None and all(d.text.strip() for documents in lists for d in documents)
        if self.score_kind != "auto":
            if self.score_kind in LEXICAL_KINDS and not lexical_ok:
                raise InputError(
                    f"score kind {self.score_kind!r} needs each calibration query and the text of every retrieved "
                    "document (the retriever must return texts)",
                    source="fit",
                )
            return (self.score_kind,)
        kinds = tuple(k for k in self.candidates if lexical_ok or k not in LEXICAL_KINDS)
        if not kinds:
            raise InputError(
                f"no candidate kind can be scored: {list(self.candidates)} need the queries and documents' texts",
                source="fit",
            )
        return kinds

    def _table(
        self, kind: ScoreKind, lists: list[list[ScoredDocument]], relevant: list[set[str]], queries
    ) -> KindTable:
        conformities = [
            conformity(
                [d.score for d in documents],
                kind,
                self.direction,
                query=queries[i] if queries is not None else None,
                texts=[d.text for d in documents],
                weight=self.hybrid_weight,
            )
            for i, documents in enumerate(lists)
        ]
        flags = [[d.id in wanted for d in documents] for documents, wanted in zip(lists, relevant, strict=True)]
        return KindTable.from_lists(conformities, flags)

    def fit(
        self,
        retrieved: Iterable[Sequence[ScoredDocument]],
        relevant: Iterable[Iterable[str]],
        queries: Iterable[str] | None = None,
    ) -> ConformalCalibrator:
        """Learn from retrieved lists (one per calibration query), the relevant ids of each and, for the
        lexical kinds, the queries themselves (aligned with the lists)."""
        lists = [list(documents) for documents in retrieved]
        wanted = [set(ids) for ids in relevant]
        texts = None if queries is None else list(queries)
        if len(wanted) != len(lists) or (texts is not None and len(texts) != len(lists)):
            raise InputError("retrieved lists, relevant ids and queries must be aligned", source="fit")
        if not lists:
            raise InputError("no calibration queries", source="fit")
        tables = {kind: self._table(kind, lists, wanted, texts) for kind in self._candidates(lists, texts)}
        if self.score_kind == "auto":
            selection = select_kind(tables, self.select_alphas, folds=self.folds, repeats=self.repeats, seed=self.seed)
            if len(tables) < len(self.candidates):
                selection = replace(selection, reason=selection.reason + "; lexical kinds not tried (no texts)")
            self.selection_: Selection | None = selection
            self.score_kind_: ScoreKind = selection.chosen
        else:
            self.selection_ = None
            self.score_kind_ = self.score_kind
        self.scores_ = np.sort(tables[self.score_kind_].nonconformity)
        self.n_calibration_ = len(lists)
        self.depth_: int | None = max(len(documents) for documents in lists)
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

    def conformity(self, documents: Sequence[ScoredDocument], query: str | None = None) -> np.ndarray:
        """Each document's conformity under the kind in use (higher = kept first); lexical kinds read
        ``query`` and the documents' texts."""
        return conformity(
            [d.score for d in documents],
            self.kind,
            self.direction,
            query=query,
            texts=[d.text for d in documents],
            weight=self.hybrid_weight,
        )

    def keep(self, documents: Sequence[ScoredDocument], alpha: float, query: str | None = None) -> np.ndarray:
        """Mask of the documents kept at level alpha (``query``: needed by the lexical kinds)."""
        return kept_by_conformity(self.conformity(documents, query), self.threshold(alpha))

    def loo_coverage(self, alpha: float) -> float:
        """Leave-one-out coverage at ``alpha``: the fraction of calibration queries whose relevant chunk the
        threshold of the *other* n - 1 queries keeps. Computed from the stored scores alone; its expectation is
        the coverage of a calibration on n - 1 queries, >= 1 - alpha (an honest held-out rate, up to the
        selection of the kind under auto)."""
        self._check_fitted()
        n = self.n_calibration_
        if n < 2:
            return float("nan")
        k = conformal_rank(n - 1, alpha)
        a = self.scores_
        if k > n - 1:
            return float(np.isfinite(a).mean())
        position = np.arange(n)
        others = np.where(position <= k - 1, a[min(k, n - 1)], a[k - 1])  # k-th smallest without query i
        return float((np.isfinite(a) & (a <= others)).mean())

    def origin(self, alpha: float) -> dict[str, Any]:
        """Where the threshold at ``alpha`` comes from, for ``policy check``: the target, n, the score kind and
        how it was chosen, the leave-one-out coverage and, under auto, the cross-validated coverage and
        chunks kept at this alpha when it was on the selection grid."""
        self._check_fitted()
        selection: Selection | None = getattr(self, "selection_", None)
        out: dict[str, Any] = {
            "target_coverage": 1 - alpha,
            "n": self.n_calibration_,
            "score_kind": self.kind,
            "chosen_by": "fixed" if selection is None else "auto",
            "threshold": self.threshold(alpha, warn=False),
            "loo_coverage": self.loo_coverage(alpha),
        }
        row = selection.row(self.kind, alpha) if selection is not None else None
        if row is not None:
            out["cv_coverage"], out["cv_kept_mean"] = row["coverage"], row["kept_mean"]
        return out

    # -- artifact --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, object]:
        self._check_fitted()
        from .. import __version__

        scores = [None if math.isinf(s) else s for s in self.scores_.tolist()]
        selection: Selection | None = getattr(self, "selection_", None)
        return {
            "format": FORMAT_VERSION,
            "kind": KIND,
            "library_version": __version__,
            "created": self.created_,
            "score_kind": self.kind,
            "direction": self.direction,
            "fingerprint": self.fingerprint,
            "hybrid_weight": self.hybrid_weight,
            "lexical": LEXICAL_SCHEME,
            "depth": getattr(self, "depth_", None),
            "selection": None if selection is None else selection.to_dict(),
            "n": self.n_calibration_,
            "scores": scores,
        }

    def save(self, path: str | Path) -> Path:
        """Write the artifact (JSON; unretrieved queries' +inf scores are stored as null)."""
        return write_artifact(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ConformalCalibrator:
        """Read an artifact; ArtifactError when it is missing, damaged, of another format, or scored with
        another lexical scorer than this version's. Artifacts from before ``auto`` (no ``selection``,
        ``hybrid_weight``, ``lexical`` or ``depth`` field) still load."""
        path = Path(path)
        fix = "recalibrate: guardrails-uq calibrate conformal ..."
        data = read_artifact(path, kind=KIND, version=FORMAT_VERSION, what="conformal calibration", fix=fix)
        scores = field(data, "scores", list, path, fix)
        n = field(data, "n", int, path, fix)
        if len(scores) != n or not scores:
            raise ArtifactError(path, f"calibration says n={n} but holds {len(scores)} scores", fix=fix)
        if not all(s is None or (isinstance(s, int | float) and not isinstance(s, bool)) for s in scores):
            raise ArtifactError(path, "calibration scores must be numbers (or null for +inf)", fix=fix)
        kind = field(data, "score_kind", str, path, fix)
        selection = _selection(data.get("selection"), kind, path, fix)
        if kind in LEXICAL_KINDS and data.get("lexical") != LEXICAL_SCHEME:
            raise ArtifactError(
                path,
                f"scored with lexical scorer {data.get('lexical')!r}, this version has {LEXICAL_SCHEME!r}",
                fix=fix,
            )
        try:
            calibrator = cls(
                score_kind="auto" if selection is not None else kind,
                direction=field(data, "direction", str, path, fix),
                fingerprint=field(data, "fingerprint", str, path, fix),
                hybrid_weight=float(data.get("hybrid_weight", HYBRID_WEIGHT)),
            )
        except (InputError, TypeError, ValueError) as exc:
            raise ArtifactError(path, f"calibration header is invalid: {exc}", fix=fix) from None
        if kind not in SCORE_KINDS:
            raise ArtifactError(path, f"calibration header is invalid: unknown score kind {kind!r}", fix=fix)
        calibrator.score_kind_ = kind
        calibrator.selection_ = selection
        calibrator.scores_ = np.sort(np.asarray([math.inf if s is None else s for s in scores], dtype=np.float64))
        calibrator.n_calibration_ = n
        calibrator.depth_ = data.get("depth") if isinstance(data.get("depth"), int) else None
        calibrator.created_ = float(field(data, "created", (int, float), path, fix))
        return calibrator

    def __repr__(self) -> str:
        fitted = f", n={self.n_calibration_}" if hasattr(self, "scores_") else ", unfitted"
        chosen = f" -> {self.score_kind_!r}" if self.score_kind == "auto" and hasattr(self, "score_kind_") else ""
        return f"ConformalCalibrator(score_kind={self.score_kind!r}{chosen}, direction={self.direction!r}{fitted})"


def _selection(record: object, kind: str, path: Path, fix: str) -> Selection | None:
    if record is None:
        return None
    try:
        if not isinstance(record, dict):
            raise TypeError("not an object")
        selection = Selection.from_dict(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(path, f"the score-kind selection record is malformed ({exc})", fix=fix) from None
    if selection.chosen != kind:
        raise ArtifactError(path, f"selection chose {selection.chosen!r} but the scores are {kind!r}", fix=fix)
    return selection


def calibrate(
    retrieve: Callable[[str], Sequence[ScoredDocument]],
    pairs: Iterable[CalibrationPair | tuple[str, Iterable[str]]],
    *,
    score_kind: KindChoice = "auto",
    direction: Direction = "similarity",
    fingerprint: str,
    hybrid_weight: float = HYBRID_WEIGHT,
    select_alphas: Sequence[float] = DEFAULT_ALPHAS,
) -> ConformalCalibrator:
    """Calibrate on the app's own retriever: ``retrieve(query)`` returns scored documents exactly as in
    production (same depth; with texts for the lexical kinds), so the threshold applies to the scores
    production produces. ``fingerprint`` names the retriever; the check refuses the artifact under a
    different one. ``score_kind="auto"`` chooses the kind by cross-validation (:mod:`.selection`)."""
    queries, relevant = [], []
    for pair in pairs:
        query, ids = (pair.query, pair.relevant) if isinstance(pair, CalibrationPair) else pair
        queries.append(query)
        relevant.append(set(ids))
    calibrator = ConformalCalibrator(
        score_kind=score_kind,
        direction=direction,
        fingerprint=fingerprint,
        hybrid_weight=hybrid_weight,
        select_alphas=select_alphas,
    )
    return calibrator.fit([retrieve(q) for q in queries], relevant, queries)
