"""Harmful-request detection with a stated false-positive rate: fit, calibrate, save, load.

``HarmDetector.fit(index, harmful, benign)`` splits the labelled requests (at random, seeded, stratified by
class and source) into a *fit* part and a *calibration* part. The logistic model (:mod:`.detector`) is fitted
on the fit part only (plus question-form paraphrases of its "how to" instructions). On the calibration part's n
benign requests, with scores s_(1) <= ... <= s_(n) (P(harmful) from the model), the threshold for a target
false-positive rate ``target`` is the order statistic ``t = s_(k)``, ``k = ceil((n + 1)(1 - target))``, and a
request is flagged when its score is > t. Guarantee (split conformal, finite sample): for a new benign request
exchangeable with the calibration ones, P(flagged) <= target (averaged over the draw of the calibration set;
its spread across draws is about sqrt(target / n)). If k > n there are too few benign requests for the target
and calibration is refused.

Group-conditional (the default when requests name their ``source``): the threshold is the largest of the
pooled order statistic and each source's own (sources with fewer than ``least_benign(target)`` calibration
requests only count in the pool), so the bound holds for each benign source separately: easy chit-chat cannot
buy a low pooled rate while realistic requests are flagged far more often. It still says nothing about
benign requests unlike every calibration source, and nothing about recall, which is measured (on the
calibration part's harmful requests, and cross-validated).

The artifact (JSON, sealed by a checksum over every field) holds the model, the sorted calibration scores
(benign by source, and harmful: a policy can state another target without refitting), the target, n, the
threshold, the achieved calibration rates, the embedder's name and the library's hash (a mismatch of either is
refused: the features would mean something else), and cross-validated rates when they were measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import field, labelled_digest, read_artifact, sorted_probabilities, write_artifact
from ..errors import ArtifactError, InputError, NotFittedError
from ..jsonl import read_jsonl
from ..metrics import auroc
from ..numbers import FRACTION, L2, SEED, TARGET_FPR, WEIGHT
from ..textnorm import read_as_model
from .detector import FEATURES, FEATURES_ID, LogisticModel, as_question, features, n_features, segments
from .index import GuidelineIndex
from .library import GuidelineLibrary

KIND = "guardrails-uq/guidelines-calibration"
FORMAT_VERSION = 1
FIX = "recalibrate: guardrails-uq calibrate guidelines --library L --harmful H.jsonl --benign B.jsonl -o FILE"
UNGROUPED = "(no source)"

#: Recall on one source of harmful examples below this, with at least LOW_RECALL_MIN_EXAMPLES of them, is warned
#: about by ``calibrate guidelines`` and ``policy check``: a pooled false-positive target can be met while a
#: whole kind of harmful request (one source) is missed.
LOW_RECALL = 0.8
LOW_RECALL_MIN_EXAMPLES = 2
#: Missed examples named per warning (each cut to 100 characters).
MISSED_SHOWN = 5


def fpr_rank(n: int, target_fpr: float) -> int:
    """k = ceil((n + 1)(1 - target)): the 1-based order statistic of n benign scores whose value, as a
    threshold, flags a new exchangeable benign request with probability <= target."""
    if not 0.0 < target_fpr < 1.0:
        raise InputError(f"target false-positive rate must be in (0, 1), got {target_fpr}", source="target_fpr")
    return math.ceil((n + 1) * (1.0 - target_fpr) - 1e-12)


def least_benign(target_fpr: float) -> int:
    """The fewest calibration benign requests for which ``target_fpr`` has a finite threshold."""
    return math.ceil(1.0 / target_fpr - 1.0 - 1e-9)


@dataclass(frozen=True)
class Request:
    """A labelled request: its text, where it comes from (the group it is calibrated with), its fitting weight."""

    text: str
    source: str = UNGROUPED
    weight: float = 1.0


def _requests(items: Iterable[str | Request]) -> list[Request]:
    return [item if isinstance(item, Request) else Request(item) for item in items]


def _unique(items: Iterable[Request]) -> list[Request]:
    """Read as the check reads them (:func:`~guardrails_uq.textnorm.read_as_model`), blank ones dropped, the
    first of repeated texts kept."""
    seen: dict[str, Request] = {}
    for item in items:
        text = read_as_model(item.text).text
        if text and text not in seen:
            seen[text] = Request(text, item.source, item.weight)
    return list(seen.values())


def _reindex(of: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the extra rows whose text is kept, their new text positions)."""
    keep = position[of] >= 0 if len(of) else np.zeros(0, dtype=bool)
    return keep, position[of[keep]]


@dataclass(frozen=True)
class Examples:
    """Labelled requests with their embeddings, the embeddings of their question-form paraphrases (fitting
    only) and of their other parts (:func:`.detector.segments`: a request's score is its parts' largest)."""

    texts: tuple[str, ...]
    harmful: np.ndarray  # bool, one per text
    sources: np.ndarray  # str, one per text
    weights: np.ndarray  # float, one per text (fitting only)
    vectors: np.ndarray  # (n, dim)
    variant_vectors: np.ndarray  # (m, dim)
    variant_of: np.ndarray  # (m,) row of the text each variant paraphrases
    segment_vectors: np.ndarray  # (s, dim) the parts of a text other than the text itself
    segment_of: np.ndarray  # (s,) row of the text each part belongs to

    @classmethod
    def embed(
        cls, embedder: Any, harmful: Sequence[str | Request], benign: Sequence[str | Request], *, augment: bool = True
    ) -> Examples:
        """Read, de-duplicate within each class, refuse a text in both classes, embed (one batch)."""
        bad, good = _unique(_requests(harmful)), _unique(_requests(benign))
        both = sorted({r.text for r in bad} & {r.text for r in good})
        if both:
            raise InputError(f"{len(both)} request(s) are labelled both harmful and benign, e.g. {both[0]!r}")
        rows = [*bad, *good]
        variants = [(i, q) for i, r in enumerate(rows) if augment and (q := as_question(r.text)) is not None]
        parts = [(i, part) for i, r in enumerate(rows) for part in segments(r.text)[1:]]
        texts = [*(r.text for r in rows), *(q for _, q in variants), *(p for _, p in parts)]
        vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
        n, m = len(rows), len(rows) + len(variants)
        return cls(
            texts=tuple(r.text for r in rows),
            harmful=np.array([True] * len(bad) + [False] * len(good)),
            sources=np.array([r.source for r in rows], dtype=object),
            weights=np.array([r.weight for r in rows], dtype=np.float64),
            vectors=vectors[:n],
            variant_vectors=vectors[n:m],
            variant_of=np.array([i for i, _ in variants], dtype=np.int64),
            segment_vectors=vectors[m:],
            segment_of=np.array([i for i, _ in parts], dtype=np.int64),
        )

    def take(self, rows: np.ndarray) -> Examples:
        """The examples at ``rows`` (with their variants and parts, re-indexed)."""
        rows = np.asarray(rows, dtype=np.int64)
        position = np.full(len(self.texts), -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        keep_variants, variant_of = _reindex(self.variant_of, position)
        keep_parts, segment_of = _reindex(self.segment_of, position)
        return Examples(
            texts=tuple(self.texts[r] for r in rows),
            harmful=self.harmful[rows],
            sources=self.sources[rows],
            weights=self.weights[rows],
            vectors=self.vectors[rows],
            variant_vectors=self.variant_vectors[keep_variants],
            variant_of=variant_of,
            segment_vectors=self.segment_vectors[keep_parts],
            segment_of=segment_of,
        )

    def scores(self, predict: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Each text's score as the check computes it: the largest of ``predict`` over the text and its parts."""
        out = np.asarray(predict(self.vectors), dtype=np.float64).copy()
        if len(self.segment_of):
            np.maximum.at(out, self.segment_of, np.asarray(predict(self.segment_vectors), dtype=np.float64))
        return out

    @property
    def digest(self) -> str:
        """SHA-256 over the labelled texts (order-independent): names the data a calibration came from."""
        return labelled_digest(zip(self.harmful, self.texts, strict=True))


def data_digest(harmful: Sequence[str | Request], benign: Sequence[str | Request]) -> str:
    """The ``data_sha256`` a calibration fitted on these requests records (:attr:`Examples.digest`), without
    embedding them."""
    return labelled_digest(
        [(1, r.text) for r in _unique(_requests(harmful))] + [(0, r.text) for r in _unique(_requests(benign))]
    )


def _strata(examples: Examples) -> list[np.ndarray]:
    """Rows by (class, source), in a fixed order."""
    keys = sorted({(bool(h), str(s)) for h, s in zip(examples.harmful, examples.sources, strict=True)})
    return [np.flatnonzero((examples.harmful == h) & (examples.sources == s)) for h, s in keys]


def stratified_split(examples: Examples, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, calibration rows): ``fraction`` of each (class, source), drawn at random, goes to calibration."""
    rng = np.random.default_rng(seed)
    fit, cal = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for rows in _strata(examples):
        rows = rng.permutation(rows)
        cut = round(len(rows) * fraction)
        cal.append(rows[:cut])
        fit.append(rows[cut:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(cal))


def stratified_folds(examples: Examples, folds: int, seed: int) -> np.ndarray:
    """A fold number per row, each (class, source) spread evenly over the folds at random."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(examples.texts), dtype=np.int64)
    offset = 0
    for rows in _strata(examples):
        fold[rng.permutation(rows)] = (np.arange(len(rows)) + offset) % folds
        offset += len(rows)
    return fold


class HarmDetector:
    """Fit-then-calibrate harmful-request detector (scikit-learn style; learned state ends in ``_``)."""

    def __init__(
        self,
        *,
        target_fpr: float = 0.05,
        calibration_fraction: float = 0.3,
        l2: float = 100.0,
        augment: bool = True,
        by_source: bool = True,
        seed: int = 0,
    ) -> None:
        self.target_fpr = TARGET_FPR.check(target_fpr, "target_fpr")
        self.calibration_fraction = FRACTION.check(calibration_fraction, "calibration_fraction")
        self.l2 = L2.check(l2, "l2")
        self.augment = augment
        self.by_source = by_source
        self.seed = SEED.check(seed, "seed")
        self.loaded_from: Path | None = None  # the artifact this detector was read from, if any

    # -- fitting ---------------------------------------------------------------------------------------------

    def fit(
        self, index: GuidelineIndex, harmful: Sequence[str | Request], benign: Sequence[str | Request]
    ) -> HarmDetector:
        """Embed the requests with ``index.embedder``, fit on one part, calibrate on the other.

        Raises InputError when the calibration part holds too few benign requests for the target."""
        return self.fit_examples(index, Examples.embed(index.embedder, harmful, benign, augment=self.augment))

    def fit_examples(self, index: GuidelineIndex, examples: Examples) -> HarmDetector:
        """:meth:`fit` on requests embedded already (by ``index.embedder``)."""
        started = time.perf_counter()
        fit_rows, cal_rows = stratified_split(examples, self.calibration_fraction, self.seed)
        n_benign = int((~examples.harmful[cal_rows]).sum())
        if fpr_rank(n_benign, self.target_fpr) > n_benign:
            raise InputError(
                f"target false-positive rate {self.target_fpr} needs at least {least_benign(self.target_fpr)} "
                f"benign requests in the calibration part, have {n_benign}: give more benign requests, a larger "
                "calibration fraction, or a larger target"
            )
        train = examples.take(fit_rows)
        self.model_ = fit_model(index, train, l2=self.l2)
        calibration = examples.take(cal_rows)
        scores = calibration.scores(lambda v: self.model_.predict_proba(features(index, v)))
        benign = ~calibration.harmful
        groups = calibration.sources[benign] if self.by_source else np.full(benign.sum(), UNGROUPED, dtype=object)
        self.benign_scores_ = {str(g): np.sort(scores[benign][groups == g]) for g in sorted({str(g) for g in groups})}
        self.harmful_scores_ = np.sort(scores[calibration.harmful])
        self.embedder_ = str(index.embedder.name)
        self.library_hash_ = index.library.content_hash
        self.categories_ = list(index.library.categories)
        self.n_fit_ = {"harmful": int(train.harmful.sum()), "benign": int((~train.harmful).sum())}
        self.n_augmented_ = len(train.variant_of)
        self.data_sha256_ = examples.digest
        self.cv_: dict[str, Any] | None = None
        self.threshold_ = self.threshold(self.target_fpr)
        self.fit_seconds_ = time.perf_counter() - started
        self.created_ = time.time()
        return self

    def measure_recall(self, index: GuidelineIndex, examples: Examples) -> dict[str, Any]:
        """Recall per source of the harmful ``examples`` (those it was fitted on) at this detector's target, stored
        as ``recall_by_source_`` (and in the artifact): held out when cross-validation ran (``cv_``: each example
        flagged by a model that never saw it), else in-sample (optimistic: fitted examples included)."""
        self._check_fitted()
        if self.cv_ and "recall_by_source" in self.cv_:  # moved out of cv_: the artifact holds it once
            sources, method = self.cv_.pop("recall_by_source"), f"{self.cv_['folds']}-fold cross-validated"
        else:
            flagged = examples.scores(partial(self.predict_proba, index)) > self.threshold_
            sources, method = recall_by_source(examples, flagged), "in-sample (no cross-validation: optimistic)"
        report: dict[str, Any] = {"method": method, "target_fpr": self.target_fpr, "sources": sources}
        self.recall_by_source_: dict[str, Any] | None = report
        return report

    def describe_recall(self) -> str:
        """Recall per source of the harmful examples, one line (for ``calibrate guidelines`` and ``policy check``)."""
        report = getattr(self, "recall_by_source_", None)
        if not report:
            return "guidelines.flagged recall by source: not recorded in this calibration (recalibrate to measure it)"
        rows = ", ".join(f"{name} {row['recall']:.2f} (n={row['n']})" for name, row in report["sources"].items())
        return f"guidelines.flagged recall by source ({report['method']}, target {report['target_fpr']:g}): {rows}"

    def recall_warnings(self, target_fpr: float | None = None) -> list[str]:
        """:func:`low_recall_warnings` on this detector's recall by source (none when it was not measured)."""
        return low_recall_warnings(getattr(self, "recall_by_source_", None), target_fpr)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this HarmDetector is not fitted: call fit() or load() first")

    # -- thresholds and rates --------------------------------------------------------------------------------

    @property
    def pooled_benign_(self) -> np.ndarray:
        """Every calibration benign score, sorted."""
        self._check_fitted()
        return np.sort(np.concatenate([np.zeros(0), *self.benign_scores_.values()]))

    @property
    def n_benign_(self) -> int:
        """Benign requests in the calibration part."""
        return len(self.pooled_benign_)

    @property
    def n_harmful_(self) -> int:
        """Harmful requests in the calibration part."""
        self._check_fitted()
        return len(self.harmful_scores_)

    def thresholds(self, target_fpr: float) -> dict[str, float | None]:
        """The order statistic of the pool (key ``"(pooled)"``) and of each source for ``target_fpr``; None
        where a source has too few calibration benign requests to count on its own."""
        self._check_fitted()
        out: dict[str, float | None] = {}
        for name, scores in [("(pooled)", self.pooled_benign_), *self.benign_scores_.items()]:
            k = fpr_rank(len(scores), target_fpr)
            out[name] = float(scores[k - 1]) if k <= len(scores) else None
        return out

    def threshold(self, target_fpr: float) -> float:
        """Flag when P(harmful) > this: the largest of the pooled and per-source order statistics.

        Raises InputError when even the pool is too small for ``target_fpr`` (k > n)."""
        found = self.thresholds(target_fpr)
        if found["(pooled)"] is None:
            raise InputError(
                f"target false-positive rate {target_fpr} needs at least {least_benign(target_fpr)} calibration "
                f"benign requests; this calibration has {self.n_benign_}: recalibrate with more benign requests "
                "or state a larger target"
            )
        return max(t for t in found.values() if t is not None)

    def rates(self, threshold: float) -> dict[str, Any]:
        """False-positive rate (pooled and by source) and recall of "score > threshold" on the calibration part."""
        self._check_fitted()
        return {
            "false_positive_rate": float(np.mean(self.pooled_benign_ > threshold)),
            "recall": float(np.mean(self.harmful_scores_ > threshold)) if self.n_harmful_ else None,
            "false_positive_rate_by_source": {
                name: {"n": len(scores), "false_positive_rate": float(np.mean(scores > threshold))}
                for name, scores in self.benign_scores_.items()
            },
        }

    # -- applying --------------------------------------------------------------------------------------------

    def check_matches(self, embedder: str, library: GuidelineLibrary, *, path: str | Path | None = None) -> None:
        """ArtifactError unless the embedder named ``embedder`` and ``library`` are those it was fitted with (the
        part of :meth:`check_compatible` that needs no embedding; ``policy check`` runs it)."""
        self._check_fitted()
        if embedder != self.embedder_:
            raise ArtifactError(
                path,
                f"harmful-request calibration was made with embedder {self.embedder_!r}, this Guard embeds with "
                f"{embedder!r}",
                fix=f"use the embedder it was made with, or {FIX}",
            )
        if library.content_hash != self.library_hash_ or list(library.categories) != self.categories_:
            raise ArtifactError(
                path,
                "harmful-request calibration was made with another guideline library (its similarity features "
                "would differ)",
                fix=FIX,
            )

    def check_compatible(self, index: GuidelineIndex, *, path: str | Path | None = None) -> None:
        """ArtifactError unless ``index`` embeds with the same model and holds the same library as at fitting."""
        self.check_matches(str(index.embedder.name), index.library, path=path)
        if self.model_.dim != n_features(index.vectors.shape[1], len(self.categories_)):
            raise ArtifactError(
                path, f"the model takes {self.model_.dim} features, this library and embedder give another number"
            )

    def predict_proba(self, index: GuidelineIndex, vectors: np.ndarray) -> np.ndarray:
        """P(harmful) for request embeddings ``vectors`` (rows, from ``index.embedder``)."""
        self._check_fitted()
        return self.model_.predict_proba(features(index, vectors))

    # -- artifact --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The artifact's fields (every one is sealed by the checksum)."""
        self._check_fitted()
        from .. import __version__

        return {
            "format": FORMAT_VERSION,
            "kind": KIND,
            "library_version": __version__,
            "created": self.created_,
            "embedder": self.embedder_,
            "library": {"sha256": self.library_hash_, "categories": self.categories_},
            "features": {"id": FEATURES_ID, "definition": FEATURES, "dim": self.model_.dim},
            "target_fpr": self.target_fpr,
            "threshold": self.threshold_,
            "by_source": self.by_source,
            "thresholds": self.thresholds(self.target_fpr),
            "n_benign": self.n_benign_,
            "n_harmful": self.n_harmful_,
            "calibration": self.rates(self.threshold_),
            "guarantee": "P(harm_prob > threshold) <= target_fpr for a new benign request exchangeable with the "
            "calibration benign requests of any one source that has a threshold in 'thresholds' (split-conformal "
            "order statistic, k = ceil((n+1)(1-target))); recall is measured, not guaranteed",
            "fit": {
                **self.n_fit_,
                "augmented": self.n_augmented_,
                "l2": self.l2,
                "augment": self.augment,
                "calibration_fraction": self.calibration_fraction,
                "seed": self.seed,
                "seconds": round(self.fit_seconds_, 3),
                "data_sha256": self.data_sha256_,
            },
            "cross_validation": self.cv_,
            "model": {
                "weights": self.model_.weights.tolist(),
                "mean": self.model_.mean.tolist(),
                "scale": self.model_.scale.tolist(),
            },
            "benign_scores": {name: scores.tolist() for name, scores in self.benign_scores_.items()},
            "harmful_scores": self.harmful_scores_.tolist(),
            "recall_by_source": getattr(self, "recall_by_source_", None),
        }

    def save(self, path: str | Path) -> Path:
        """Write the artifact (strict JSON, sealed)."""
        return write_artifact(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> HarmDetector:
        """Read an artifact; ArtifactError when it is missing, damaged, edited or inconsistent."""
        path = Path(path)
        data = read_artifact(path, kind=KIND, version=FORMAT_VERSION, what="harmful-request calibration", fix=FIX)
        fit = field(data, "fit", dict, path, FIX)
        try:
            detector = cls(
                target_fpr=float(field(data, "target_fpr", (int, float), path, FIX)),
                calibration_fraction=float(fit.get("calibration_fraction", 0.3)),
                l2=float(fit.get("l2", 0.0)),
                augment=bool(fit.get("augment", True)),
                by_source=bool(data.get("by_source", True)),
                seed=int(fit.get("seed", 0)),
            )
        except (InputError, TypeError, ValueError) as exc:
            raise ArtifactError(path, f"calibration header is invalid: {exc}", fix=FIX) from None
        features_info = field(data, "features", dict, path, FIX)
        if features_info.get("id") != FEATURES_ID:
            raise ArtifactError(path, f"features {features_info.get('id')!r} differ from {FEATURES_ID!r}", fix=FIX)
        detector.model_ = LogisticModel.from_state(
            field(data, "model", dict, path, FIX), int(features_info.get("dim", -1)), path, FIX
        )
        benign = field(data, "benign_scores", dict, path, FIX)
        detector.benign_scores_ = {
            str(name): sorted_probabilities(values, f"benign_scores.{name}", path, FIX)
            for name, values in benign.items()
        }
        detector.harmful_scores_ = sorted_probabilities(
            field(data, "harmful_scores", list, path, FIX), "harmful_scores", path, FIX
        )
        if detector.n_benign_ != field(data, "n_benign", int, path, FIX):
            raise ArtifactError(path, "n_benign differs from the number of benign scores", fix=FIX)
        library = field(data, "library", dict, path, FIX)
        detector.embedder_ = field(data, "embedder", str, path, FIX)
        detector.library_hash_ = str(library.get("sha256"))
        detector.categories_ = list(library.get("categories") or [])
        detector.n_fit_ = {"harmful": int(fit.get("harmful", 0)), "benign": int(fit.get("benign", 0))}
        detector.n_augmented_ = int(fit.get("augmented", 0))
        detector.data_sha256_ = str(fit.get("data_sha256", ""))
        detector.fit_seconds_ = float(fit.get("seconds", 0.0))
        detector.cv_ = data.get("cross_validation")
        detector.recall_by_source_ = data.get("recall_by_source")  # None in artifacts made before it was recorded
        detector.created_ = float(field(data, "created", (int, float), path, FIX))
        detector.loaded_from = path
        detector.threshold_ = field(data, "threshold", (int, float), path, FIX)
        try:
            consistent = detector.threshold_ == detector.threshold(detector.target_fpr)
        except InputError:
            consistent = False
        if not consistent:
            raise ArtifactError(path, "the threshold is not the order statistic of its benign scores", fix=FIX)
        return detector

    def describe(self, target_fpr: float | None = None) -> str:
        """Where the threshold comes from, in one line (for ``policy check`` and the CLI)."""
        target = self.target_fpr if target_fpr is None else target_fpr
        threshold = self.threshold(target)
        rates = self.rates(threshold)
        sources = ", ".join(
            f"{name} n={row['n']} FPR {row['false_positive_rate']:.3f}"
            for name, row in rates["false_positive_rate_by_source"].items()
        )
        recall = "n/a" if rates["recall"] is None else f"{rates['recall']:.3f}"
        text = (
            f"guidelines.flagged = harm_prob > {threshold:.4f}: target false-positive rate {target} on "
            f"n={self.n_benign_} calibration benign requests ({sources}); calibration FPR "
            f"{rates['false_positive_rate']:.3f}, recall {recall} on {self.n_harmful_} harmful"
        )
        if self.cv_ and self.cv_.get("target_fpr") == target:
            text += (
                f"; {self.cv_['folds']}-fold cross-validated FPR {self.cv_['false_positive_rate']:.3f}, "
                f"recall {self.cv_['recall']:.3f}"
            )
        return text

    def __repr__(self) -> str:
        if not hasattr(self, "model_"):
            return f"HarmDetector(target_fpr={self.target_fpr}, unfitted)"
        return f"HarmDetector(target_fpr={self.target_fpr}, n_benign={self.n_benign_}, threshold={self.threshold_:.4f})"


def fit_model(index: GuidelineIndex, examples: Examples, *, l2: float) -> LogisticModel:
    """The logistic model on ``examples`` and their paraphrases (same label and weight as the text they
    rephrase), each weighted by its request's weight."""
    rows = np.concatenate([np.arange(len(examples.texts)), examples.variant_of])
    vectors = np.vstack([examples.vectors, examples.variant_vectors])
    return LogisticModel.fit(
        features(index, vectors),
        examples.harmful[rows].astype(np.float64),
        l2=l2,
        sample_weight=examples.weights[rows],
    )


# -- evaluation ----------------------------------------------------------------------------------------------


def guideline_similarity(index: GuidelineIndex, vectors: np.ndarray) -> np.ndarray:
    """The baseline score: each request's similarity to its closest guideline (guidelines.top_score before
    min_score)."""
    return (np.asarray(vectors, dtype=np.float32) @ index.vectors.T).max(axis=1).astype(np.float64)


def oracle_recall(scores: np.ndarray, harmful: np.ndarray, target_fpr: float) -> float:
    """Recall at the best threshold whose false-positive rate on these very benign scores is <= target (an
    optimistic baseline: the threshold is chosen on the test data)."""
    benign = np.sort(scores[~harmful])
    allowed = math.floor(target_fpr * len(benign) + 1e-9)  # benign scores that may exceed the threshold
    threshold = benign[len(benign) - allowed - 1] if allowed < len(benign) else -np.inf
    return float(np.mean(scores[harmful] > threshold))


def cross_validate(
    index: GuidelineIndex, examples: Examples, detector: HarmDetector, *, folds: int = 5
) -> dict[str, Any]:
    """K-fold estimate of what ``detector``'s settings achieve on requests it never saw: per fold, fit and
    calibrate on the other folds, flag the held-out fold at the calibrated threshold. Reports the pooled
    held-out false-positive rate (also by source) and recall, the mean held-out AUROC, and the
    guideline-similarity baseline (AUROC, and recall at an oracle threshold with the target FPR per fold)."""
    if folds < 2:
        raise InputError(f"cross-validation needs at least 2 folds, got {folds}", source="folds")
    fold = stratified_folds(examples, folds, detector.seed + 1)
    flagged = np.zeros(len(examples.texts), dtype=bool)
    aurocs, baseline_aurocs, baseline_recalls = [], [], []
    params = _settings(detector)
    baseline = guideline_similarity(index, examples.vectors)
    for f in range(folds):
        test = np.flatnonzero(fold == f)
        inner = HarmDetector(**params, seed=detector.seed + f).fit_examples(
            index, examples.take(np.flatnonzero(fold != f))
        )
        probability = examples.take(test).scores(partial(inner.predict_proba, index))
        flagged[test] = probability > inner.threshold_
        labels = examples.harmful[test]
        aurocs.append(auroc(probability, labels))
        baseline_aurocs.append(auroc(baseline[test], labels))
        baseline_recalls.append(oracle_recall(baseline[test], labels, detector.target_fpr))
    harmful = examples.harmful
    return {
        "folds": folds,
        "target_fpr": detector.target_fpr,
        "n_benign": int((~harmful).sum()),
        "n_harmful": int(harmful.sum()),
        "false_positive_rate": float(flagged[~harmful].mean()),
        "recall": float(flagged[harmful].mean()),
        "auroc": float(np.mean(aurocs)),
        "by_source": _by_source(examples, flagged),
        "recall_by_source": recall_by_source(examples, flagged),
        "baseline_guideline_similarity": {
            "auroc": float(np.mean(baseline_aurocs)),
            "recall_at_target_oracle_threshold": float(np.mean(baseline_recalls)),
        },
    }


def _settings(detector: HarmDetector) -> dict[str, Any]:
    return {k: getattr(detector, k) for k in ("target_fpr", "calibration_fraction", "l2", "augment", "by_source")}


def leave_one_group_out(
    index: GuidelineIndex, examples: Examples, detector: HarmDetector, groups: Sequence[str | None]
) -> dict[str, Any]:
    """What ``detector``'s settings achieve on whole groups they never saw (a harm category, a writing style):
    for each group, fit and calibrate on every other row (rows whose group is None always train), flag the
    group's rows at the calibrated threshold. Per group and pooled over the held-out rows: n, recall,
    false-positive rate (the group's benign rows: look-alikes of its harmful ones), AUROC (None when a class
    is absent). Also returns the held-out scores and thresholds (``"scored"``) for further measurement."""
    labels = np.asarray(groups, dtype=object)
    if len(labels) != len(examples.texts):
        raise InputError(f"{len(labels)} group labels for {len(examples.texts)} examples", source="groups")
    names = sorted({str(g) for g in labels if g is not None})
    if len(names) < 2:
        raise InputError("leave-one-group-out needs at least 2 groups", source="groups")
    flagged = np.zeros(len(labels), dtype=bool)
    held = np.zeros(len(labels), dtype=bool)
    report: dict[str, Any] = {"target_fpr": detector.target_fpr, "groups": {}, "scored": {}}
    for offset, name in enumerate(names):
        test = np.flatnonzero(labels == name)
        train = np.flatnonzero(labels != name)
        inner = HarmDetector(**_settings(detector), seed=detector.seed + offset).fit_examples(
            index, examples.take(train)
        )
        probability = examples.take(test).scores(partial(inner.predict_proba, index))
        flagged[test] = probability > inner.threshold_
        held[test] = True
        harmful = examples.harmful[test]
        report["groups"][name] = _group_rates(flagged[test], harmful, probability)
        report["scored"][name] = {"threshold": inner.threshold_, "detector": inner}
    harmful = examples.harmful[held]
    report["pooled"] = _group_rates(flagged[held], harmful, None)
    report["pooled"]["mean_auroc"] = float(
        np.mean([g["auroc"] for g in report["groups"].values() if g["auroc"] is not None])
    )
    return report


def _group_rates(flagged: np.ndarray, harmful: np.ndarray, scores: np.ndarray | None) -> dict[str, Any]:
    value = auroc(scores, harmful) if scores is not None else math.nan
    return {
        "n_harmful": int(harmful.sum()),
        "n_benign": int((~harmful).sum()),
        "recall": float(flagged[harmful].mean()) if harmful.any() else None,
        "false_positive_rate": float(flagged[~harmful].mean()) if (~harmful).any() else None,
        "auroc": value if math.isfinite(value) else None,
    }


def _by_source(examples: Examples, flagged: np.ndarray) -> dict[str, dict[str, Any]]:
    out = {}
    for source in sorted({str(s) for s in examples.sources}):
        for label, key in ((False, "false_positive_rate"), (True, "recall")):
            mask = (examples.sources == source) & (examples.harmful == label)
            if mask.any():
                out[f"{source} {'harmful' if label else 'benign'}"] = {
                    "n": int(mask.sum()),
                    key: float(flagged[mask].mean()),
                }
    return out


def recall_by_source(examples: Examples, flagged: np.ndarray) -> dict[str, dict[str, Any]]:
    """For each source of the harmful examples: ``n``, ``recall`` (the share ``flagged``) and ``missed`` (the
    texts not flagged, in input order)."""
    out: dict[str, dict[str, Any]] = {}
    for source in sorted({str(s) for s in examples.sources[examples.harmful]}):
        rows = np.flatnonzero(examples.harmful & (examples.sources == source))
        out[source] = {
            "n": len(rows),
            "recall": float(flagged[rows].mean()),
            "missed": [examples.texts[r] for r in rows if not flagged[r]],
        }
    return out


def low_recall_warnings(report: dict[str, Any] | None, target_fpr: float | None = None) -> list[str]:
    """One warning per source of ``report`` (a detector's ``recall_by_source_``) whose recall is below
    :data:`LOW_RECALL` with at least :data:`LOW_RECALL_MIN_EXAMPLES` harmful examples, naming the examples it
    missed; ``target_fpr`` (the policy's) is compared with the target the recall was measured at."""
    if not report:
        return []
    at = report["target_fpr"]
    note = "" if target_fpr is None or target_fpr == at else f"; the policy states target {target_fpr:g}"
    warnings = []
    for source, row in report["sources"].items():
        if row["n"] < LOW_RECALL_MIN_EXAMPLES or row["recall"] >= LOW_RECALL:
            continue
        missed = "; ".join(repr(_cut(t)) for t in row["missed"][:MISSED_SHOWN])
        more = f" and {len(row['missed']) - MISSED_SHOWN} more" if len(row["missed"]) > MISSED_SHOWN else ""
        warnings.append(
            f"guidelines.flagged: low recall {row['recall']:.2f} on harmful source {source!r} ({row['n']} examples, "
            f"{report['method']} at target false-positive rate {at:g}{note}; warned below {LOW_RECALL:g} with at least "
            f"{LOW_RECALL_MIN_EXAMPLES} examples); missed: {missed}{more}. Fix: add more requests like these to "
            "--harmful (and benign look-alikes to --benign) and recalibrate, or write a rule for them"
        )
    return warnings


def _cut(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_requests(path: str | Path) -> list[Request]:
    """Requests from JSONL lines ``{"text", "source"?, "weight"?}`` (``"prompt"`` is accepted for ``"text"``).

    ``source`` names where a request comes from; its part before ":" is the group it is calibrated with
    ("written:coding" -> "written"). ``weight`` (> 0, default 1) is how much it counts in fitting (calibration
    counts every request once)."""
    requests = []
    for number, record in read_jsonl(path):
        text = record.get("text", record.get("prompt"))
        source, weight = record.get("source", UNGROUPED), record.get("weight", 1.0)
        if not isinstance(text, str) or not text.strip():
            raise InputError('each line needs a non-empty "text"', source=str(path), line=number)
        if not isinstance(source, str) or not source:
            raise InputError('"source" must be a non-empty string', source=str(path), line=number)
        WEIGHT.check(weight, '"weight"', source=str(path), line=number)
        requests.append(Request(text, source.split(":")[0], float(weight)))
    return requests
