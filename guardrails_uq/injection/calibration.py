"""The injection detector with a stated false-positive rate on benign tool results: fit, calibrate, save, load.

``InjectionDetector.fit(embedder, benign, injected)`` splits the benign documents (seeded, stratified by
``source``) into a *fit* part and a *calibration* part. A logistic model (the one of
:mod:`guardrails_uq.guidelines.detector`) is fitted on windows (:mod:`.detector`): positives are the
windows of each fitting injected document's ``span`` (the injected instruction; the whole text when no span is
given), negatives every window of the fitting benign documents. A document scores its highest window's
probability. On the calibration part's n benign documents the threshold for a target false-positive rate is
the split-conformal order statistic ``k = ceil((n + 1)(1 - target))`` of their scores
(:func:`guardrails_uq.provenance.calibration.conformal_threshold`); a document is flagged when its score is
strictly above it. Guarantee (finite sample): for a new benign tool result exchangeable with the calibration
ones, P(flagged) <= target. It says nothing about benign text unlike the calibration sources, and nothing
about recall, which is measured (on groups held out whole: :mod:`.evaluate`).

The artifact (JSON, sealed by a checksum over every field) holds the model, the sorted calibration scores
(a policy can state another target without refitting), target, n, threshold, the achieved rates, the
embedder's name and the feature and normalisation definitions; a mismatch of any of them is refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import field, labelled_digest, read_artifact, sorted_probabilities, write_artifact
from ..errors import ArtifactError, InputError, NotFittedError
from ..guidelines.detector import LogisticModel
from ..jsonl import read_jsonl
from ..provenance.calibration import conformal_threshold, minimum_texts
from ..textnorm import scheme
from .detector import CUES, FEATURES, FEATURES_ID, MAX_WINDOW_CHARS, MIN_WINDOW_WORDS, Window, features, windows

KIND = "guardrails-uq/injection-calibration"
FORMAT_VERSION = 1
FIX = "recalibrate: guardrails-uq calibrate injection --benign B.jsonl --injected I.jsonl --target-fpr 0.01 -o FILE"
UNGROUPED = "(no source)"
NORMALIZATION = scheme(fold_confusables=True)


@dataclass(frozen=True)
class Document:
    """A labelled tool result: its text, where it comes from, and (injected ones) the injected span."""

    text: str
    source: str = UNGROUPED
    span: str | None = None


@dataclass(frozen=True)
class Scored:
    """A document's score and the window that gave it (None for a document without text)."""

    score: float
    window: Window | None


class Embedded:
    """Documents cut into windows and embedded once (fitting and every held-out split reuse the vectors)."""

    def __init__(self, embedder: Any, documents: Sequence[Document], *, positive_spans: bool = False) -> None:
        self.documents = list(documents)
        self.windows: list[list[Window]] = []
        for document in self.documents:
            text = document.span if positive_spans and document.span else document.text
            self.windows.append(windows(text))
        flat = [w.text for ws in self.windows for w in ws]
        vectors = np.asarray(embedder.embed(flat), dtype=np.float32) if flat else np.zeros((0, 1), np.float32)
        flat_windows = [w for ws in self.windows for w in ws]
        self.features = features(vectors, flat_windows) if flat else np.zeros((0, 0))
        bounds = np.cumsum([0] + [len(ws) for ws in self.windows])
        self.rows = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(self.documents))]

    def subset(self, indices: Sequence[int]) -> Embedded:
        """The documents at ``indices`` (sharing this object's vectors)."""
        view = Embedded.__new__(Embedded)
        view.documents = [self.documents[i] for i in indices]
        view.windows = [self.windows[i] for i in indices]
        view.features = self.features
        view.rows = [self.rows[i] for i in indices]
        return view

    def matrix(self, indices: Iterable[int]) -> np.ndarray:
        """Feature rows of every window of the documents at ``indices``."""
        rows = [self.rows[i] for i in indices]
        joined = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        return self.features[joined]

    def scores(self, model: LogisticModel, indices: Iterable[int] | None = None) -> np.ndarray:
        """Each document's score: its highest window probability (0 without windows)."""
        chosen = range(len(self.documents)) if indices is None else indices
        out = []
        for i in chosen:
            rows = self.rows[i]
            out.append(float(model.predict_proba(self.features[rows]).max()) if len(rows) else 0.0)
        return np.asarray(out, dtype=np.float64)


def data_digest(benign: Sequence[Document], injected: Sequence[Document]) -> str:
    """The ``data_sha256`` a calibration fitted on these documents records."""
    return labelled_digest([(0, d.text) for d in benign] + [(1, d.text) for d in injected])


def stratified_split(sources: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, calibration indices): ``fraction`` of each source, drawn at random, goes to calibration."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(sources, dtype=object)
    fit, cal = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for source in sorted({str(s) for s in sources}):
        rows = rng.permutation(np.flatnonzero(labels == source))
        cut = round(len(rows) * fraction)
        cal.append(rows[:cut])
        fit.append(rows[cut:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(cal))


def fit_model(
    benign: Embedded, positives: Embedded, benign_rows: Iterable[int], positive_rows: Iterable[int], *, l2: float
) -> LogisticModel:
    """The window model: every window of ``benign_rows`` negative, every window of ``positive_rows`` positive,
    each class weighted to the same total (there are many more benign windows)."""
    negative = benign.matrix(benign_rows)
    positive = positives.matrix(positive_rows)
    if not len(negative) or not len(positive):
        raise InputError("fitting needs windows of both benign and injected documents", source="fit")
    x = np.vstack([negative, positive])
    y = np.concatenate([np.zeros(len(negative)), np.ones(len(positive))])
    weight = np.concatenate([np.full(len(negative), 0.5 / len(negative)), np.full(len(positive), 0.5 / len(positive))])
    return LogisticModel.fit(x, y, l2=l2, sample_weight=weight * len(x))


class InjectionDetector:
    """Fit-then-calibrate injection detector (scikit-learn style; learned state ends in ``_``)."""

    def __init__(
        self, *, target_fpr: float = 0.01, calibration_fraction: float = 0.4, l2: float = 1.0, seed: int = 0
    ) -> None:
        if not 0.0 < target_fpr < 1.0:
            raise InputError(f"target false-positive rate must be in (0, 1), got {target_fpr}", source="target_fpr")
        if not 0.0 < calibration_fraction < 1.0:
            raise InputError(f"calibration fraction must be in (0, 1), got {calibration_fraction}", source="fraction")
        if l2 < 0:
            raise InputError(f"l2 must be >= 0, got {l2}", source="l2")
        self.target_fpr = target_fpr
        self.calibration_fraction = calibration_fraction
        self.l2 = l2
        self.seed = seed
        self.loaded_from: Path | None = None

    # -- fitting ---------------------------------------------------------------------------------------------

    def fit(self, embedder: Any, benign: Sequence[Document], injected: Sequence[Document]) -> InjectionDetector:
        """Embed, fit on one part of the benign documents and all injected spans but a calibration share,
        calibrate on the rest. InputError when there are too few benign documents for the target."""
        return self.fit_embedded(
            embedder.name,
            Embedded(embedder, benign),
            Embedded(embedder, injected, positive_spans=True),
            Embedded(embedder, injected),
        )

    def fit_embedded(
        self, embedder_name: str, benign: Embedded, spans: Embedded, injected: Embedded
    ) -> InjectionDetector:
        """:meth:`fit` on documents embedded already (``spans``: the injected documents' spans; ``injected``:
        their whole texts, for measuring recall)."""
        started = time.perf_counter()
        if not benign.documents or not injected.documents:
            raise InputError("calibration needs benign and injected documents", source="fit")
        fit_rows, cal_rows = stratified_split(
            [d.source for d in benign.documents], self.calibration_fraction, self.seed
        )
        need = minimum_texts(self.target_fpr)
        if len(cal_rows) < need:
            raise InputError(
                f"target false-positive rate {self.target_fpr} needs at least {need} benign documents in the "
                f"calibration part, have {len(cal_rows)}: give more benign documents, a larger calibration "
                "fraction, or a larger target",
                source="benign",
            )
        pos_fit, pos_cal = stratified_split(
            [d.source for d in injected.documents], self.calibration_fraction, self.seed
        )
        self.model_ = fit_model(benign, spans, fit_rows, pos_fit, l2=self.l2)
        self.benign_scores_ = np.sort(benign.scores(self.model_, cal_rows))
        self.injected_scores_ = np.sort(injected.scores(self.model_, pos_cal))
        self.threshold_ = self.threshold(self.target_fpr)
        self.embedder_ = str(embedder_name)
        self.n_fit_ = {"benign": len(fit_rows), "injected": len(pos_fit)}
        self.data_sha256_ = data_digest(benign.documents, injected.documents)
        self.created_ = time.time()
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("InjectionDetector is not fitted: call fit() or load() first")

    # -- thresholds ------------------------------------------------------------------------------------------

    def threshold(self, target_fpr: float) -> float:
        """The split-conformal threshold for ``target_fpr`` from the stored benign calibration scores."""
        self._check_fitted()
        return conformal_threshold(self.benign_scores_, target_fpr)

    def rates(self, threshold: float) -> dict[str, Any]:
        """False-positive rate and recall on the calibration documents at ``threshold``."""
        self._check_fitted()
        recall = float(np.mean(self.injected_scores_ > threshold)) if len(self.injected_scores_) else None
        return {"false_positive_rate": float(np.mean(self.benign_scores_ > threshold)), "recall": recall}

    @property
    def n_benign_(self) -> int:
        return len(self.benign_scores_)

    # -- scoring ---------------------------------------------------------------------------------------------

    def check_compatible(self, embedder: Any, *, path: str | Path | None = None) -> None:
        """ArtifactError unless ``embedder`` is the model the detector was fitted with."""
        self._check_fitted()
        if str(embedder.name) != self.embedder_:
            raise ArtifactError(
                path,
                f"injection calibration was made with embedder {self.embedder_!r}, this Guard embeds with "
                f"{embedder.name!r}",
                fix=f"use the embedder it was made with, or {FIX}",
            )

    def score_many(self, embedder: Any, texts: Sequence[str]) -> list[Scored]:
        """Each text's score and triggering window (all windows embedded in one batch)."""
        return self.score_windows(embedder, [windows(t) for t in texts])

    def score_windows(self, embedder: Any, cut: Sequence[Sequence[Window]]) -> list[Scored]:
        """:meth:`score_many` for texts already cut into windows (:func:`.detector.windows`)."""
        self._check_fitted()
        flat = [w for ws in cut for w in ws]
        if not flat:
            return [Scored(0.0, None) for _ in cut]
        vectors = np.asarray(embedder.embed([w.text for w in flat]), dtype=np.float32)
        probabilities = self.model_.predict_proba(features(vectors, flat))
        out, position = [], 0
        for ws in cut:
            if not ws:
                out.append(Scored(0.0, None))
                continue
            local = probabilities[position : position + len(ws)]
            best = int(np.argmax(local))
            out.append(Scored(float(local[best]), ws[best]))
            position += len(ws)
        return out

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
            "normalization": NORMALIZATION,
            "features": {
                "id": FEATURES_ID,
                "definition": FEATURES,
                "cues": [name for name, _ in CUES],
                "max_window_chars": MAX_WINDOW_CHARS,
                "min_window_words": MIN_WINDOW_WORDS,
                "dim": self.model_.dim,
            },
            "target_fpr": self.target_fpr,
            "threshold": self.threshold_,
            "n_benign": self.n_benign_,
            "n_injected": len(self.injected_scores_),
            "calibration": self.rates(self.threshold_),
            "guarantee": "P(injection.score > threshold) <= target_fpr for a new benign tool result exchangeable "
            "with the calibration benign documents (split-conformal order statistic, k = ceil((n+1)(1-target))); "
            "recall is measured, not guaranteed",
            "fit": {
                **self.n_fit_,
                "l2": self.l2,
                "calibration_fraction": self.calibration_fraction,
                "seed": self.seed,
                "seconds": round(self.fit_seconds_, 3),
                "data_sha256": self.data_sha256_,
            },
            "model": {
                "weights": self.model_.weights.tolist(),
                "mean": self.model_.mean.tolist(),
                "scale": self.model_.scale.tolist(),
            },
            "benign_scores": self.benign_scores_.tolist(),
            "injected_scores": self.injected_scores_.tolist(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the artifact (strict JSON, sealed)."""
        return write_artifact(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> InjectionDetector:
        """Read an artifact; ArtifactError when it is missing, damaged, edited, inconsistent or made with
        other features or another normalisation."""
        path = Path(path)
        data = read_artifact(path, kind=KIND, version=FORMAT_VERSION, what="injection calibration", fix=FIX)
        fit = field(data, "fit", dict, path, FIX)
        try:
            detector = cls(
                target_fpr=float(field(data, "target_fpr", (int, float), path, FIX)),
                calibration_fraction=float(fit.get("calibration_fraction", 0.4)),
                l2=float(fit.get("l2", 0.0)),
                seed=int(fit.get("seed", 0)),
            )
        except (InputError, TypeError, ValueError) as exc:
            raise ArtifactError(path, f"calibration header is invalid: {exc}", fix=FIX) from None
        info = field(data, "features", dict, path, FIX)
        if info.get("id") != FEATURES_ID or info.get("cues") != [n for n, _ in CUES]:
            raise ArtifactError(
                path, f"features {info.get('id')!r} differ from this version's {FEATURES_ID!r}", fix=FIX
            )
        if (info.get("max_window_chars"), info.get("min_window_words")) != (
            MAX_WINDOW_CHARS,
            MIN_WINDOW_WORDS,
        ) or data.get("normalization") != NORMALIZATION:
            raise ArtifactError(path, "the windows were cut or normalised another way than this version's", fix=FIX)
        detector.model_ = LogisticModel.from_state(
            field(data, "model", dict, path, FIX), int(info.get("dim", -1)), path, FIX
        )
        detector.benign_scores_ = sorted_probabilities(
            field(data, "benign_scores", list, path, FIX), "benign_scores", path, FIX
        )
        detector.injected_scores_ = sorted_probabilities(
            field(data, "injected_scores", list, path, FIX), "injected_scores", path, FIX
        )
        if detector.n_benign_ != field(data, "n_benign", int, path, FIX):
            raise ArtifactError(path, "n_benign differs from the number of benign scores", fix=FIX)
        detector.embedder_ = field(data, "embedder", str, path, FIX)
        detector.n_fit_ = {"benign": int(fit.get("benign", 0)), "injected": int(fit.get("injected", 0))}
        detector.data_sha256_ = str(fit.get("data_sha256", ""))
        detector.fit_seconds_ = float(fit.get("seconds", 0.0))
        detector.created_ = float(field(data, "created", (int, float), path, FIX))
        detector.threshold_ = field(data, "threshold", (int, float), path, FIX)
        try:
            consistent = detector.threshold_ == detector.threshold(detector.target_fpr)
        except InputError:
            consistent = False
        if not consistent:
            raise ArtifactError(path, "the threshold is not the order statistic of its benign scores", fix=FIX)
        detector.loaded_from = path
        return detector

    def describe(self, target_fpr: float | None = None) -> str:
        """Where the threshold comes from, in one line (for ``policy check`` and the CLI)."""
        target = self.target_fpr if target_fpr is None else target_fpr
        threshold = self.threshold(target)
        rates = self.rates(threshold)
        recall = "n/a" if rates["recall"] is None else f"{rates['recall']:.3f}"
        return (
            f"injection.flagged = score > {threshold:.4f}: target false-positive rate {target} on "
            f"n={self.n_benign_} calibration benign tool results; calibration FPR "
            f"{rates['false_positive_rate']:.3f}, recall {recall} on {len(self.injected_scores_)} injected"
        )

    def __repr__(self) -> str:
        if not hasattr(self, "model_"):
            return f"InjectionDetector(target_fpr={self.target_fpr}, unfitted)"
        return (
            f"InjectionDetector(target_fpr={self.target_fpr}, n_benign={self.n_benign_}, "
            f"threshold={self.threshold_:.4f})"
        )


def read_documents(path: str | Path, *, label: bool | None = None) -> list[Document]:
    """Documents from JSONL lines ``{"text", "source"?, "span"?}``; ``source``'s part before ":" is its group.

    With ``label`` set, a line's optional ``"injection"`` must agree with it."""
    out = []
    for number, record in read_jsonl(path):
        text, source, span = record.get("text"), record.get("source", UNGROUPED), record.get("span")
        if not isinstance(text, str) or not text.strip():
            raise InputError('each line needs a non-empty "text"', source=str(path), line=number)
        if not isinstance(source, str) or not source:
            raise InputError('"source" must be a non-empty string', source=str(path), line=number)
        if span is not None and (not isinstance(span, str) or not span.strip()):
            raise InputError(
                '"span" must be a non-empty string (the injected instruction)', source=str(path), line=number
            )
        if label is not None and "injection" in record and record["injection"] is not label:
            raise InputError(
                f'"injection" is {record["injection"]!r} in a file of {"injected" if label else "benign"} documents',
                source=str(path),
                line=number,
            )
        out.append(Document(text, source.split(":")[0], span))
    return out


def least_benign(target_fpr: float, calibration_fraction: float) -> int:
    """The fewest benign documents for which the calibration part certifies ``target_fpr``."""
    return math.ceil(minimum_texts(target_fpr) / calibration_fraction)
