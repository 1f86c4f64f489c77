"""LangChain integration of guardrails-uq."""

from __future__ import annotations

from guardrails_uq import AbstainViolation, EscalateViolation, GuardrailViolation

from .callbacks import AsyncGuardrailsCallbackHandler, GuardrailsCallbackHandler
from .chat_models import GuardedChatModel
from .embeddings import GuardrailsEmbeddings
from .fallbacks import fallback_on_escalate
from .input_guard import input_guard
from .middleware import GuardrailsMiddleware
from .retrievers import ConformalRetriever, calibrate_retriever
from .smollm2 import ChatSmolLM2

__all__ = [
    "AbstainViolation",
    "AsyncGuardrailsCallbackHandler",
    "ChatSmolLM2",
    "ConformalRetriever",
    "EscalateViolation",
    "GuardedChatModel",
    "GuardrailViolation",
    "GuardrailsCallbackHandler",
    "GuardrailsEmbeddings",
    "GuardrailsMiddleware",
    "calibrate_retriever",
    "fallback_on_escalate",
    "input_guard",
]
