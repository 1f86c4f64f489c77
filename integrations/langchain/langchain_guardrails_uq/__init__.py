"""LangChain integration of guardrails-uq."""

from __future__ import annotations

from guardrails_uq import GuardrailViolation

from .callbacks import AsyncGuardrailsCallbackHandler, GuardrailsCallbackHandler
from .chat_models import GuardedChatModel
from .embeddings import GuardrailsEmbeddings
from .input_guard import input_guard
from .retrievers import ConformalRetriever, calibrate_retriever
from .smollm2 import ChatSmolLM2

__all__ = [
    "AsyncGuardrailsCallbackHandler",
    "ChatSmolLM2",
    "ConformalRetriever",
    "GuardedChatModel",
    "GuardrailViolation",
    "GuardrailsCallbackHandler",
    "GuardrailsEmbeddings",
    "calibrate_retriever",
    "input_guard",
]
