"""GuardedChatEngine: any LlamaIndex chat engine behind a guardrails-uq policy.

Each user message is one request: the input phase on the conversation the model reads (the ``chat_history``
given with the message, else the engine's own, then the message; guidelines are prefixed to the message the
wrapped engine sees; a history with blocks the guard cannot read is decided by ``on_error``), the retrieval phase of a ConformalPostprocessor on the wrapped engine (context chat
engines), the output phase on the answer; one ``request_id``, and a retrieval abstain or escalate is the
message's verdict.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.chat_engine.types import AgentChatResponse, BaseChatEngine, StreamingAgentChatResponse

from guardrails_uq import Action, Generation, Guard, Message
from guardrails_uq.flow import Flow, ModelResult, ModelStep, Outcome, arun, guarded_chat, run

from . import _context
from ._convert import metadata, to_messages, tokens_of, unreadable_prompt
from ._escalation import escalation_target
from ._turn import _guideline_block
from .events import ensure_collector


def _asked(conversation: list[Message], prompt: list[Message], message: str) -> str:
    """The message the wrapped engine sees: the guidelines the input phase added to ``conversation`` (its
    ``prompt``), then the message (:func:`.query_engine.guided` for a conversation of the message alone)."""
    block = _guideline_block(conversation, prompt)
    return f"{block}\n\nQuestion: {message}" if block else message


class GuardedChatEngine(BaseChatEngine):
    """The chat-engine twin of GuardedQueryEngine: abstain and escalate as there (``escalate_to``: a LlamaIndex
    LLM; default: the policy's escalation target); ``response.metadata["guardrails"]`` holds the verdict and
    ``response.sources`` / ``source_nodes`` are emptied when the answer is replaced. ``stream_chat`` returns
    the checked answer as one piece."""

    def __init__(
        self,
        chat_engine: BaseChatEngine,
        guard: Guard | str | Path,
        *,
        escalate_to: Any = None,
        escalate_llm: Any = None,
    ) -> None:
        """``escalate_llm`` is the deprecated name of ``escalate_to`` (removed in the next release)."""
        self._engine = chat_engine
        self._guard = guard if isinstance(guard, Guard) else Guard.from_policy(guard)
        self._escalate_to = escalation_target(escalate_to, escalate_llm, "GuardedChatEngine")
        ensure_collector()

    @property
    def guard(self) -> Guard:
        return self._guard

    def _conversation(self, message: str, chat_history: list[ChatMessage] | None) -> list[Message]:
        """What the wrapped engine sends the model: ``chat_history`` (else the engine's own), then ``message``."""
        history = chat_history if chat_history is not None else self._engine.chat_history
        return [*to_messages(history), Message(role="user", content=message)]

    def _unreadable(self, chat_history: list[ChatMessage] | None) -> AgentChatResponse | None:
        """The on_error answer when the history holds blocks the guard cannot read (None: it can read it all,
        or on_error allows)."""
        odd = unreadable_prompt(chat_history if chat_history is not None else self._engine.chat_history)
        if not odd:
            return None
        problem = f"the chat history has content blocks the guard cannot read: {', '.join(odd)}"
        decision = self._guard.failure("input", "chat-history", problem)
        if not decision.final or decision.action is Action.ALLOW:
            return None
        return AgentChatResponse(response=decision.message or "", metadata=metadata(decision))

    def _flow(self, conversation: list[Message]) -> Flow:
        return guarded_chat(self._guard, conversation, can_escalate=self._escalate_to is not None)

    @staticmethod
    def _result(raw: AgentChatResponse, state: _context.CallState) -> ModelResult:
        tokens = tokens_of(state.logprobs[-1]) if state.logprobs else None
        return ModelResult(Generation(text=str(raw.response), tokens=tokens), state.context)

    @staticmethod
    def _wrap(outcome: Outcome, raw: AgentChatResponse | None) -> AgentChatResponse:
        allowed = outcome.decision.action is Action.ALLOW and raw is not None
        return AgentChatResponse(
            response=outcome.text,
            sources=raw.sources if allowed and raw is not None else [],
            source_nodes=raw.source_nodes if allowed and raw is not None else [],
            metadata=metadata(outcome.decision),
        )

    def chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        refused = self._unreadable(chat_history)
        if refused is not None:
            return refused
        conversation = self._conversation(message, chat_history)
        state = _context.CallState(question=message)
        raw: list[AgentChatResponse] = []

        def model(step: ModelStep) -> ModelResult:
            state.before = step.context
            raw.append(self._engine.chat(_asked(conversation, step.messages, message), chat_history))
            return self._result(raw[-1], state)

        def escalate(prompt: list[Message]) -> Generation:
            return Generation(text=self._escalate_to.complete(_asked(conversation, prompt, message)).text)

        with _context.active(state):
            outcome = run(self._flow(conversation), model, escalate if self._escalate_to is not None else None)
        return self._wrap(outcome, raw[-1] if raw else None)

    async def achat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        refused = self._unreadable(chat_history)
        if refused is not None:
            return refused
        conversation = self._conversation(message, chat_history)
        state = _context.CallState(question=message)
        raw: list[AgentChatResponse] = []

        async def model(step: ModelStep) -> ModelResult:
            state.before = step.context
            raw.append(await self._engine.achat(_asked(conversation, step.messages, message), chat_history))
            return self._result(raw[-1], state)

        async def escalate(prompt: list[Message]) -> Generation:
            return Generation(text=(await self._escalate_to.acomplete(_asked(conversation, prompt, message))).text)

        with _context.active(state):
            outcome = await arun(self._flow(conversation), model, escalate if self._escalate_to is not None else None)
        return self._wrap(outcome, raw[-1] if raw else None)

    @staticmethod
    def _one_piece(response: AgentChatResponse) -> ChatResponse:
        text = str(response.response)
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=text)

    @staticmethod
    def _streaming(response: AgentChatResponse, **stream: Any) -> StreamingAgentChatResponse:
        """The checked answer as a one-piece stream; ``.metadata["guardrails"]`` holds the verdict (an attribute
        StreamingAgentChatResponse does not declare, set here as on AgentChatResponse)."""
        streaming = StreamingAgentChatResponse(
            response=str(response.response),
            sources=response.sources,
            source_nodes=response.source_nodes,
            is_writing_to_memory=False,
            **stream,
        )
        streaming.metadata = response.metadata  # type: ignore[attr-defined]
        return streaming

    def stream_chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> StreamingAgentChatResponse:
        response = self.chat(message, chat_history)

        def stream() -> Generator[ChatResponse, None, None]:
            yield self._one_piece(response)

        return self._streaming(response, chat_stream=stream())

    async def astream_chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> StreamingAgentChatResponse:
        response = await self.achat(message, chat_history)

        async def stream() -> AsyncGenerator[ChatResponse, None]:
            yield self._one_piece(response)

        return self._streaming(response, achat_stream=stream())

    def reset(self) -> None:
        self._engine.reset()

    @property
    def chat_history(self) -> list[ChatMessage]:
        return self._engine.chat_history
