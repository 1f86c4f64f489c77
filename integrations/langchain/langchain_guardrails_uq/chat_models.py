"""GuardedChatModel: any LangChain chat model behind a guardrails-uq policy, usable anywhere in LCEL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict, Field, PrivateAttr

from guardrails_uq import Action, Decision, Generation, Guard, Message
from guardrails_uq.errors import InputError
from guardrails_uq.flow import ModelStep, Outcome, arun, guarded_chat, run
from guardrails_uq.streaming import StreamGate

from ._convert import (
    as_forwarded,
    checked_message,
    decision_metadata,
    generation_of,
    read_content,
    to_core,
    to_langchain,
    tokens_of,
    unreadable_error,
)
from ._phases import RequestPhases, blocked
from ._quiet import quiet_config
from ._requests import current_run_id, ensure_tracking, request_of


def _apply_prompt(original: list[BaseMessage], prompt: list[Message]) -> list[BaseMessage]:
    """The LangChain messages to send for the core ``prompt``: the originals as forwarded
    (:func:`~._convert.as_forwarded`: nothing the input phase did not read), with the system message the input
    phase injected or rewrote (every other message kept as is: tool calls, metadata)."""
    core = to_core(original)
    original = as_forwarded(original)
    if prompt == core:
        return original
    if len(prompt) == len(core) + 1 and prompt[0].role == "system" and prompt[1:] == core:
        return [SystemMessage(content=prompt[0].content), *original]
    if len(prompt) == len(core):
        changed = [i for i, (a, b) in enumerate(zip(prompt, core, strict=True)) if a != b]
        if len(changed) == 1 and prompt[changed[0]].role == "system" == core[changed[0]].role:
            i = changed[0]
            return [*original[:i], SystemMessage(content=prompt[i].content), *original[i + 1 :]]
    return to_langchain(prompt)


def _read(message: AIMessage) -> Generation | InputError:
    """What the output phase reads in the model's message, or why it cannot (the flow decides on_error)."""
    try:
        return generation_of(message)
    except InputError as exc:
        return exc


def _push(gate: StreamGate, chunk: Any) -> list[Any]:
    """One chunk of the wrapped model into the gate: its answer text, exactly what :meth:`GuardedChatModel._emit`
    shows. A chunk holding a block the guard cannot read fails the stream (``on_error``; cut unless it allows)."""
    content = read_content(chunk)
    if content.unreadable and gate.fail("response", unreadable_error(content.unreadable)).action is not Action.ALLOW:
        return []
    return gate.push(content.answer, chunk, tokens_of(chunk))


class GuardedChatModel(BaseChatModel):
    """Wraps a chat model: guidelines injected before the call, the policy decides after it.

    allow returns the model's answer; abstain returns an AIMessage holding the policy's message; escalate
    calls ``escalate_to`` (or the policy's escalation target). Every returned message carries the Decision
    in ``response_metadata["guardrails"]``. Streaming holds back ``stream_window`` chunks and cuts the stream
    (ending it with the policy's message) when a rule trips.

    Inside a chain the model is one phase of the chain's request (see ``_requests``): it reuses the input
    Decision a retriever or ``input_guard`` made for the same question (no second input phase), its output
    Decision carries the retrieval signals, and a request an earlier phase blocked is answered with that
    phase's message without calling the model. The wrapped model's own tokens never reach stream consumers
    (``astream_events``, LangGraph's ``stream_mode="messages"``): only what this model returns does.
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
        ensure_tracking()

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

    def _phases(self, run_manager: Any) -> RequestPhases:
        # BaseChatModel.stream calls _stream without its run manager: the enclosing run then names the request
        run_id = run_manager.run_id if run_manager is not None else current_run_id()
        return RequestPhases(self._guard, request_of(run_id))

    def _escalation(self, config: RunnableConfig) -> Any:
        if self.escalate_to is None:
            return None
        model = self.escalate_to
        return lambda prompt: generation_of(model.invoke(to_langchain(prompt), config))

    def _result(self, outcome: Outcome, raw: AIMessage | None) -> ChatResult:
        """The model's message as the output phase read it when allowed (text, reasoning, tool calls), else
        the policy's message or the escalation's answer."""
        if raw is not None and outcome.decision.action is Action.ALLOW:
            message = checked_message(raw, outcome.decision)
        else:
            message = AIMessage(content=outcome.text, response_metadata=decision_metadata(outcome.decision))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raw: dict[str, AIMessage] = {}
        config = quiet_config(run_manager)

        def call(step: ModelStep) -> Generation | InputError:
            raw["message"] = self._runnable().invoke(
                _apply_prompt(messages, step.messages), config, stop=stop, **kwargs
            )
            return _read(raw["message"])

        escalate = self._escalation(config)
        flow = guarded_chat(self._phases(run_manager), to_core(messages), can_escalate=escalate is not None)  # type: ignore[arg-type]
        return self._result(run(flow, call, escalate), raw.get("message"))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raw: dict[str, AIMessage] = {}
        config = quiet_config(run_manager)

        async def call(step: ModelStep) -> Generation | InputError:
            prompt = _apply_prompt(messages, step.messages)
            raw["message"] = await self._runnable().ainvoke(prompt, config, stop=stop, **kwargs)
            return _read(raw["message"])

        async def escalate_call(prompt: list[Message]) -> Generation:
            return generation_of(await self.escalate_to.ainvoke(to_langchain(prompt), config))  # type: ignore[union-attr]

        escalate = escalate_call if self.escalate_to else None
        flow = guarded_chat(self._phases(run_manager), to_core(messages), can_escalate=escalate is not None)  # type: ignore[arg-type]
        return self._result(await arun(flow, call, escalate), raw.get("message"))

    # -- streaming ----------------------------------------------------------------------------------------

    def _end_chunk(self, text: str, decision: Decision, emitted: bool) -> ChatGenerationChunk:
        prefix = "\n\n" if emitted and text else ""
        return ChatGenerationChunk(
            message=AIMessageChunk(content=prefix + text, response_metadata=decision_metadata(decision))
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        phases = self._phases(run_manager)
        config = quiet_config(run_manager)
        core = to_core(messages)
        before = phases.before(core)
        if blocked(before):
            yield self._end_chunk(self._blocked_text(phases, core, before, config), before, False)
            return
        prompt = before.messages if before.messages is not None else core
        gate = StreamGate(self._guard, prompt, context=before, window=self.stream_window, alert_bci=self.alert_bci)
        emitted = False
        for chunk in self._runnable().stream(_apply_prompt(messages, prompt), config, stop=stop, **kwargs):
            for released in _push(gate, chunk):
                emitted = True
                yield self._emit(released)
            if gate.cut is not None:
                break
        released, decision = gate.finish()
        phases.record(decision)
        for chunk in released:
            emitted = True
            yield self._emit(chunk)
        yield self._final(phases, prompt, decision, gate, emitted, config)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        phases = self._phases(run_manager)
        config = quiet_config(run_manager)
        core = to_core(messages)
        before = await asyncio.to_thread(phases.before, core)
        if blocked(before):
            text = await asyncio.to_thread(self._blocked_text, phases, core, before, config)
            yield self._end_chunk(text, before, False)
            return
        prompt = before.messages if before.messages is not None else core
        gate = StreamGate(self._guard, prompt, context=before, window=self.stream_window, alert_bci=self.alert_bci)
        emitted = False
        async for chunk in self._runnable().astream(_apply_prompt(messages, prompt), config, stop=stop, **kwargs):
            for released in _push(gate, chunk):
                emitted = True
                yield self._emit(released)
            if gate.cut is not None:
                break
        released, decision = await asyncio.to_thread(gate.finish)
        phases.record(decision)
        for chunk in released:
            emitted = True
            yield self._emit(chunk)
        yield await asyncio.to_thread(self._final, phases, prompt, decision, gate, emitted, config)

    @staticmethod
    def _emit(chunk: Any) -> ChatGenerationChunk:
        """A released chunk of the wrapped model, re-wrapped as its answer text, exactly the text the gate read
        (LangChain reports it to the run's callbacks). Reasoning and tool-call chunks are not streamed."""
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=read_content(chunk).answer,
                response_metadata=dict(getattr(chunk, "response_metadata", {}) or {}),
            )
        )

    def _final(
        self,
        phases: RequestPhases,
        prompt: list[Message],
        decision: Decision,
        gate: StreamGate,
        emitted: bool,
        config: RunnableConfig,
    ) -> ChatGenerationChunk:
        if decision.action is Action.ALLOW:
            return ChatGenerationChunk(
                message=AIMessageChunk(content="", response_metadata=decision_metadata(decision))
            )
        if decision.action is Action.ESCALATE:
            escalated = phases.escalate(prompt, decision, original=gate.text, target=self._escalation(config))
            return self._end_chunk(escalated.answer or escalated.message or "", escalated, emitted)
        return self._end_chunk(decision.message or "", decision, emitted)

    def _blocked_text(self, phases: RequestPhases, prompt: list[Message], decision: Decision, config: Any) -> str:
        """What the user reads when the request was blocked before the model: the policy's message, or the
        escalation's answer when the input phase escalated."""
        if decision.action is not Action.ESCALATE or decision.phase == "output":
            return decision.answer or decision.message or ""
        escalated = phases.escalate(prompt, decision, original=None, target=self._escalation(config))
        return escalated.answer or escalated.message or ""
