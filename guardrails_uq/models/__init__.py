"""Generation backends that return token logprobs: OpenAI-compatible over httpx, and the embedded SmolLM2."""

from __future__ import annotations

from typing import Any, Protocol

from ..call import Generation


class ChatModel(Protocol):
    """A model the Guard can call (escalation target, evaluation): messages in, Generation with logprobs out."""

    name: str

    def generate(self, messages: Any, **kwargs: Any) -> Generation: ...


__all__ = ["ChatModel"]
