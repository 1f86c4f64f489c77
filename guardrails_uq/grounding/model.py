"""The grounding scorer's model: multinomial logistic regression over alignment features, in numpy.

P(verdict | x) = softmax(W (x - mean) / scale + b) over ``LABELS`` (supported, contradicted, unsupported),
fitted by L-BFGS (scipy) on the mean weighted log-loss plus ``l2 / 2 * |W|^2`` (intercepts not shrunk).
Plain arrays in and out, so the artifact stores it as JSON, never pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

LABELS: tuple[str, ...] = ("supported", "contradicted", "unsupported")


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class SoftmaxModel:
    """Fitted parameters: ``coef`` (classes, d), ``intercept`` (classes,), feature ``mean`` and ``scale``."""

    coef: np.ndarray
    intercept: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        *,
        l2: float = 1e-3,
        sample_weight: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        signs: np.ndarray | None = None,
    ) -> SoftmaxModel:
        """Fit on features ``x`` (n, d) and labels ``y`` (n,) in 0..len(LABELS)-1, every class present.
        ``mask`` (classes, d) of 0/1 says which features each class may read (its other weights stay 0);
        ``signs`` (classes, d) of -1/0/+1 constrains a weight's sign (0: free), e.g. a conflict never raises
        P(supported): prior knowledge that noisy labels cannot overturn.

        Raises InputError on non-finite features, a missing class or a negative ``l2``."""
        from scipy.optimize import minimize

        from ..guidelines.detector import standardizer

        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64)
        k = len(LABELS)
        if x.ndim != 2 or len(x) != len(y) or not np.all(np.isfinite(x)):
            raise InputError("grounding features must be a finite (n, d) matrix with one label per row", source="fit")
        if not np.isfinite(l2) or l2 < 0:
            raise InputError(f"l2 must be a finite number >= 0, got {l2}", source="l2")
        missing = [LABELS[c] for c in range(k) if not np.any(y == c)]
        if missing:
            raise InputError(f"no {', '.join(missing)} examples to fit the grounding scorer on", source="fit")
        weight = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        weight = weight / weight.sum()
        mean, scale = standardizer(x, weight)
        z = (x - mean) / scale
        onehot = np.eye(k)[y]
        d = z.shape[1]
        allowed = np.ones((k, d)) if mask is None else np.asarray(mask, dtype=np.float64)

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w = theta[: k * d].reshape(k, d) * allowed
            b = theta[k * d :]
            logits = z @ w.T + b
            logits -= logits.max(axis=1, keepdims=True)
            log_norm = np.log(np.exp(logits).sum(axis=1, keepdims=True))
            log_p = logits - log_norm
            value = -float((weight[:, None] * onehot * log_p).sum()) + 0.5 * l2 * float((w * w).sum())
            residual = weight[:, None] * (np.exp(log_p) - onehot)
            grad_w = (residual.T @ z + l2 * w) * allowed
            grad_b = residual.sum(axis=0)
            return value, np.concatenate([grad_w.ravel(), grad_b])

        sign = np.zeros((k, d)) if signs is None else np.asarray(signs, dtype=np.float64)
        bounds = [
            (0.0, 0.0)
            if not allowed.flat[i]
            else (0.0, None)
            if sign.flat[i] > 0
            else (None, 0.0)
            if sign.flat[i] < 0
            else (None, None)
            for i in range(k * d)
        ] + [(None, None)] * k
        result = minimize(
            loss, np.zeros(k * d + k), jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 500}
        )
        theta = result.x
        return cls(coef=theta[: k * d].reshape(k, d) * allowed, intercept=theta[k * d :], mean=mean, scale=scale)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, len(LABELS)) probabilities for feature rows ``x``."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return _softmax(z @ self.coef.T + self.intercept)

    def to_json(self) -> dict[str, Any]:
        """Plain lists, for the artifact."""
        return {
            "labels": list(LABELS),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], dim: int) -> SoftmaxModel:
        """Rebuild from :meth:`to_json`; ValueError when shapes or labels do not fit ``dim`` features."""
        if list(data.get("labels", [])) != list(LABELS):
            raise ValueError(f"labels {data.get('labels')!r}, expected {list(LABELS)}")
        coef = np.asarray(data["coef"], dtype=np.float64)
        intercept = np.asarray(data["intercept"], dtype=np.float64)
        mean = np.asarray(data["mean"], dtype=np.float64)
        scale = np.asarray(data["scale"], dtype=np.float64)
        k = len(LABELS)
        if coef.shape != (k, dim) or intercept.shape != (k,) or mean.shape != (dim,) or scale.shape != (dim,):
            raise ValueError(f"model shapes do not match {dim} features")
        if not all(np.all(np.isfinite(a)) for a in (coef, intercept, mean, scale)) or np.any(scale <= 0):
            raise ValueError("model parameters must be finite (scales > 0)")
        return cls(coef=coef, intercept=intercept, mean=mean, scale=scale)
