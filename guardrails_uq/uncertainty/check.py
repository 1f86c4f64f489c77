"""The uncertainty check: token scores from logprobs, sample scores from extra samples, defer_prob."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..call import Call, TokenLogprob
from ..checks import Signals
from ..errors import ArtifactError, CheckError
from .deferral import PostHocDeferral
from .risk import RiskControl
from .sample_scores import sample_scores
from .token_scores import TOKEN_SCORE_NAMES, token_scores

_SAMPLE_NAMES = ("num_sem_sets", "eigv", "deg", "ecc")
#: A log-probability above 0 is a probability above 1; providers round, so allow this much above 0.
LOGPROB_TOLERANCE = 1e-4


def validate_tokens(tokens: Sequence[TokenLogprob]) -> None:
    """Raise CheckError when token logprobs cannot be a model's: a logprob (chosen or alternative) that is
    not finite or above ``LOGPROB_TOLERANCE`` (a probability above 1)."""
    for i, token in enumerate(tokens):
        for where, value in (("logprob", token.logprob), *(("top alternative", a.logprob) for a in token.top)):
            if not math.isfinite(value) or value > LOGPROB_TOLERANCE:
                raise CheckError(
                    "uncertainty",
                    f"malformed model output: token {i} ({token.token!r}) has {where} {value!r}; "
                    "a log-probability must be finite and <= 0",
                )


class UncertaintyCheck:
    """Output-phase check. Thread-safe: read-only state (the embedder is thread-safe by contract)."""

    name = "uncertainty"
    phase = "output"

    def __init__(
        self,
        *,
        score: str = "g_nll",
        deferral_path: Path | None = None,
        deferral: PostHocDeferral | None = None,
        embedder: Any = None,
        set_threshold: float = 0.85,
        calibration_path: Path | None = None,
        calibration: RiskControl | None = None,
    ) -> None:
        self.score = score
        self.deferral = deferral or (PostHocDeferral.load(deferral_path) if deferral_path else None)
        self.embedder = embedder
        self.set_threshold = set_threshold
        self.calibration = calibration or (RiskControl.load(calibration_path) if calibration_path else None)
        if self.calibration is not None:
            known = {*TOKEN_SCORE_NAMES, "defer_prob"}
            if self.calibration.score not in known:
                raise ArtifactError(
                    calibration_path, f"calibrated score {self.calibration.score!r} is not one of {sorted(known)}"
                )
            if self.calibration.score == "defer_prob" and self.deferral is None:
                raise ArtifactError(
                    calibration_path,
                    "the calibration thresholds defer_prob but no deferral model is configured",
                    fix="set uncertainty.deferral to the model the calibration was made with",
                )

    def run(self, call: Call) -> Signals:
        generation = call.generation
        tokens = generation.tokens if generation is not None else None
        values: dict[str, Any] = {"uncertainty.available": bool(tokens), "uncertainty.tokens": len(tokens or [])}
        evidence: dict[str, Any] = {}
        if tokens:
            validate_tokens(tokens)
            scores = token_scores(tokens)
            values.update({f"uncertainty.{k}": v for k, v in scores.items()})
            values["uncertainty.score"] = scores[self.score]
            values["uncertainty.defer_prob"] = self.deferral.predict(tokens) if self.deferral else None
            evidence["tokens"] = [{"token": t.token, "logprob": round(t.logprob, 4)} for t in tokens]
        else:
            values.update({f"uncertainty.{k}": None for k in TOKEN_SCORE_NAMES})
            values["uncertainty.score"] = None
            values["uncertainty.defer_prob"] = None
            evidence["note"] = "the model returned no logprobs"
        if self.calibration is not None:
            value = values.get(f"uncertainty.{self.calibration.score}")
            values["uncertainty.defer"] = self.calibration.defer(value)
            values["uncertainty.defer_threshold"] = self.calibration.threshold
        else:
            values["uncertainty.defer"] = None
            values["uncertainty.defer_threshold"] = None
        samples = [generation.text, *generation.samples] if generation is not None and generation.samples else []
        values["uncertainty.samples"] = len(samples)
        if len(samples) >= 2 and self.embedder is not None:
            values.update(
                {
                    f"uncertainty.{k}": v
                    for k, v in sample_scores(self.embedder.embed(samples), set_threshold=self.set_threshold).items()
                }
            )
        else:
            values.update({f"uncertainty.{k}": None for k in _SAMPLE_NAMES})
        return Signals(values=values, evidence=evidence)
