"""Generation backends that return token logprobs: OpenAI-compatible over httpx, and the embedded SmolLM2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..call import Generation


class ChatModel(Protocol):
    """A model the Guard can call (escalation target, evaluation): messages in, Generation with logprobs out."""

    name: str

    def generate(self, messages: Any, **kwargs: Any) -> Generation: ...


def text_asker(
    llm: str,
    model: str = "default",
    *,
    api_key_env: str | None = None,
    timeout: float = 60.0,
    max_retries: int = 3,
    max_tokens: int = 400,
) -> Callable[[str], str]:
    """``ask(instruction) -> reply text``, greedy, from ``llm``: "local" (the embedded SmolLM2) or the base URL
    of an OpenAI-compatible server (timeouts, retries with backoff). Used by the builders that need an LLM."""
    if llm == "local":
        from .local import default_model

        local = default_model()
        return lambda instruction: (
            local.generate([{"role": "user", "content": instruction}], max_tokens=max_tokens, top_logprobs=0).text
        )
    from .openai_compat import OpenAIChatModel

    client = OpenAIChatModel(llm, model, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries)
    return lambda instruction: (
        client.generate(
            [{"role": "user", "content": instruction}], max_tokens=max_tokens, temperature=0.0, top_logprobs=None
        ).text
    )


__all__ = ["ChatModel", "text_asker"]
