"""Calibrating the provenance threshold to a false-positive rate on benign text (split conformal).

Benign texts (the app's own documents and past answers: text that must not be flagged) are split at random
into a *template* part and a *calibration* part. The template part fixes the score: its n-grams that the
corpus also holds are templates, not evidence of copying (:func:`.score.template_grams`). The calibration
part sets the threshold: with its n scores s_1..s_n (each text's informative score, :mod:`.score`), the
threshold is the k-th smallest, ``k = ceil((n + 1)(1 - target_fpr))``, and a text is flagged when its score
is strictly above it.

Guarantee (split-conformal order statistic): if a new benign text and the n calibration texts are
exchangeable (e.g. drawn independently from the same source), then
``P(score(new) > threshold) <= target_fpr``. It is marginal (averaged over the draw of the calibration set
and of the new text, not conditional on either) and holds whatever the score distribution, ties included;
it says nothing about text from another source (other topics, another model's style). With no ties it is
also nearly tight: the probability is at least ``target_fpr - 1/(n + 1)``. If ``k > n`` (fewer than
``1/target_fpr - 1`` calibration texts) no finite threshold certifies the target and calibration is
refused. The template split is fixed before the calibration scores are computed, so it does not weaken
the guarantee; it only spends benign texts.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import digest, field, read_artifact, write_artifact
from ..errors import ArtifactError, InputError, NotFittedError
from .index import CorpusIndex
from .score import (
    DEFAULT_GRAM,
    DEFAULT_LONG_SPAN,
    SCORE_DEFINITION,
    ScoreSettings,
    covered_documents,
    score_text,
    template_grams,
)

KIND = "guardrails-uq/provenance-calibration"
#: 2: the score has no document-frequency discount and counts long spans in full (``settings.long_span``);
#: format-1 artifacts are refused (recalibrate).
FORMAT_VERSION = 2
GUARANTEE = (
    "split conformal: for a new benign text exchangeable with the calibration texts, "
    "P(score > threshold) <= target_fpr (marginal over calibration set and new text)"
)
FIX = "recalibrate: guardrails-uq calibrate provenance --index DIR --benign benign.jsonl --target-fpr T -o FILE"


def conformal_rank(n: int, target_fpr: float) -> int:
    """k = ceil((n + 1)(1 - target_fpr)): the 1-based order statistic of the threshold (> n: none)."""
    if not 0.0 < target_fpr < 1.0:
        raise InputError(f"target false-positive rate must be in (0, 1), got {target_fpr}", source="target_fpr")
    return math.ceil((n + 1) * (1.0 - target_fpr) - 1e-12)


def minimum_texts(target_fpr: float) -> int:
    """The fewest calibration texts for which a finite threshold certifies ``target_fpr``."""
    n = max(1, math.ceil(1.0 / target_fpr) - 1)
    while conformal_rank(n, target_fpr) > n:
        n += 1
    return n


def conformal_threshold(scores: Sequence[float] | np.ndarray, target_fpr: float) -> float:
    """The k-th smallest of ``scores``, ``k = ceil((n + 1)(1 - target_fpr))``: for a new score exchangeable
    with them, ``P(new > threshold) <= target_fpr``. InputError when ``k > n`` (too few scores)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    k = conformal_rank(len(ordered), target_fpr)
    if k > len(ordered):
        raise InputError(
            f"target false-positive rate {target_fpr:g} needs at least {minimum_texts(target_fpr)} scores, "
            f"have {len(ordered)}: no finite threshold certifies it",
            source="target_fpr",
        )
    return float(ordered[k - 1])


def split_benign(texts: Sequence[str], template_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(template texts, calibration texts): a seeded random split, ``template_fraction`` of them templates."""
    if not 0.0 <= template_fraction < 1.0:
        raise InputError(f"template fraction must be in [0, 1), got {template_fraction}", source="template_fraction")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    cut = round(template_fraction * len(texts))
    return [texts[i] for i in order[:cut]], [texts[i] for i in order[cut:]]


@dataclass(frozen=True)
class ThresholdOrigin:
    """Where a check's threshold comes from, for explanations: ``kind`` is calibration, policy or default."""

    kind: str
    threshold: float
    target_fpr: float | None = None
    n: int | None = None
    achieved_fpr: float | None = None
    path: str | None = None

    def describe(self) -> str:
        """One line: the threshold and its origin (target, n and in-sample rate when calibrated)."""
        if self.kind == "calibration":
            return (
                f"threshold {self.threshold:.4g} calibrated in {self.path}: target false-positive rate "
                f"{self.target_fpr:g} on n={self.n} benign texts (in-sample rate {self.achieved_fpr:.4f})"
            )
        if self.kind == "policy":
            return f"threshold {self.threshold:g} set by hand in the policy (not calibrated)"
        return f"threshold {self.threshold:g}: TraceShield's default (not calibrated)"

    def to_evidence(self) -> dict[str, Any]:
        """The JSON form recorded in a Decision's evidence (unset fields left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


class ProvenanceCalibration:
    """Fit-then-apply threshold on the informative score (scikit-learn style; learned state ends in ``_``).

    ``fit(index, texts)`` splits the benign texts, learns the templates and the threshold;
    ``flagged(score)`` applies it; ``save``/``load`` write and read a checksummed JSON artifact that
    records the target, n, threshold, in-sample rate, the score definition and settings, and the
    fingerprint of the index it was made with (:meth:`check_index` refuses another index).
    """

    def __init__(
        self,
        *,
        target_fpr: float = 0.01,
        min_span: int = 8,
        gram: int = DEFAULT_GRAM,
        long_span: int = DEFAULT_LONG_SPAN,
        template_fraction: float = 0.5,
        seed: int = 0,
    ) -> None:
        conformal_rank(1, target_fpr)  # validates the target
        if not 1 <= gram <= min_span:
            raise InputError(f"gram must be between 1 and min_span ({min_span}), got {gram}", source="gram")
        if long_span < min_span:
            raise InputError(f"long_span must be >= min_span ({min_span}), got {long_span}", source="long_span")
        if not 0.0 <= template_fraction < 1.0:
            raise InputError(
                f"template fraction must be in [0, 1), got {template_fraction}", source="template_fraction"
            )
        self.target_fpr = target_fpr
        self.min_span = min_span
        self.gram = gram
        self.long_span = long_span
        self.template_fraction = template_fraction
        self.seed = seed

    def fit(self, index: CorpusIndex, texts: Sequence[str]) -> ProvenanceCalibration:
        """Learn templates and threshold from benign ``texts``. InputError when too few remain for the target,
        or when the templates would cover a corpus passage (:meth:`_refuse_covered`)."""
        templates, calibration = split_benign(list(texts), self.template_fraction, self.seed)
        needed = minimum_texts(self.target_fpr)
        if len(calibration) < needed:
            raise InputError(
                f"target false-positive rate {self.target_fpr:g} needs at least {needed} calibration texts, "
                f"have {len(calibration)} ({len(texts)} benign texts, {len(templates)} used as templates): "
                f"no finite threshold certifies it; add benign texts, lower --template-fraction, or raise the target",
                source="benign",
            )
        started = time.perf_counter()
        grams = template_grams(index, templates, gram=self.gram) if templates else frozenset()
        self.settings_ = ScoreSettings(gram=self.gram, long_span=self.long_span, templates=grams)
        scores = [score_text(index, t, min_span=self.min_span, settings=self.settings_).score for t in calibration]
        self.scores_ = np.sort(np.asarray(scores, dtype=np.float64))
        self.n_ = len(scores)
        self.n_templates_ = len(templates)
        self.threshold_ = conformal_threshold(self.scores_, self.target_fpr)
        self.achieved_fpr_ = float(np.mean(self.scores_ > self.threshold_))
        self._refuse_covered(index, list(texts), templates)
        self.index_fingerprint_ = index.fingerprint
        self.benign_digest_ = digest(list(texts))
        self.seconds_ = time.perf_counter() - started
        self.created_ = time.time()
        return self

    def _refuse_covered(self, index: CorpusIndex, texts: list[str], templates: list[str]) -> None:
        """InputError naming the corpus passages whose verbatim copy the templates would let through (flagged
        without them, not with them) and the benign texts that share a span with each: a benign file holding
        a copy of unsafe text must not turn that text into boilerplate."""
        covered = covered_documents(index, self.settings_, threshold=self.threshold_, min_span=self.min_span)
        if not covered:
            return
        position: dict[str, int] = {}
        for number, text in enumerate(texts, start=1):
            position.setdefault(text, number)
        lines = []
        for doc_id, tokens in covered[:10]:
            key = " ".join(tokens)
            sources = [position[t] for t in templates if _shares_span(t, tokens, self.min_span)]
            held = ", ".join(str(n) for n in sources[:5]) + (", ..." if len(sources) > 5 else "")
            where = (
                f"in benign text{'s' * (len(sources) > 1)} {held}" if sources else "in parts over several benign texts"
            )
            lines.append(f"  corpus document {doc_id!r} ({key[:80]}): {where}")
        more = f"\n  ... and {len(covered) - 10} more" if len(covered) > 10 else ""
        raise InputError(
            f"the benign texts would make {len(covered)} corpus passage(s) look like boilerplate: a verbatim copy "
            f"of each would no longer be flagged; remove the copied unsafe text from these benign texts "
            f"(numbered from 1 in the order given):\n" + "\n".join(lines) + more,
            source="benign",
        )

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError("this ProvenanceCalibration is not fitted: call fit() or load() first")

    def flagged(self, score: float) -> bool:
        """True when ``score`` is above the calibrated threshold."""
        self._check_fitted()
        return score > self.threshold_

    def check_index(self, index: CorpusIndex, path: str | Path | None = None) -> None:
        """ArtifactError unless ``index`` is the index this calibration was made with."""
        self._check_fitted()
        if index.fingerprint != self.index_fingerprint_:
            raise ArtifactError(
                path,
                f"provenance calibration was made with index {self.index_fingerprint_}, but the index at "
                f"{index.path} is {index.fingerprint}: its threshold does not apply to this index's scores",
                fix=f"recalibrate against this index: guardrails-uq calibrate provenance --index {index.path} ...",
            )

    def origin(self, path: str | Path | None = None) -> ThresholdOrigin:
        """The threshold's origin, for explanations."""
        self._check_fitted()
        return ThresholdOrigin(
            "calibration", self.threshold_, self.target_fpr, self.n_, self.achieved_fpr_, str(path) if path else None
        )

    # -- artifact ----------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        from .. import __version__

        return {
            "format": FORMAT_VERSION,
            "kind": KIND,
            "library_version": __version__,
            "created": self.created_,
            "guarantee": GUARANTEE,
            "score": SCORE_DEFINITION,
            "index_fingerprint": self.index_fingerprint_,
            "benign_sha256": self.benign_digest_,
            "target_fpr": self.target_fpr,
            "n": self.n_,
            "n_templates": self.n_templates_,
            "threshold": self.threshold_,
            "achieved_fpr": self.achieved_fpr_,
            "min_span": self.min_span,
            "template_fraction": self.template_fraction,
            "seed": self.seed,
            "settings": self.settings_.to_dict(),
            "scores": self.scores_.tolist(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the artifact (strict JSON sealed by a checksum over every field)."""
        return write_artifact(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, *, index: CorpusIndex | None = None) -> ProvenanceCalibration:
        """Read an artifact; ArtifactError when it is missing, damaged, edited, inconsistent, or (given
        ``index``) made with another index."""
        path = Path(path)
        data = read_artifact(path, kind=KIND, version=FORMAT_VERSION, what="provenance calibration", fix=FIX)
        try:
            settings = ScoreSettings.from_dict(field(data, "settings", dict, path, FIX))
            calibration = cls(
                target_fpr=field(data, "target_fpr", float, path, FIX),
                min_span=field(data, "min_span", int, path, FIX),
                gram=settings.gram,
                long_span=settings.long_span,
                template_fraction=field(data, "template_fraction", (int, float), path, FIX),
                seed=field(data, "seed", int, path, FIX),
            )
        except (InputError, KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(path, f"provenance calibration header is invalid: {exc}", fix=FIX) from None
        calibration.settings_ = settings
        calibration._restore(data, path)
        if index is not None:
            calibration.check_index(index, path)
        return calibration

    def _restore(self, data: dict[str, Any], path: Path) -> None:
        """Learned state from an artifact, checked for consistency (the threshold is the scores' order
        statistic at the target, the in-sample rate matches)."""
        scores = field(data, "scores", list, path, FIX)
        self.n_ = field(data, "n", int, path, FIX)
        if len(scores) != self.n_ or not all(isinstance(s, int | float) and not isinstance(s, bool) for s in scores):
            raise ArtifactError(path, f"calibration says n={self.n_} but holds {len(scores)} numeric scores", fix=FIX)
        self.scores_ = np.sort(np.asarray(scores, dtype=np.float64))
        self.threshold_ = float(field(data, "threshold", (int, float), path, FIX))
        self.achieved_fpr_ = float(field(data, "achieved_fpr", (int, float), path, FIX))
        self.n_templates_ = field(data, "n_templates", int, path, FIX)
        self.index_fingerprint_ = field(data, "index_fingerprint", str, path, FIX)
        self.benign_digest_ = field(data, "benign_sha256", str, path, FIX)
        self.created_ = float(field(data, "created", (int, float), path, FIX))
        k = conformal_rank(self.n_, self.target_fpr)
        if k > self.n_ or self.threshold_ != self.scores_[k - 1]:
            raise ArtifactError(
                path, "calibration threshold is not the conformal order statistic of its scores", fix=FIX
            )
        if self.achieved_fpr_ != float(np.mean(self.scores_ > self.threshold_)):
            raise ArtifactError(path, "calibration's in-sample rate disagrees with its scores", fix=FIX)

    def __repr__(self) -> str:
        fitted = f", n={self.n_}, threshold={self.threshold_:.4g}" if hasattr(self, "threshold_") else ", unfitted"
        return f"ProvenanceCalibration(target_fpr={self.target_fpr:g}{fitted})"


def _shares_span(text: str, tokens: Sequence[str], min_span: int) -> bool:
    """True when ``text`` holds ``min_span`` consecutive tokens of ``tokens`` verbatim (normalised)."""
    from .tokenize import tokenize

    padded = f" {' '.join(tokenize(text))} "
    return any(f" {' '.join(tokens[i : i + min_span])} " in padded for i in range(len(tokens) - min_span + 1))
