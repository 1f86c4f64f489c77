"""guardrails-uq: guardrail middleware for LLM applications.

A YAML policy turns four measured signals (guidelines, conformal retrieval, provenance, uncertainty) into
allow, abstain or escalate. Start with :meth:`Guard.from_policy`.
"""

from __future__ import annotations

from .audit import open_audit, read_audit
from .call import Call, Generation, Message, ScoredDocument, TokenLogprob, ToolCall, TopLogprob
from .checks import Check, CheckSpec, Signals, SignalSpec
from .decision import Action, CheckFailure, Decision, Shadow
from .embeddings import Embedder, as_embedder
from .errors import (
    AbstainViolation,
    ArtifactError,
    CheckError,
    EscalateViolation,
    GuardrailsError,
    GuardrailViolation,
    InputError,
    ModelError,
    NotFittedError,
    PolicyError,
    RuleEvaluationError,
    violation_for,
)
from .guard import Guard
from .policy import CompiledPolicy, load_policy, loads_policy

__version__ = "0.1.0"

__all__ = [
    "AbstainViolation",
    "Action",
    "ArtifactError",
    "Call",
    "Check",
    "CheckError",
    "CheckFailure",
    "CheckSpec",
    "CompiledPolicy",
    "Decision",
    "Embedder",
    "EscalateViolation",
    "Generation",
    "Guard",
    "GuardrailViolation",
    "GuardrailsError",
    "InputError",
    "Message",
    "ModelError",
    "NotFittedError",
    "PolicyError",
    "RuleEvaluationError",
    "ScoredDocument",
    "Shadow",
    "SignalSpec",
    "Signals",
    "TokenLogprob",
    "ToolCall",
    "TopLogprob",
    "__version__",
    "as_embedder",
    "load_policy",
    "loads_policy",
    "open_audit",
    "read_audit",
    "violation_for",
]
