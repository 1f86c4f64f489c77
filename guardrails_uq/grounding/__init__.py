"""Grounding: does the evidence the guard kept say what the answer says? (AlignScore-style claim alignment.)

:func:`assess` scores an answer's claims against evidence documents with a :class:`Scorer`: the offline
:class:`AlignmentScorer` (features + a small model fitted on the operator's knowledge base by
:class:`GroundingCalibration`) or a :class:`JudgeScorer` (an OpenAI-compatible model). The policy section
``grounding`` turns the result into signals (:mod:`.spec`).
"""

from __future__ import annotations

from .assess import Assessment, ClaimVerdict, assess
from .calibration import GroundingCalibration
from .data import LabelledAnswer, read_answers, read_chunks
from .judge import JudgeScorer
from .scorer import AlignmentScorer, EvidenceSet, Scorer

__all__ = [
    "AlignmentScorer",
    "Assessment",
    "ClaimVerdict",
    "EvidenceSet",
    "GroundingCalibration",
    "JudgeScorer",
    "LabelledAnswer",
    "Scorer",
    "assess",
    "read_answers",
    "read_chunks",
]
