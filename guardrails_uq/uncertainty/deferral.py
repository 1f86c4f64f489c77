"""Learned post-hoc deferral (Gupta et al. 2024, "Language Model Cascades: Token-level uncertainty and
beyond", Post-Hoc-Quantile): a logistic model on the vector of per-token NLL quantiles (plus the answer
length) predicts P(answer incorrect); its output is ``uncertainty.defer_prob``.

Fitting is L2-regularised logistic regression by Newton's method (IRLS) on standardised features, in
numpy; the artifact is JSON (weights, feature means and scales, training metrics, a checksum).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import field, read_artifact, write_artifact
from ..call import TokenLogprob
from ..errors import ArtifactError, InputError, NotFittedError
from ..jsonl import read_jsonl
from ..metrics import auroc
from ..numbers import L2, LOGPROB
from .token_scores import QUANTILES, arrays, nll_quantiles, quantile_name

KIND = "guardrails-uq/post-hoc-deferral"
FORMAT_VERSION = 2  # 2: the checksum covers every field (1 covered only the state)
FEATURES: tuple[str, ...] = (*(quantile_name(q) for q in QUANTILES), "log_length")


def features(tokens: Sequence[TokenLogprob]) -> np.ndarray:
    """The feature vector of one answer: NLL quantiles and log(1 + number of tokens)."""
    logprobs, _ = arrays(tokens)
    return feature_vector(nll_quantiles(logprobs), len(tokens))


def feature_vector(quantiles: np.ndarray, n: int) -> np.ndarray:
    """:func:`features` from the NLL quantiles and the number of tokens (a stream keeps both up to date)."""
    return np.concatenate([quantiles, [math.log1p(n)]])


class PostHocDeferral:
    """``fit(token_lists, correct)`` then ``predict(tokens)`` -> P(incorrect). Learned state ends in ``_``."""

    def __init__(self, *, l2: float = 1.0, max_iter: int = 50) -> None:
        """InputError when ``l2`` is outside :data:`guardrails_uq.numbers.L2`."""
        self.l2 = L2.check(l2, "l2")
        self.max_iter = max_iter

    def fit(self, answers: Sequence[Sequence[TokenLogprob]], correct: Sequence[bool]) -> PostHocDeferral:
        if len(answers) != len(correct):
            raise InputError("answers and labels differ in length", source="fit")
        labels = 1.0 - np.asarray(correct, dtype=np.float64)  # 1 = incorrect: the event we defer on
        if len(answers) < 4 or labels.min() == labels.max():
            raise InputError("need at least 4 answers with both correct and incorrect ones", source="fit")
        x = np.stack([features(a) for a in answers])
        self.mean_ = x.mean(axis=0)
        self.scale_ = x.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        z = np.hstack([np.ones((len(x), 1)), (x - self.mean_) / self.scale_])
        w = np.zeros(z.shape[1])
        penalty = np.full(z.shape[1], self.l2)
        penalty[0] = 0.0  # the intercept is not shrunk
        for _ in range(self.max_iter):
            p = 1.0 / (1.0 + np.exp(-(z @ w)))
            gradient = z.T @ (p - labels) + penalty * w
            hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hessian, gradient)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        self.weights_ = w
        self.n_train_ = len(x)
        self.train_auroc_ = auroc(self._predict_matrix(x), labels.astype(bool))
        self.created_ = time.time()
        return self

    def _predict_matrix(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean_) / self.scale_
        return 1.0 / (1.0 + np.exp(-(self.weights_[0] + z @ self.weights_[1:])))

    def predict(self, tokens: Sequence[TokenLogprob]) -> float:
        """P(this answer is incorrect)."""
        if not hasattr(self, "weights_"):
            raise NotFittedError("PostHocDeferral is not fitted: call fit() or load()")
        return self.predict_features(features(tokens))

    def predict_features(self, vector: np.ndarray) -> float:
        """P(incorrect) from a :func:`features` vector."""
        if not hasattr(self, "weights_"):
            raise NotFittedError("PostHocDeferral is not fitted: call fit() or load()")
        return float(self._predict_matrix(vector[None, :])[0])

    def save(self, path: str | Path) -> Path:
        if not hasattr(self, "weights_"):
            raise NotFittedError("PostHocDeferral is not fitted")
        from .. import __version__

        state = {"weights": self.weights_.tolist(), "mean": self.mean_.tolist(), "scale": self.scale_.tolist()}
        data = {
            "format": FORMAT_VERSION,
            "kind": KIND,
            "library_version": __version__,
            "created": self.created_,
            "features": list(FEATURES),
            "l2": self.l2,
            "n_train": self.n_train_,
            "train_auroc": self.train_auroc_,
            "state": state,
        }
        return write_artifact(path, data)

    @classmethod
    def load(cls, path: str | Path) -> PostHocDeferral:
        path = Path(path)
        fix = "refit: guardrails-uq deferral fit ..."
        data = read_artifact(path, kind=KIND, version=FORMAT_VERSION, what="post-hoc deferral model", fix=fix)
        if data.get("features") != list(FEATURES):
            raise ArtifactError(path, f"features {data.get('features')} differ from {list(FEATURES)}", fix=fix)
        state: dict[str, Any] = field(data, "state", dict, path, fix)
        arrays = {}
        for name, size in (("weights", len(FEATURES) + 1), ("mean", len(FEATURES)), ("scale", len(FEATURES))):
            try:
                array = np.asarray(state.get(name), dtype=np.float64)
            except (TypeError, ValueError):
                array = np.empty(0)
            if array.shape not in ((size,),) or not np.all(np.isfinite(array)):
                raise ArtifactError(path, f"state.{name} must hold {size} finite numbers", fix=fix)
            arrays[name] = array
        model = cls(l2=float(field(data, "l2", (int, float), path, fix)))
        model.weights_, model.mean_, model.scale_ = arrays["weights"], arrays["mean"], arrays["scale"]
        model.n_train_ = field(data, "n_train", int, path, fix)
        model.train_auroc_ = field(data, "train_auroc", (int, float, type(None)), path, fix)
        model.created_ = float(field(data, "created", (int, float), path, fix))
        return model


def read_calls(path: str | Path) -> tuple[list[list[TokenLogprob]], list[bool]]:
    """Past calls from JSONL: ``{"logprobs": <chat logprobs object or token list>, "correct": bool}``.
    InputError naming the file and line for a missing field or a log-probability (chosen or alternative)
    outside :data:`guardrails_uq.numbers.LOGPROB` (NaN, infinite, far out of range, above 0)."""
    from .parse import parse_any

    answers, labels = [], []
    for number, record in read_jsonl(path):
        if not isinstance(record.get("correct"), bool):
            raise InputError('each line needs "correct": true or false', source=str(path), line=number)
        try:
            tokens = parse_any(record.get("logprobs"))
        except InputError as exc:
            raise InputError(str(exc), source=str(path), line=number) from None
        if tokens is None:
            raise InputError('each line needs "logprobs"', source=str(path), line=number)
        for i, token in enumerate(tokens):
            for value in (token.logprob, *(alternative.logprob for alternative in token.top)):
                LOGPROB.check(
                    value, f"the log-probability of token {i} ({token.token!r})", source=str(path), line=number
                )
        answers.append(tokens)
        labels.append(record["correct"])
    return answers, labels
