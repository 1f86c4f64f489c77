"""The grounding flag at a stated false-positive rate: fit the offline scorer, calibrate, save, load.

``GroundingCalibration.fit(chunks, embedder)`` makes synthetic claims from the knowledge base
(:mod:`.synthetic`) and fits the scorer's model on them (sign-constrained: a conflict never raises
P(supported)). The chunks are split at random (seeded) into ``folds`` folds (whole chunks, never rows: a claim
and its paraphrase never sit on both sides), and each claim is scored by a model fitted without its fold.
Calibration answers are supported answers made of 1-3 supported claims of one chunk (out-of-fold scores),
plus the supported answers among the labelled ``answers`` (``--answers``; never fitted on, so the final
scorer's scores are out of sample). With their supports u (the lowest claim P(supported) of each answer)
sorted, the threshold for a target false-positive rate ``target`` is ``t = u_(n + 1 - k)``,
``k = ceil((n + 1)(1 - target))``, and an answer is flagged when its support is < t.

What is guaranteed. Split conformal gives P(flagged) <= target for a new supported answer exchangeable with
the calibration answers; pooling out-of-fold scores (cross-conformal) can cost up to a factor 2 in theory.
Synthetic answers are not the app's answers: with synthetic answers alone the rate on real supported answers is
far higher than the target (measured in bench/grounding.py); with real labelled answers in the calibration set
(even over other knowledge bases) it holds about the target on knowledge bases held out whole.

A judge scorer (:class:`.judge.JudgeScorer`) is calibrated the same way, without fitting.

The artifact (JSON, checksum over every field) records the scorer (model parameters or judge endpoint),
the feature definition, the embedder, the corpus digest, the sorted calibration supports (another target
needs no refit), the target, n, threshold, in-sample rate, and out-of-fold rates.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import field, read_artifact, write_artifact
from ..errors import ArtifactError, InputError, NotFittedError
from ..guidelines.calibration import fpr_rank, least_benign
from ..metrics import auroc
from .align import CONTRADICTION_FEATURES, FEATURE_NAMES, FEATURE_SIGNS, FEATURES_ID
from .assess import assess
from .data import LabelledAnswer, corpus_digest
from .model import LABELS, SoftmaxModel
from .scorer import AlignmentScorer, EvidenceSet, Scorer
from .synthetic import SUPPORTED, Example, generate

KIND = "guardrails-uq/grounding-calibration"
FORMAT_VERSION = 1
FIX = "recalibrate: guardrails-uq calibrate grounding --corpus chunks.jsonl --target-fpr 0.05 -o FILE"
#: Supported generators whose claims make calibration answers (the others are not what answers look like).
_ANSWER_KINDS = ("extractive", "compression", "paraphrase", "yes", "yes-no")


def _class_weights(labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels, minlength=len(LABELS)).astype(np.float64)
    return (len(labels) / (len(LABELS) * np.maximum(counts, 1)))[labels]


class GroundingCalibration:
    """Fit-then-calibrate grounding scorer and threshold (scikit-learn style; learned state ends in ``_``)."""

    def __init__(self, *, target_fpr: float = 0.05, folds: int = 5, l2: float = 1e-3, seed: int = 0) -> None:
        fpr_rank(1, target_fpr)  # validates the target
        if not 2 <= folds <= 50:
            raise InputError(f"folds must be between 2 and 50, got {folds}", source="folds")
        if not np.isfinite(l2) or l2 < 0:
            raise InputError(f"l2 must be a finite number >= 0, got {l2}", source="l2")
        self.target_fpr = target_fpr
        self.folds = folds
        self.l2 = l2
        self.seed = seed
        self.loaded_from: Path | None = None

    # -- fitting ---------------------------------------------------------------------------------------------

    def fit(
        self,
        chunks: Sequence[tuple[str, str]],
        embedder: Any,
        *,
        answers: Sequence[LabelledAnswer] = (),
        judge: Scorer | None = None,
    ) -> GroundingCalibration:
        """Make claims from ``chunks`` ((id, text)), fit the model (unless ``judge`` scores), calibrate."""
        examples = generate(chunks, embedder, seed=self.seed)
        groups = sorted({e.group for e in examples})
        rng = random.Random(self.seed)
        rng.shuffle(groups)
        fold_of_group = {g: i % self.folds for i, g in enumerate(groups)}
        example_fold = np.array([fold_of_group[e.group] for e in examples])
        shuffled = list(answers)
        rng.shuffle(shuffled)
        if judge is None:
            features = AlignmentScorer(_blank_model(), embedder)
            example_x = np.vstack([features.features([e.claim], EvidenceSet.build(e.evidence))[0] for e in examples])
            labels = np.array([e.label for e in examples], dtype=np.int64)
            oof_examples = self._cross_fit(example_x, labels, example_fold)
            self.model_: SoftmaxModel | None = _fit(example_x, labels, self.l2)
            self.judge_: dict[str, Any] | None = None
            scorer: Scorer = AlignmentScorer(self.model_, embedder)
        else:
            oof_examples = np.array(
                [_support(assess(e.claim, "", e.evidence, judge).support) for e in examples], dtype=np.float64
            )
            self.model_ = None
            self.judge_ = dict(getattr(judge, "describe", dict)())
            scorer = judge
        scorer_name = scorer.name
        # labelled answers were never fitted on: the final scorer's supports are out of sample already
        oof_answers = [
            np.array([v.support for v in assess(a.answer, a.question, a.documents, scorer).verdicts]) for a in shuffled
        ]
        supports = _answer_supports(examples, oof_examples, rng)
        supports += [
            float(v.min()) for a, v in zip(shuffled, oof_answers, strict=True) if a.label == "supported" and len(v)
        ]
        if not supports:
            raise InputError("no supported calibration answers could be made from the corpus", source="corpus")
        self.scores_ = np.sort(np.asarray(supports, dtype=np.float64))
        self.scorer_name_ = scorer_name
        self.embedder_ = str(getattr(embedder, "name", type(embedder).__name__))
        self.corpus_ = corpus_digest(chunks)
        self.n_chunks_ = len(chunks)
        self.n_answers_ = len(answers)
        self.created_ = time.time()
        self.heldout_ = self._heldout(examples, oof_examples, shuffled, oof_answers)
        return self

    def _cross_fit(self, x: np.ndarray, labels: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
        """Out-of-fold P(supported) of each synthetic claim: scored by a model fitted without its chunk fold."""
        oof = np.zeros(len(x))
        for fold in range(self.folds):
            rows = np.flatnonzero(fold_of == fold)
            if len(rows):
                model = _fit(x[fold_of != fold], labels[fold_of != fold], self.l2)
                oof[rows] = model.predict_proba(x[rows])[:, 0]
        return oof

    def _heldout(
        self,
        examples: Sequence[Example],
        supports: np.ndarray,
        answers: Sequence[LabelledAnswer],
        answer_supports: Sequence[np.ndarray],
    ) -> dict[str, Any]:
        """Out-of-fold rates: synthetic claims (one claim an answer) and, when given, the labelled answers:
        AUROC of 1 - support for supported vs the rest, and the flagged rate per label at the threshold."""
        threshold = self.threshold(self.target_fpr)
        out: dict[str, Any] = {"method": f"{self.folds}-fold out-of-fold by chunk"}
        parts = [("synthetic", supports, np.array([e.label for e in examples]))]
        scored = [
            (float(v.min()), LABELS.index(a.label)) for a, v in zip(answers, answer_supports, strict=True) if len(v)
        ]
        if scored:
            parts.append(("answers", np.array([s for s, _ in scored]), np.array([y for _, y in scored])))
        for name, s, y in parts:
            score = auroc(1.0 - s, y != SUPPORTED)
            out[name] = {
                "n": len(s),
                "auroc": round(score, 4) if np.isfinite(score) else None,
                "flagged_rate": {
                    LABELS[c]: round(float(np.mean(s[y == c] < threshold)), 4) if np.any(y == c) else None
                    for c in range(len(LABELS))
                },
            }
        return out

    # -- applying --------------------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "scores_"):
            raise NotFittedError("this GroundingCalibration is not fitted: call fit() or load an artifact")

    def threshold(self, target_fpr: float) -> float:
        """The support below which an answer is flagged, for ``target_fpr`` (InputError if n is too small)."""
        self._check_fitted()
        n = len(self.scores_)
        k = fpr_rank(n, target_fpr)
        if k > n:
            raise InputError(
                f"{n} calibration answers are too few for a false-positive rate of {target_fpr} "
                f"(need at least {least_benign(target_fpr)})",
                source="target_fpr",
            )
        return float(self.scores_[n - k])

    def flagged_rate(self, threshold: float) -> float:
        """Fraction of calibration answers flagged at ``threshold`` (in-sample)."""
        self._check_fitted()
        return float(np.mean(self.scores_ < threshold))

    def scorer(self, embedder: Any, *, judge: Scorer | None = None, path: str | Path | None = None) -> Scorer:
        """The scorer this calibration was made for: the fitted alignment model on ``embedder`` (refused when
        the embedder differs), or ``judge`` when the calibration was made with a judge."""
        self._check_fitted()
        if self.model_ is None:
            if judge is None:
                raise ArtifactError(
                    path, "this grounding calibration was made for a judge endpoint", fix="set grounding.judge"
                )
            if judge.name != self.scorer_name_:
                raise ArtifactError(
                    path,
                    f"calibrated with judge {self.scorer_name_!r}, the policy names {judge.name!r}",
                    fix=f"use the same judge, or {FIX} --judge-url ...",
                )
            return judge
        name = str(getattr(embedder, "name", type(embedder).__name__))
        if name != self.embedder_:
            raise ArtifactError(
                path,
                f"grounding calibration was made with embedder {self.embedder_!r}, this Guard embeds with {name!r}",
                fix=f"use the embedder it was made with, or {FIX}",
            )
        return AlignmentScorer(self.model_, embedder)

    def describe(self, target_fpr: float | None = None) -> str:
        """One line for ``policy check``: scorer, target, n, threshold, in-sample and held-out rates."""
        target = self.target_fpr if target_fpr is None else target_fpr
        threshold = self.threshold(target)
        synthetic = self.heldout_.get("synthetic", {})
        held = synthetic.get("flagged_rate", {})
        scorer = "judge " + self.scorer_name_ if self.model_ is None else "offline alignment scorer"
        return (
            f"grounding.flagged: support < {threshold:.4f}, {scorer}, target false-positive rate {target} on "
            f"{len(self.scores_)} supported calibration answers (cross-conformal, out-of-fold; in-sample "
            f"{self.flagged_rate(threshold):.3f}); out-of-fold synthetic claims: AUROC {synthetic.get('auroc')}, "
            f"flagged supported {held.get('supported')}, contradicted {held.get('contradicted')}, unsupported "
            f"{held.get('unsupported')}; corpus {self.corpus_[:12]} ({self.n_chunks_} chunks, "
            f"{self.n_answers_} labelled answers)"
        )

    # -- artifact --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The artifact's fields (JSON-compatible)."""
        self._check_fitted()
        from .. import __version__

        return {
            "kind": KIND,
            "format": FORMAT_VERSION,
            "library_version": __version__,
            "created": self.created_,
            "features": FEATURES_ID,
            "feature_names": list(FEATURE_NAMES),
            "embedder": self.embedder_,
            "scorer": self.scorer_name_,
            "model": None if self.model_ is None else self.model_.to_json(),
            "judge": self.judge_,
            "corpus": self.corpus_,
            "n_chunks": self.n_chunks_,
            "n_answers": self.n_answers_,
            "target_fpr": self.target_fpr,
            "folds": self.folds,
            "l2": self.l2,
            "seed": self.seed,
            "n": len(self.scores_),
            "threshold": self.threshold(self.target_fpr),
            "achieved_fpr": self.flagged_rate(self.threshold(self.target_fpr)),
            "scores": self.scores_.tolist(),
            "heldout": self.heldout_,
        }

    def save(self, path: str | Path) -> Path:
        """Write the checksummed artifact atomically."""
        return write_artifact(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> GroundingCalibration:
        """Read an artifact; ArtifactError when it is missing, damaged, edited, or of another feature set."""
        path = Path(path)
        data = read_artifact(path, kind=KIND, version=FORMAT_VERSION, what="grounding calibration", fix=FIX)
        if data.get("features") != FEATURES_ID or data.get("feature_names") != list(FEATURE_NAMES):
            raise ArtifactError(
                path, f"made with features {data.get('features')!r}, this version makes {FEATURES_ID!r}", fix=FIX
            )
        made = cls(
            target_fpr=float(field(data, "target_fpr", (int, float), path, FIX)),
            folds=int(field(data, "folds", int, path, FIX)),
            l2=float(field(data, "l2", (int, float), path, FIX)),
            seed=int(field(data, "seed", int, path, FIX)),
        )
        scores = np.asarray(field(data, "scores", list, path, FIX), dtype=np.float64)
        if scores.ndim != 1 or not len(scores) or not np.all(np.isfinite(scores)) or np.any(np.diff(scores) < 0):
            raise ArtifactError(path, "field 'scores' must be a non-empty sorted list of finite numbers", fix=FIX)
        made.scores_ = scores
        try:
            made.model_ = (
                None if data.get("model") is None else SoftmaxModel.from_json(data["model"], len(FEATURE_NAMES))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(path, f"field 'model' is unusable: {exc}", fix=FIX) from None
        made.judge_ = data.get("judge")
        made.scorer_name_ = field(data, "scorer", str, path, FIX)
        made.embedder_ = field(data, "embedder", str, path, FIX)
        made.corpus_ = field(data, "corpus", str, path, FIX)
        made.n_chunks_ = int(field(data, "n_chunks", int, path, FIX))
        made.n_answers_ = int(field(data, "n_answers", int, path, FIX))
        made.created_ = float(field(data, "created", (int, float), path, FIX))
        made.heldout_ = field(data, "heldout", dict, path, FIX)
        made.loaded_from = path
        return made


def _support(value: float | None) -> float:
    return 1.0 if value is None else float(value)


def _fit(x: np.ndarray, y: np.ndarray, l2: float) -> SoftmaxModel:
    """The scorer's model: the contradicted class reads only conflicts and alignment, and every weight whose
    direction is known has that sign (:data:`.align.FEATURE_SIGNS`)."""
    mask = np.ones((len(LABELS), len(FEATURE_NAMES)))
    mask[LABELS.index("contradicted")] = [name in CONTRADICTION_FEATURES for name in FEATURE_NAMES]
    signs = np.array([[FEATURE_SIGNS.get((label, name), 0) for name in FEATURE_NAMES] for label in LABELS])
    return SoftmaxModel.fit(x, y, l2=l2, sample_weight=_class_weights(y), mask=mask, signs=signs)


def _answer_supports(examples: Sequence[Example], supports: np.ndarray, rng: random.Random) -> list[float]:
    """Supports of synthetic supported answers: 1-3 supported claims of one chunk, the lowest claim support."""
    by_group: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        if e.label == SUPPORTED and e.kind in _ANSWER_KINDS:
            by_group.setdefault(e.group, []).append(i)
    out = []
    for group in sorted(by_group):
        pool = by_group[group]
        rng.shuffle(pool)
        while pool:
            size = min(rng.choice((1, 1, 2, 3)), len(pool))
            part, pool = pool[:size], pool[size:]
            out.append(float(supports[part].min()))
    return out


def _blank_model() -> SoftmaxModel:
    """A model of the right shape whose predictions are ignored: lets a scorer compute features only."""
    d = len(FEATURE_NAMES)
    return SoftmaxModel(np.zeros((len(LABELS), d)), np.zeros(len(LABELS)), np.zeros(d), np.ones(d))
