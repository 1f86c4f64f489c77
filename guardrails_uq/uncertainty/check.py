"""The uncertainty check: token scores from logprobs, sample scores from extra samples, defer_prob, the
claim-level view (per sentence), TokenSAR, and the risk-controlled deferral flag."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..call import Call, Generation, TokenLogprob
from ..checks import Signals
from ..errors import ArtifactError, CheckError
from ..numbers import LOGPROB_TOLERANCE
from .claims import ClaimStream, claims, worst_claim
from .deferral import PostHocDeferral, feature_vector
from .risk import RiskControl
from .sample_scores import sample_scores
from .sar import leave_one_out, token_relevance, token_sar
from .spec import MAX_SAMPLES
from .token_scores import TOKEN_SCORE_NAMES, TokenScoreStream, token_scores

_SAMPLE_NAMES = ("num_sem_sets", "eigv", "deg", "ecc", "semantic_volume")


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
        set_threshold: float | None = None,
        similarity: str = "combined",
        samples: int = 0,
        sar: bool = False,
        sar_max_tokens: int = 64,
        calibration_path: Path | None = None,
        calibration: RiskControl | None = None,
    ) -> None:
        self.score = score
        self.deferral = deferral or (PostHocDeferral.load(deferral_path) if deferral_path else None)
        self.embedder = embedder
        self.set_threshold = set_threshold
        self.similarity = similarity
        self.samples = samples  # how many the callers request (uncertainty.samples); the check scores what comes
        self.sar = sar
        self.sar_max_tokens = sar_max_tokens
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
        evidence: dict[str, Any] = {}
        if tokens:
            validate_tokens(tokens)
            defer_prob = self.deferral.predict(tokens) if self.deferral else None
            values = self._token_values(len(tokens), token_scores(tokens), defer_prob, evidence)
            evidence["tokens"] = [{"token": t.token, "logprob": round(t.logprob, 4)} for t in tokens]
        else:
            values = self._token_values(0, None, None, evidence)
        values.update(self._claims(tokens, evidence))
        values.update(self._embedding_signals(generation, tokens))
        return Signals(values=values, evidence=evidence)

    def stream(self) -> UncertaintyStream:
        """The signals of a growing answer, updated as tokens arrive (:class:`UncertaintyStream`)."""
        return UncertaintyStream(self)

    def _token_values(
        self, n: int, scores: dict[str, float] | None, defer_prob: float | None, evidence: dict[str, Any]
    ) -> dict[str, Any]:
        """The signals read from the token scores of ``n`` tokens (``scores`` None: no logprobs), the
        deferral probability, and the risk-controlled deferral flag (with its evidence)."""
        values: dict[str, Any] = {"uncertainty.available": n > 0, "uncertainty.tokens": n}
        if scores is not None and n:
            values.update({f"uncertainty.{k}": v for k, v in scores.items()})
            values["uncertainty.score"] = scores[self.score]
            values["uncertainty.defer_prob"] = defer_prob
        else:
            values.update({f"uncertainty.{k}": None for k in TOKEN_SCORE_NAMES})
            values["uncertainty.score"] = None
            values["uncertainty.defer_prob"] = None
            evidence["note"] = "the model returned no logprobs"
        if self.calibration is not None:
            value = values.get(f"uncertainty.{self.calibration.score}")
            values["uncertainty.defer"] = self.calibration.defer(value)
            values["uncertainty.defer_threshold"] = self.calibration.threshold
            control = self.calibration
            evidence["deferral"] = {
                "score": control.score,
                "value": value,
                "threshold": control.threshold if control.certified else None,
                "target_error": control.target_error,
                "delta": control.delta,
                "n": control.n,
                "certified": control.certified,
            }
        else:
            values["uncertainty.defer"] = None
            values["uncertainty.defer_threshold"] = None
        return values

    def _embedding_signals(self, generation: Generation | None, tokens: list[TokenLogprob] | None) -> dict[str, Any]:
        """The signals that need the embedder: sample scores (answer + samples) and TokenSAR, from one
        embedder call (sample texts first, then the answer and its leave-one-token-out variants)."""
        given = generation.samples if generation is not None else []
        # the answer and at most MAX_SAMPLES samples are scored: the work is quadratic in their number
        texts = [generation.text, *given[:MAX_SAMPLES]] if generation is not None and given else []
        sar_tokens = [t.token for t in tokens] if tokens and self._wants_sar(tokens) else []
        batch = texts + (["".join(sar_tokens), *leave_one_out(sar_tokens)] if sar_tokens else [])
        vectors = np.asarray(self.embedder.embed(batch), dtype=np.float64) if batch and self.embedder else None
        out: dict[str, Any] = {"uncertainty.samples": len(given), "uncertainty.token_sar": None}
        out.update({f"uncertainty.{k}": None for k in _SAMPLE_NAMES})
        if texts and vectors is not None:
            found = sample_scores(
                vectors[: len(texts)], texts=texts, similarity=self.similarity, set_threshold=self.set_threshold
            )
            out.update({f"uncertainty.{k}": v for k, v in found.items()})
        if sar_tokens and vectors is not None and tokens:
            relevance = token_relevance(vectors[len(texts)], vectors[len(texts) + 1 :])
            out["uncertainty.token_sar"] = token_sar(np.array([t.logprob for t in tokens]), relevance)
        return out

    def _wants_sar(self, tokens: Sequence[TokenLogprob]) -> bool:
        return bool(self.sar and len(tokens) <= self.sar_max_tokens and self.embedder is not None)

    @staticmethod
    def _claims(tokens: Sequence[TokenLogprob] | None, evidence: dict[str, Any]) -> dict[str, Any]:
        """uncertainty.claims and worst_claim_nll; each claim (sentence) with its scores in the evidence."""
        if not tokens:
            return {"uncertainty.claims": 0, "uncertainty.worst_claim_nll": None}
        found = claims([t.token for t in tokens], [t.logprob for t in tokens])
        evidence["claims"] = [c.as_dict() for c in found]
        worst = worst_claim(found)
        return {"uncertainty.claims": len(found), "uncertainty.worst_claim_nll": worst.mean_nll if worst else None}


class UncertaintyStream:
    """The uncertainty signals of a streamed answer's prefix, kept up to date as tokens arrive: token scores
    (:class:`TokenScoreStream`), deferral from the running quantiles, claims (:class:`ClaimStream`), so a
    decision on the prefix costs O(1) in its length instead of re-reading it. Signals that need the whole
    answer (samples, TokenSAR) are null on a prefix; the final decision computes them. Malformed logprobs
    are found as they arrive and fail every later :meth:`signals` (so ``on_error`` decides)."""

    def __init__(self, check: UncertaintyCheck) -> None:
        self.check = check
        self._scores = TokenScoreStream()
        self._claims = ClaimStream()
        self._pending: list[TokenLogprob] = []  # folded in at the next decision: one batch, not one per piece
        self._error: CheckError | None = None

    def push(self, piece: str, tokens: Sequence[TokenLogprob] | None) -> bool:
        """Add a streamed piece's tokens; never asks for an immediate decision (returns False)."""
        if tokens:
            self._pending.extend(tokens)
        return False

    def signals(self) -> Signals:
        if self._error is not None:  # malformed logprobs fail every later decision of the stream
            raise self._error
        if self._pending:
            batch, self._pending = self._pending, []
            try:
                validate_tokens(batch)
            except CheckError as exc:
                self._error = exc
                raise
            self._scores.push(batch)
            self._claims.push([t.token for t in batch], [t.logprob for t in batch])
        check, n = self.check, self._scores.n
        evidence: dict[str, Any] = {"note": "a stream's prefix: per-token evidence is in the final decision"}
        defer_prob = None
        if n and check.deferral is not None:
            defer_prob = check.deferral.predict_features(feature_vector(self._scores.quantiles(), n))
        values = check._token_values(n, self._scores.scores() if n else None, defer_prob, evidence)
        count, worst = self._claims.summary()
        values.update({"uncertainty.claims": count, "uncertainty.worst_claim_nll": worst})
        values.update(check._embedding_signals(None, None))  # no samples or TokenSAR on a prefix
        return Signals(values=values, evidence=evidence)
