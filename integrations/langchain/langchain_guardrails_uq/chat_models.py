"""GuardedChatModel: any LangChain chat model behind a guardrails-uq policy, usable anywhere in LCEL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, Field, PrivateAttr

from guardrails_uq import Action, Decision, Generation, Guard, Message
from guardrails_uq.flow import ModelStep, Outcome, arun, guarded_chat, run
from guardrails_uq.streaming import StreamGate

from ._convert import generation_of, text_of, to_core, to_langchain, tokens_of


def _metadata(decision: Decision) -> dict[str, Any]:
    return {"guardrails": decision.model_dump(mode="json")}


class GuardedChatModel(BaseChatModel):
    """Wraps a chat model: guidelines injected before the call, the policy decides after it.

    allow returns the model's answer; abstain returns an AIMessage holding the policy's message; escalate
    calls ``escalate_to`` (or the policy's escalation target). Every returned message carries the Decision
    in ``response_metadata["guardrails"]``. Streaming holds back ``stream_window`` chunks and cuts the stream
    (ending it with the policy's message) when a rule trips.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: BaseChatModel = Field(description="The chat model being guarded.")
    escalate_to: BaseChatModel | None = Field(default=None, description="Larger model for the escalate action.")
    stream_window: int = Field(default=16, ge=0, description="Chunks held back while streaming.")
    alert_bci: float = Field(default=20.0, description="BCI at which a streamed copied span triggers the rules.")
    top_logprobs: int = Field(default=5, ge=0, le=20, description="Alternatives requested per token when supported.")
    _guard: Guard = PrivateAttr()

    def __init__(self, *, guard: Guard | str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._guard = guard if isinstance(guard, Guard) else Guard.from_policy(guard)

    @property
    def guard(self) -> Guard:
        return self._guard

    @property
    def _llm_type(self) -> str:
        return f"guarded-{self.model._llm_type}"

    def _runnable(self) -> Runnable:
        """The wrapped model, asked for logprobs when it has that option (e.g. ChatOpenAI)."""
        if "logprobs" in type(self.model).model_fields:
            return self.model.bind(logprobs=True, top_logprobs=self.top_logprobs)
        return self.model

    def _prompt(self, original: list[BaseMessage], prompt: list[Message]) -> list[BaseMessage]:
        return original if prompt == to_core(original) else to_langchain(prompt)

    def _result(self, outcome: Outcome, raw: AIMessage | None) -> ChatResult:
        metadata = dict(raw.response_metadata) if raw is not None and outcome.decision.action is Action.ALLOW else {}
        metadata.update(_metadata(outcome.decision))
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(content=outcome.text, response_metadata=metadata))]
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raw: dict[str, AIMessage] = {}

        def call(step: ModelStep) -> Generation:
            raw["message"] = self._runnable().invoke(self._prompt(messages, step.messages), stop=stop, **kwargs)
            return generation_of(raw["message"])

        escalate = (
            (lambda prompt: generation_of(self.escalate_to.invoke(to_langchain(prompt)))) if self.escalate_to else None
        )
        outcome = run(guarded_chat(self._guard, to_core(messages), can_escalate=escalate is not None), call, escalate)
        return self._result(outcome, raw.get("message"))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raw: dict[str, AIMessage] = {}

        async def call(step: ModelStep) -> Generation:
            raw["message"] = await self._runnable().ainvoke(self._prompt(messages, step.messages), stop=stop, **kwargs)
            return generation_of(raw["message"])

        async def escalate_call(prompt: list[Message]) -> Generation:
            return generation_of(await self.escalate_to.ainvoke(to_langchain(prompt)))  # type: ignore[union-attr]

        escalate = escalate_call if self.escalate_to else None
        outcome = await arun(
            guarded_chat(self._guard, to_core(messages), can_escalate=escalate is not None), call, escalate
        )
        return self._result(outcome, raw.get("message"))

    # -- streaming ----------------------------------------------------------------------------------------

    def _end_chunk(self, text: str, decision: Decision, emitted: bool) -> ChatGenerationChunk:
        prefix = "\n\n" if emitted and text else ""
        return ChatGenerationChunk(message=AIMessageChunk(content=prefix + text, response_metadata=_metadata(decision)))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        core = to_core(messages)
        before = self._guard.before(core)
        if before.final and before.action is not Action.ALLOW:
            yield self._end_chunk(
                self._escalated_text(core, before, None) if before.action is Action.ESCALATE else before.message or "",
                before,
                False,
            )
            return
        prompt = before.messages if before.messages is not None else core
        gate = StreamGate(self._guard, prompt, context=before, window=self.stream_window, alert_bci=self.alert_bci)
        emitted = False
        for chunk in self._runnable().stream(self._prompt(messages, prompt), stop=stop, **kwargs):
            for released in gate.push(text_of(chunk), chunk, tokens_of(chunk)):
                emitted = True
                yield self._emit(released, run_manager)
            if gate.cut is not None:
                break
        released, decision = gate.finish()
        for chunk in released:
            emitted = True
            yield self._emit(chunk, run_manager)
        yield self._final(prompt, decision, gate, emitted)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        import asyncio

        core = to_core(messages)
        before = await self._guard.abefore(core)
        if before.final and before.action is not Action.ALLOW:
            text = (
                await asyncio.to_thread(self._escalated_text, core, before, None)
                if before.action is Action.ESCALATE
                else before.message or ""
            )
            yield self._end_chunk(text, before, False)
            return
        prompt = before.messages if before.messages is not None else core
        gate = StreamGate(self._guard, prompt, context=before, window=self.stream_window, alert_bci=self.alert_bci)
        emitted = False
        async for chunk in self._runnable().astream(self._prompt(messages, prompt), stop=stop, **kwargs):
            for released in gate.push(text_of(chunk), chunk, tokens_of(chunk)):
                emitted = True
                yield self._emit(released, None)
            if gate.cut is not None:
                break
        released, decision = await asyncio.to_thread(gate.finish)
        for chunk in released:
            emitted = True
            yield self._emit(chunk, None)
        yield await asyncio.to_thread(self._final, prompt, decision, gate, emitted)

    def _emit(self, chunk: Any, run_manager: CallbackManagerForLLMRun | None) -> ChatGenerationChunk:
        out = ChatGenerationChunk(
            message=AIMessageChunk(
                content=text_of(chunk), response_metadata=dict(getattr(chunk, "response_metadata", {}) or {})
            )
        )
        if run_manager:
            run_manager.on_llm_new_token(text_of(chunk), chunk=out)
        return out

    def _final(self, prompt: list[Message], decision: Decision, gate: StreamGate, emitted: bool) -> ChatGenerationChunk:
        if decision.action is Action.ALLOW:
            return ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=_metadata(decision)))
        if decision.action is Action.ESCALATE:
            escalated = self._escalate_decision(prompt, decision, gate.text)
            return self._end_chunk(escalated.answer or escalated.message or "", escalated, emitted)
        return self._end_chunk(decision.message or "", decision, emitted)

    def _escalate_decision(self, prompt: list[Message], decision: Decision, original: str | None) -> Decision:
        target = (lambda msgs: generation_of(self.escalate_to.invoke(to_langchain(msgs)))) if self.escalate_to else None
        return self._guard.escalate(prompt, decision, original=original, target=target)

    def _escalated_text(self, prompt: list[Message], decision: Decision, original: str | None) -> str:
        escalated = self._escalate_decision(prompt, decision, original)
        return escalated.answer or escalated.message or ""
