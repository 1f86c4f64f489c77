"""One answer against its evidence: claims, per-claim verdicts, and the answer's summary scores.

:func:`assess` is the one function behind the check, calibration and evaluation, so all three score an
answer exactly alike. Per claim: ``support`` and ``contradiction`` are the scorer's P(supported) and
P(contradicted) against the aligned evidence sentence; the verdict is supported when the support reaches the
calibrated threshold, else the likelier of contradicted and unsupported. Per answer:
``support`` is the lowest claim support (the weakest claim decides), ``contradiction`` the highest claim
contradiction, ``unsupported_claims`` the number of claims whose verdict is not supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .model import LABELS
from .scorer import EvidenceSet, Scorer
from .text import Claim, claims

#: Most claims scored in one answer, and longest answer; beyond either the check fails (``on_error`` decides).
MAX_CLAIMS = 64
MAX_ANSWER_CHARS = 20_000


@dataclass(frozen=True)
class ClaimVerdict:
    """One claim's outcome and the evidence sentence it was aligned with."""

    claim: Claim
    support: float
    contradiction: float
    verdict: str
    document: str
    sentence: str
    sentence_start: int
    sentence_end: int

    def as_evidence(self) -> dict[str, Any]:
        """JSON-compatible, for the Decision's evidence."""
        return {
            "claim": self.claim.text,
            "start": self.claim.start,
            "end": self.claim.end,
            "support": round(self.support, 4),
            "contradiction": round(self.contradiction, 4),
            "verdict": self.verdict,
            "document": self.document,
            "sentence": self.sentence,
            "sentence_start": self.sentence_start,
            "sentence_end": self.sentence_end,
        }


@dataclass(frozen=True)
class Assessment:
    """The verdicts of every claim; summary values are None when there was nothing to compare."""

    verdicts: tuple[ClaimVerdict, ...]

    @property
    def checked(self) -> bool:
        return bool(self.verdicts)

    @property
    def support(self) -> float | None:
        return min(v.support for v in self.verdicts) if self.verdicts else None

    @property
    def contradiction(self) -> float | None:
        return max(v.contradiction for v in self.verdicts) if self.verdicts else None

    @property
    def unsupported_claims(self) -> int | None:
        return sum(v.verdict != "supported" for v in self.verdicts) if self.verdicts else None

    def weakest(self) -> ClaimVerdict | None:
        """The claim with the lowest support (the one that decides ``support``)."""
        return min(self.verdicts, key=lambda v: v.support, default=None)


def _verdict(probs: Sequence[float], threshold: float | None) -> str:
    """The most probable label; with a threshold, supported exactly when P(supported) >= threshold, else the
    likelier of contradicted and unsupported (so a claim's verdict agrees with the calibrated flag)."""
    if threshold is None:
        return LABELS[max(range(len(LABELS)), key=lambda i: probs[i])]
    if probs[0] >= threshold:
        return LABELS[0]
    return LABELS[1] if probs[1] >= probs[2] else LABELS[2]


def assess(
    answer: str,
    question: str,
    documents: Sequence[tuple[str, str]],
    scorer: Scorer,
    *,
    threshold: float | None = None,
) -> Assessment:
    """Score every claim of ``answer`` (read with ``question`` when short) against ``documents`` ((id, text));
    ``threshold`` (the calibrated one) decides which claims are supported (default: the most probable label).

    No claims, or no evidence sentences: an empty Assessment (summary values None). More than MAX_CLAIMS
    claims: ValueError (the check turns it into a check failure)."""
    if len(answer) > MAX_ANSWER_CHARS:
        raise ValueError(f"the answer has {len(answer):,} characters; at most {MAX_ANSWER_CHARS:,} are scored")
    found = claims(answer, question)
    evidence = EvidenceSet.build(documents)
    if not found or not evidence:
        return Assessment(())
    if len(found) > MAX_CLAIMS:
        raise ValueError(f"the answer has {len(found)} claims; at most {MAX_CLAIMS} are scored")
    scores = scorer.score([c.scored for c in found], evidence)
    verdicts = []
    for claim, probs, aligned in zip(found, scores.probs, scores.aligned, strict=True):
        span = evidence.spans[aligned]
        verdicts.append(
            ClaimVerdict(
                claim=claim,
                support=float(probs[0]),
                contradiction=float(probs[1]),
                verdict=_verdict([float(p) for p in probs], threshold),
                document=evidence.ids[evidence.doc_of[aligned]],
                sentence=span.text,
                sentence_start=span.start,
                sentence_end=span.end,
            )
        )
    return Assessment(tuple(verdicts))
