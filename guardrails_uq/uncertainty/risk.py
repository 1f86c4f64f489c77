"""Risk-controlled deferral: the most permissive uncertainty threshold whose error among allowed answers is at
most a target, with probability at least 1 - delta (Learn then Test; Angelopoulos et al., 2021).

Setting. Calibration calls i = 1..n, each with an uncertainty score s_i (higher = less sure) and a label
(correct or not), exchangeable with future calls. A threshold t allows the answers with s <= t and defers
the rest. Its *selective risk* is R(t) = P(incorrect | s <= t), the error among allowed answers.

Procedure (fixed-sequence testing). Candidate thresholds are the distinct calibration scores, ordered from
the most conservative (fewest answers allowed) to the most permissive. For each candidate t, with n_t
allowed calibration answers of which k_t are wrong, the null hypothesis H_t: R(t) > target is tested with
the exact binomial p-value p_t = P(Binomial(n_t, target) <= k_t): given the scores, the allowed answers'
labels are independent Bernoulli(R(t)) draws, so p_t is valid. A walk rejects H_t while p_t <= its level
and stops at its first failure; fixed-sequence testing controls the family-wise error of one walk at its
level without a multiplicity correction. ``STARTS`` walks begin at evenly spaced candidates (from
:func:`start_size`, the smallest set on which half the target error could be certified, to the most
permissive), each at level delta / STARTS, so the union of their rejections has family-wise error at most
delta (Bonferroni), hence P(R(t_hat) > target) <= delta for the most permissive rejected t_hat. Where the
walks start depends on the target, delta and the number of calls only, never on the labels.

Why binomial and not Hoeffding-Bentkus: the loss here is 0/1 (wrong or not), for which the binomial tail is
exact and strictly tighter; Hoeffding-Bentkus is the right tool for bounded non-binary losses.

When no threshold can be certified (too few calls, or the target is below what the model achieves even
on its surest answers), the result says so and allows nothing (every answer deferred): never a silent
fallback to an uncertified number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..artifacts import field, read_artifact, write_artifact
from ..errors import ArtifactError, InputError
from ..numbers import DELTA, TARGET_ERROR

KIND = "guardrails-uq/deferral-calibration"
FORMAT_VERSION = 1
METHOD = "learn-then-test, fixed-sequence with 10 starts (Bonferroni), exact binomial p-value"
#: Walks started at evenly spaced candidates (by allowed count). One walk stops at its first failure, so a
#: chance error among the surest answers would end it; several starts, each at delta / STARTS, make the
#: procedure robust to that at a small cost in power.
STARTS = 10


@dataclass(frozen=True)
class RiskControl:
    """A certified deferral threshold: allow an answer when its ``score`` <= ``threshold``.

    ``certified`` False means no threshold met the target at level ``delta``: ``threshold`` is -inf
    (stored as null) and every answer is deferred."""

    score: str
    target_error: float
    delta: float
    n: int
    threshold: float
    certified: bool
    allowed_fraction: float
    calibration_error: float | None
    p_value: float | None
    method: str = METHOD

    def defer(self, value: float | None) -> bool:
        """True when an answer with this score must be deferred (a missing or non-finite score always is)."""
        if value is None or not math.isfinite(value):
            return True
        return not value <= self.threshold

    # -- artifact --------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the sealed JSON artifact (the threshold -inf of an uncertified result is stored as null)."""
        data: dict[str, Any] = {"format": FORMAT_VERSION, "kind": KIND, **asdict(self)}
        data["threshold"] = self.threshold if math.isfinite(self.threshold) else None
        return write_artifact(path, data)

    @classmethod
    def load(cls, path: str | Path) -> RiskControl:
        """Read an artifact; ArtifactError when it is missing, damaged, edited or of another format."""
        fix = "recalibrate: guardrails-uq calibrate deferral --calls calls.jsonl --score ... -o FILE"
        data = read_artifact(path, kind=KIND, version=FORMAT_VERSION, what="deferral calibration", fix=fix)
        threshold = data.get("threshold")
        certified = field(data, "certified", bool, path, fix)
        if threshold is None and certified:
            raise ArtifactError(path, "a certified calibration needs a threshold", fix=fix)
        return cls(
            score=field(data, "score", str, path, fix),
            target_error=float(field(data, "target_error", (int, float), path, fix)),
            delta=float(field(data, "delta", (int, float), path, fix)),
            n=field(data, "n", int, path, fix),
            threshold=-math.inf if threshold is None else float(field(data, "threshold", (int, float), path, fix)),
            certified=certified,
            allowed_fraction=float(field(data, "allowed_fraction", (int, float), path, fix)),
            calibration_error=data.get("calibration_error"),
            p_value=data.get("p_value"),
            method=field(data, "method", str, path, fix),
        )


def _check_inputs(scores: np.ndarray, incorrect: np.ndarray, target: float, delta: float) -> None:
    if len(scores) != len(incorrect):
        raise InputError(f"{len(scores)} scores but {len(incorrect)} labels", source="calibrate deferral")
    TARGET_ERROR.check(target, "target_error")
    DELTA.check(delta, "delta")
    if scores.dtype.kind not in "fiu" or not np.all(np.isfinite(scores)):
        raise InputError("every score must be a finite number (answers without logprobs have no score)",
                         source="calibrate deferral")  # fmt: skip


def start_size(target_error: float, delta: float) -> int:
    """Where the walk starts: the fewest allowed answers at which an error rate of half the target would be
    certified (at least one error tolerated). Depends on the target and delta only, never on labels, so
    starting there keeps validity; starting earlier wastes the walk on sets too small to certify (one early
    error would stop it)."""
    from scipy.stats import binom  # here, not at import: scipy costs ~67 MB in every Guard otherwise

    n = max(1, math.ceil(2 / target_error))
    while binom.cdf(math.floor(n * target_error / 2), n, target_error) > delta:
        n += 1
    return n


def calibrate_risk(
    scores: ArrayLike, incorrect: ArrayLike, *, target_error: float, delta: float, score: str
) -> RiskControl:
    """The most permissive threshold certified by fixed-sequence testing (see the module docstring)."""
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("every score must be a number", source="calibrate deferral") from None
    wrong = np.asarray(incorrect, dtype=bool)
    _check_inputs(s, wrong, target_error, delta)
    order = np.argsort(s, kind="stable")
    s, wrong = s[order], wrong[order]
    errors = np.cumsum(wrong)
    # candidate thresholds: each distinct score; allowed count = last index with that score + 1
    last_of_value = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    allowed = last_of_value + 1
    k = errors[last_of_value]
    from scipy.stats import binom

    p_values = binom.cdf(k, allowed, target_error)
    level = delta / STARTS  # Bonferroni over the walks: each controls its family-wise error at delta / STARTS
    eligible = np.flatnonzero(allowed >= start_size(target_error, level))
    best = None
    if len(eligible):
        starts = np.unique(np.linspace(0, len(eligible) - 1, min(STARTS, len(eligible))).astype(int))
        for first in eligible[starts]:
            for j in range(first, len(allowed)):
                if p_values[j] > level:
                    break
                best = j if best is None else max(best, j)
    n = len(s)
    if best is None:
        return RiskControl(score, target_error, delta, n, -math.inf, False, 0.0, None, None)
    return RiskControl(
        score=score,
        target_error=target_error,
        delta=delta,
        n=n,
        threshold=float(s[last_of_value[best]]),
        certified=True,
        allowed_fraction=float(allowed[best] / n),
        calibration_error=float(k[best] / allowed[best]),
        p_value=float(p_values[best]),
    )


def evaluate_risk_control(
    scores: ArrayLike,
    incorrect: ArrayLike,
    *,
    target_error: float,
    delta: float,
    splits: int = 200,
    calibration_fraction: float = 0.5,
    seed: int = 0,
) -> dict[str, float]:
    """Random calibration/test splits: calibrate on one part, measure the error among allowed test answers.

    ``violation_rate`` = share of splits whose test error among allowed exceeds the target (it should stay at
    or under delta, up to sampling noise); ``realized_error_mean`` and ``allowed_fraction`` average the test
    error among allowed answers (splits that allow nothing count as error 0) and the share allowed."""
    s = np.asarray(scores, dtype=np.float64)
    wrong = np.asarray(incorrect, dtype=bool)
    rng = np.random.default_rng(seed)
    cut = int(len(s) * calibration_fraction)
    violations, errors, fractions, certified = 0, [], [], 0
    for _ in range(splits):
        order = rng.permutation(len(s))
        cal, test = order[:cut], order[cut:]
        control = calibrate_risk(s[cal], wrong[cal], target_error=target_error, delta=delta, score="eval")
        allowed = s[test] <= control.threshold
        error = float(wrong[test][allowed].mean()) if allowed.any() else 0.0
        violations += error > target_error
        errors.append(error)
        fractions.append(float(allowed.mean()))
        certified += control.certified
    return {
        "target_error": target_error,
        "delta": delta,
        "violation_rate": violations / splits,
        "realized_error_mean": float(np.mean(errors)),
        "allowed_fraction": float(np.mean(fractions)),
        "certified_fraction": certified / splits,
        "splits": splits,
    }
