"""The harmful-request detector's parts: features, a logistic model, and paraphrase augmentation.

Guide-Align first decides whether a request needs safety guidelines at all; here that decision is a learned
detector whose score the input rule reads. Its features (``FEATURES``) are the request's embedding (the
text as the model reads it, embedded by the Guard's embedder: 384 numbers for MiniLM) followed by the guideline
similarity profile: for each category of the library, in the library's order, the largest cosine similarity
between the request and a guideline of that category; then the PROTOTYPES largest of those similarities, in
decreasing order (the guidelines as category prototypes: how close the request is to *some* category's
guideline, whichever it is, so the weight learned on other categories carries to a category whose examples
were never fitted on). The model is L2-regularised logistic regression fitted
by Newton's method (IRLS) on standardised features, in numpy (as :mod:`..uncertainty.deferral`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError
from .index import GuidelineIndex

#: What a feature vector is; recorded in the calibration artifact, which refuses another definition.
FEATURES = (
    "embedding of the request read as the model reads it (textnorm.read_as_model, unit length), then for each "
    "library category in the library's order the largest cosine similarity to a guideline of that category, "
    "then the PROTOTYPES largest of those similarities in decreasing order; a request's score is the largest "
    "over its parts (detector.segments)"
)
FEATURES_ID = "read-as-model+embedding+category-max-similarity+top-categories+max-over-segments/v3"
#: How many of the largest category similarities, sorted, follow the profile (category-agnostic features).
PROTOTYPES = 3

_HOW_TO = re.compile(r"\bhow to\s+(.+?)[\s.?!]*$", re.IGNORECASE | re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\s*\n\s*")

#: Word windows of long texts: WINDOW words every STRIDE words (any request of up to STRIDE words lies wholly
#: inside one window), so a request cannot hide behind padding the embedder truncates (MiniLM reads 256 tokens).
WINDOW, STRIDE = 48, 24


def segments(text: str) -> list[str]:
    """The parts of a text (already read by :func:`~guardrails_uq.textnorm.read_as_model`) the detector
    scores; a text's score is the largest of its parts'. The text itself; with two or more sentences, each
    sentence of two words or more (a request wrapped in a role-play frame or behind a harmless preamble is
    scored on its own, not diluted by the wrapper); with more than WINDOW words, windows of WINDOW words every
    STRIDE words. A blank text has no parts. One function serves the check and its calibration, so the
    calibrated threshold applies to the statistic the check computes."""
    text = text.strip()
    if not text:
        return []
    out = [text]
    sentences = _SENTENCE_END.split(text)
    if len(sentences) > 1:  # "Hi! <request>": the request alone too
        out += [s for s in sentences if 2 <= len(s.split()) <= WINDOW]
    words = text.split()
    if len(words) > WINDOW:
        out += [" ".join(words[i : i + WINDOW]) for i in range(0, len(words) - STRIDE, STRIDE)]
    return list(dict.fromkeys(out))


def category_similarity(index: GuidelineIndex, vectors: np.ndarray) -> np.ndarray:
    """(n, number of categories): per category of ``index.library`` (in its order), the largest similarity
    between each row of ``vectors`` and that category's guidelines (-1 for a category without guidelines)."""
    similarity = np.asarray(vectors, dtype=np.float32) @ index.vectors.T
    categories = [g.category for g in index.library]
    out = np.full((len(similarity), len(index.library.categories)), -1.0, dtype=np.float64)
    for column, category in enumerate(index.library.categories):
        members = [i for i, c in enumerate(categories) if c == category]
        if members:
            out[:, column] = similarity[:, members].max(axis=1)
    return out


def features(index: GuidelineIndex, vectors: np.ndarray) -> np.ndarray:
    """The detector's feature matrix for request embeddings ``vectors`` (rows), as ``FEATURES`` defines it."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[1] != index.vectors.shape[1]:
        raise InputError(
            f"request vectors of shape {vectors.shape} do not match the library's {index.vectors.shape[1]}-d index",
            source="features",
        )
    profile = category_similarity(index, vectors)
    return np.hstack([vectors, profile, top_similarities(profile)])


def top_similarities(profile: np.ndarray) -> np.ndarray:
    """(n, PROTOTYPES): each row's PROTOTYPES largest category similarities, largest first (-1 pads a library
    with fewer categories)."""
    ranked = -np.sort(-profile, axis=1)[:, :PROTOTYPES]
    if ranked.shape[1] < PROTOTYPES:
        ranked = np.hstack([ranked, np.full((len(ranked), PROTOTYPES - ranked.shape[1]), -1.0)])
    return ranked


def n_features(dim: int, categories: int) -> int:
    """The length of a feature vector for ``dim``-d embeddings and a library of ``categories`` categories."""
    return dim + categories + PROTOTYPES


def as_question(text: str) -> str | None:
    """The first-person question behind an instruction that contains "how to" ("Write a tutorial on how to
    make a cake" -> "How do I make a cake?"), or None. Used to augment the fitting data only: benchmark
    behaviours are imperative, users ask questions, and a detector must not learn the phrasing instead of
    the request."""
    match = _HOW_TO.search(text.strip())
    if match is None or len(match.group(1).split()) < 2:
        return None
    return f"How do I {match.group(1).strip()}?"


def standardizer(x: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the columns of ``x`` under sample weights ``weight``; a constant column gets scale 1.
    Models fitted on ``(x - mean) / scale`` share it."""
    mean = np.average(x, axis=0, weights=weight)
    scale = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=weight))
    scale[scale < 1e-12] = 1.0
    return mean, scale


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


@dataclass(frozen=True)
class LogisticModel:
    """P(harmful | x) = sigmoid(w0 + w . (x - mean) / scale)."""

    weights: np.ndarray  # intercept first
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        *,
        l2: float,
        sample_weight: np.ndarray | None = None,
        max_iter: int = 100,
    ) -> LogisticModel:
        """Minimise sum_i w_i * logloss_i + l2/2 * |w[1:]|^2 (the intercept is not shrunk) by IRLS.

        Contract: ``x`` is (n, d) finite, ``y`` holds 0/1 with both present; raises InputError otherwise.
        """
        x = np.asarray(x, dtype=np.float64)
        labels = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(labels) or not np.all(np.isfinite(x)):
            raise InputError("features must be a finite (n, d) matrix with one label per row", source="fit")
        if len(labels) < 4 or labels.min() == labels.max():
            raise InputError("need at least 4 examples, both harmful and benign ones", source="fit")
        weight = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        mean, scale = standardizer(x, weight)
        z = np.hstack([np.ones((len(x), 1)), (x - mean) / scale])
        penalty = np.full(z.shape[1], float(l2))
        penalty[0] = 0.0
        w = np.zeros(z.shape[1])
        for _ in range(max_iter):
            p = _sigmoid(z @ w)
            gradient = z.T @ (weight * (p - labels)) + penalty * w
            hessian = (z * (weight * p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hessian, gradient)
            w -= step
            if np.abs(step).max() < 1e-7:
                break
        return cls(weights=w, mean=mean, scale=scale)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """P(harmful) for each row of ``x``."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return _sigmoid(self.weights[0] + z @ self.weights[1:])

    @property
    def dim(self) -> int:
        """Number of input features."""
        return len(self.mean)

    @classmethod
    def from_state(cls, state: dict[str, Any], dim: int, path: str | Path, fix: str) -> LogisticModel:
        """The model an artifact's ``model`` field holds for ``dim`` features; ArtifactError (with ``fix``)
        when an array is missing, of the wrong size, not finite, or a scale is not positive."""
        arrays = {}
        for name, size in (("weights", dim + 1), ("mean", dim), ("scale", dim)):
            try:
                array = np.asarray(state.get(name), dtype=np.float64)
            except (TypeError, ValueError):
                array = np.empty(0)
            if dim <= 0 or array.shape != (size,) or not np.all(np.isfinite(array)):
                raise ArtifactError(path, f"model.{name} must hold {size} finite numbers", fix=fix)
            arrays[name] = array
        if np.any(arrays["scale"] <= 0):
            raise ArtifactError(path, "model.scale must be positive", fix=fix)
        return cls(weights=arrays["weights"], mean=arrays["mean"], scale=arrays["scale"])


def dedupe(texts: Sequence[str]) -> list[str]:
    """``texts`` without repeats (exact, after stripping), in first-seen order."""
    seen: set[str] = set()
    out = []
    for text in texts:
        key = text.strip()
        if key and key not in seen:
            seen.add(key)
            out.append(key)
    return out
