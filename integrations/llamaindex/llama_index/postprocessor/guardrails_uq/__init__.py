"""LlamaIndex integration of guardrails-uq (module ``llama_index.postprocessor.guardrails_uq``)."""

from __future__ import annotations

from guardrails_uq import AbstainViolation, EscalateViolation, GuardrailViolation

from .agent import GuardedLLM, GuardrailsEvent, embedding_scorer
from .chat_engine import GuardedChatEngine
from .embeddings import GuardrailsEmbedding
from .events import GuardrailsEventHandler
from .postprocessor import ConformalPostprocessor, calibrate_llamaindex_retriever
from .query_engine import GuardedQueryEngine
from .smollm2 import SmolLM2LLM
from .tools import GuardedTool

__all__ = [
    "AbstainViolation",
    "ConformalPostprocessor",
    "EscalateViolation",
    "GuardedChatEngine",
    "GuardedLLM",
    "GuardedQueryEngine",
    "GuardedTool",
    "GuardrailViolation",
    "GuardrailsEmbedding",
    "GuardrailsEvent",
    "GuardrailsEventHandler",
    "SmolLM2LLM",
    "calibrate_llamaindex_retriever",
    "embedding_scorer",
]
