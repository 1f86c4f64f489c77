"""The parts of a Decision's evidence that ``guardrails-uq report`` prints, validated into typed views.

Evidence is free-form data read back from an audit log, which anyone who can write the file can edit. The report
never formats a raw evidence value: :func:`evidence_view` turns the fields it prints into these models (numbers
are Python numbers, texts are strings the report escapes), and a record whose printed evidence does not fit
(a string where a number belongs, a token log-probability that is not finite or above 0) raises
:class:`MalformedEvidence`, so the report skips and counts it instead of failing or printing it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .decision import Decision
from .errors import InputError
from .numbers import LOGPROB_TOLERANCE

Count = Annotated[int, Field(ge=0)]


class MalformedEvidence(InputError):
    """A logged Decision's evidence does not have the shape the report prints; carries the decision id."""

    def __init__(self, decision_id: str, problem: str) -> None:
        self.decision_id = decision_id
        super().__init__(f"decision {decision_id}: evidence the report prints is malformed: {problem}")


class _View(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)


class TokenView(_View):
    """One generated token and its log-probability (finite, at most ``LOGPROB_TOLERANCE``)."""

    token: str
    logprob: Annotated[float, Field(allow_inf_nan=False, le=LOGPROB_TOLERANCE)]


class SourceView(_View):
    """Where a copied span occurs in the corpus."""

    doc: str
    offset: Count


class SpanView(_View):
    """A span of the answer found verbatim in the provenance corpus."""

    text: str
    bci: float
    count: Count
    length: Count
    sources: list[SourceView] = []


class GuidelineView(_View):
    """A guideline injected into the prompt."""

    id: str
    title: str
    category: str
    score: float


class ChunkView(_View):
    """A retrieved chunk and its score."""

    id: str
    score: float


class RetrievalView(_View):
    """The conformal filter: the threshold and the chunks it kept and dropped."""

    score_kind: str | None = None
    alpha: float | None = None
    threshold: float | None = None
    kept: list[ChunkView] = []
    dropped: list[ChunkView] = []


class DeferralView(_View):
    """The risk-controlled deferral rule an answer was held to."""

    score: str
    value: float | None = None
    threshold: float | None = None
    target_error: float
    delta: float
    n: Count


class ClaimView(_View):
    """A claim of the answer, its grounding verdict and the evidence sentence it was aligned with."""

    claim: str
    verdict: str
    support: Annotated[float, Field(allow_inf_nan=False, ge=0, le=1)]
    contradiction: Annotated[float, Field(allow_inf_nan=False, ge=0, le=1)]
    document: str
    sentence: str


class GroundingView(_View):
    """The grounding check: its threshold and every claim."""

    threshold: Annotated[float, Field(allow_inf_nan=False)]
    claims: list[ClaimView] = []


class EvidenceView(_View):
    """Everything the report prints from one Decision's evidence."""

    tokens: list[TokenView] = []
    spans: list[SpanView] = []
    guidelines: list[GuidelineView] = []
    retrieval: RetrievalView | None = None
    deferral: DeferralView | None = None
    grounding: GroundingView | None = None


def _section(evidence: dict[str, Any], name: str) -> dict[str, Any]:
    value = evidence.get(name)
    return value if isinstance(value, dict) else {}


def evidence_view(decision: Decision) -> EvidenceView:
    """The printed evidence of ``decision``, validated. MalformedEvidence (naming the decision and the field)
    when any of it has the wrong type or an impossible value."""
    evidence = decision.evidence
    uncertainty = _section(evidence, "uncertainty")
    raw = {
        "tokens": uncertainty.get("tokens") or [],
        "spans": _section(evidence, "provenance").get("spans") or [],
        "guidelines": _section(evidence, "guidelines").get("guidelines") or [],
        "retrieval": evidence.get("retrieval"),
        "deferral": uncertainty.get("deferral"),
        "grounding": evidence.get("grounding"),
    }
    try:
        return EvidenceView.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise MalformedEvidence(decision.id, f"{where}: {error['msg']}") from None
