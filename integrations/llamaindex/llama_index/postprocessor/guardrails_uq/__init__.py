"""LlamaIndex integration of guardrails-uq (module ``llama_index.postprocessor.guardrails_uq``)."""

from __future__ import annotations

from guardrails_uq import GuardrailViolation

from .embeddings import GuardrailsEmbedding
from .engines import GuardedChatEngine, GuardedQueryEngine
from .events import GuardrailsEventHandler
from .postprocessor import ConformalPostprocessor, calibrate_llamaindex_retriever
from .smollm2 import SmolLM2LLM

__all__ = [
    "ConformalPostprocessor",
    "GuardedChatEngine",
    "GuardedQueryEngine",
    "GuardrailViolation",
    "GuardrailsEmbedding",
    "GuardrailsEventHandler",
    "SmolLM2LLM",
    "calibrate_llamaindex_retriever",
]
