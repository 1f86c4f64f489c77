"""The embedded SmolLM2-135M-Instruct as a LlamaIndex ``CustomLLM`` that returns token logprobs."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata, LogProb
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from pydantic import Field

from guardrails_uq import TokenLogprob
from guardrails_uq.models.local import default_model


def _logprobs(tokens: list[TokenLogprob]) -> list[list[LogProb]]:
    return [
        [
            LogProb(token=t.token, logprob=t.logprob, bytes=[]),
            *[LogProb(token=a.token, logprob=a.logprob, bytes=[]) for a in t.top if a.token != t.token],
        ]
        for t in tokens
    ]


class SmolLM2LLM(CustomLLM):
    """SmolLM2-135M-Instruct on the CPU; ``CompletionResponse.logprobs`` holds per-token logprobs with the top
    alternatives (LlamaIndex's format: the chosen token first). A streamed chunk carries the logprobs of its
    delta only (as OpenAI streams them): the chunks' logprobs together are the answer's."""

    max_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=0.0, ge=0)
    top_logprobs: int = Field(default=5, ge=0, le=20)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=2048, num_output=self.max_tokens, model_name="SmolLM2-135M-Instruct", is_chat_model=False
        )

    def _messages(self, prompt: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": prompt}]

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        generation = default_model().generate(
            self._messages(prompt),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_logprobs=self.top_logprobs,
        )
        return CompletionResponse(text=generation.text, logprobs=_logprobs(generation.tokens or []))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            text = ""
            for delta, token in default_model().stream(
                self._messages(prompt),
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                top_logprobs=self.top_logprobs,
            ):
                text += delta
                yield CompletionResponse(text=text, delta=delta, logprobs=_logprobs([token]))

        return gen()
