"""The grounding check: does the evidence the guard kept say what the answer says?

Output phase. The evidence is the call's documents: the chunks that passed the retrieval phase (carried from
the retrieval Decision given as context, or passed to ``Guard.after(documents=...)``), tool results in
agents. The question is the last user message. A tool-calling step (``Generation.kind == "tool_call"``) has
no claims to ground. Without claims or evidence, ``grounding.checked`` is false
and the other values are null: a rule reads ``grounding.checked && grounding.flagged``, and what no evidence
means is the policy's choice. On a streamed prefix (``call.metadata["partial"]``) the last sentence is scored
only once it is complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..call import Call
from ..checks import Signals
from ..errors import ArtifactError, InputError
from ..types import SignalMap
from .assess import Assessment, assess
from .calibration import FIX, GroundingCalibration
from .scorer import Scorer
from .text import sentences

#: Threshold on grounding.support for a judge without a calibration (not calibrated: P(supported) < 0.5).
DEFAULT_JUDGE_THRESHOLD = 0.5


def _complete(answer: str) -> str:
    """``answer`` without a trailing sentence that has not ended yet (for streamed prefixes)."""
    found = sentences(answer)
    if (
        found
        and not found[-1].text.rstrip("\"')]”’").endswith((".", "!", "?", "…"))
        and "\n" not in answer[found[-1].end :]
    ):
        return answer[: found[-1].start]
    return answer


class GroundingCheck:
    """Output-phase check; thread-safe (the scorers are)."""

    name = "grounding"
    phase = "output"

    def __init__(
        self, scorer: Scorer, threshold: float, *, origin: str = "", ccp: bool = False, waits: bool = False
    ) -> None:
        self.scorer = scorer
        self.threshold = float(threshold)
        self.origin = origin
        self.ccp = ccp
        #: True when a judge endpoint scores: the async path runs the check in a worker while others compute
        self.waits = waits

    @classmethod
    def from_config(cls, config: Any, base_dir: Path, embedder: Any) -> GroundingCheck:
        """Build from the policy section: the calibration's scorer (or the judge) and its threshold."""
        judge = None
        if config.judge is not None:
            from ..models.openai_compat import OpenAIChatModel
            from .judge import JudgeScorer

            endpoint = config.judge
            model = OpenAIChatModel(
                endpoint.url,
                endpoint.model,
                api_key_env=endpoint.api_key_env,
                timeout=endpoint.timeout,
                max_retries=endpoint.max_retries,
            )
            judge = JudgeScorer(model, concurrency=endpoint.concurrency)
        if config.calibration is None:
            if judge is None:  # the schema refuses this; kept for direct callers
                raise ArtifactError(None, "the offline grounding scorer needs a calibration artifact", fix=FIX)
            threshold = config.threshold if config.threshold is not None else DEFAULT_JUDGE_THRESHOLD
            origin = "hand-set" if config.threshold is not None else "default"
            return cls(judge, threshold, origin=origin, ccp=config.ccp, waits=True)
        path = Path(config.calibration)
        path = path if path.is_absolute() else base_dir / path
        calibration = GroundingCalibration.load(path)
        scorer = calibration.scorer(embedder, judge=judge, path=path)
        target = config.target_fpr if config.target_fpr is not None else calibration.target_fpr
        try:
            threshold = calibration.threshold(target)
        except InputError as exc:
            raise ArtifactError(path, str(exc), fix=f"state a larger target_fpr, or {FIX}") from None
        return cls(scorer, threshold, origin=str(path), ccp=config.ccp, waits=judge is not None)

    def run(self, call: Call) -> Signals:
        generation = call.generation
        # an agent's tool-calling step: its calls state no facts to ground (their arguments are read by the other
        # checks), the text beside them does (a contradicting answer with a dummy call attached was allowed)
        answer = (
            ""
            if generation is None
            else generation.text
            if generation.kind != "tool_call"
            else generation.content or ""
        )
        if call.metadata.get("partial"):
            answer = _complete(answer)
        documents = [(d.id, d.text) for d in call.documents or () if d.text.strip()]
        result = assess(answer, call.user_input, documents, self.scorer, threshold=self.threshold)
        flagged = None if result.support is None else result.support < self.threshold
        values: SignalMap = {
            "grounding.checked": result.checked,
            "grounding.claims": len(result.verdicts),
            "grounding.support": result.support,
            "grounding.contradiction": result.contradiction,
            "grounding.unsupported_claims": result.unsupported_claims,
            "grounding.flagged": flagged,
            "grounding.threshold": self.threshold,
            "grounding.ccp": None,
        }
        evidence = self._evidence(result, len(documents))
        tokens = generation.tokens if generation is not None and answer else None
        if self.ccp and tokens and any(t.top for t in tokens):
            from .ccp import claim_ccp, uncertainty

            per_claim = claim_ccp(tokens, self.scorer)
            values["grounding.ccp"] = uncertainty(per_claim)
            evidence["ccp"] = [{"claim": text, "ccp": round(value, 4)} for text, value in per_claim]
        return Signals(values=values, evidence=evidence)

    def _evidence(self, result: Assessment, documents: int) -> dict[str, Any]:
        failing = [v for v in result.verdicts if v.support < self.threshold]
        explain = [
            f"claim {v.claim.text!r} is {v.verdict} (support {v.support:.2f}, contradiction {v.contradiction:.2f}) "
            f"by {v.document}: {v.sentence!r}"
            for v in sorted(failing, key=lambda v: v.support)
        ]
        return {
            "scorer": self.scorer.name,
            "threshold": self.threshold,
            "threshold_origin": self.origin,
            "documents": documents,
            "claims": [v.as_evidence() for v in result.verdicts],
            "explain": explain,
        }
