"""GuardedQueryEngine and GuardedChatEngine: any LlamaIndex engine behind a guardrails-uq policy.

Guidelines go into the *query text the synthesizer sees*, while retrieval keeps using the user's question
(``QueryBundle.custom_embedding_strs``). We chose this over a postprocessor that adds a guideline node
because it works with any query engine, never mixes guidelines into the retrieved evidence (where a
synthesizer would treat them as facts about the world, and where they would count against the conformal
threshold), and needs no prompt-template surgery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from pathlib import Path
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.base.response.schema import RESPONSE_TYPE, Response, StreamingResponse
from llama_index.core.chat_engine.types import AgentChatResponse, BaseChatEngine, StreamingAgentChatResponse
from llama_index.core.schema import QueryBundle

from guardrails_uq import Action, Decision, Generation, Guard, Message
from guardrails_uq.flow import ModelResult, ModelStep, Outcome, arun, guarded_chat, run
from guardrails_uq.models.logprobs import from_llamaindex
from guardrails_uq.streaming import StreamGate

from . import _context
from .events import ensure_collector


def _guided(prompt: list[Message], question: str) -> str:
    """The question with the injected guidelines (the system message the input phase produced) before it."""
    system = "\n\n".join(m.content for m in prompt if m.role == "system")
    return f"{system}\n\nQuestion: {question}" if system else question


def _metadata(decision: Decision) -> dict[str, Any]:
    return {"guardrails": decision.model_dump(mode="json")}


def _blocked_by_retrieval(state: _context.CallState) -> Decision | None:
    decision = state.retrieval
    if decision is not None and decision.final and decision.action is not Action.ALLOW:
        return decision
    return None


def _bundle(step: ModelStep, question: str) -> QueryBundle:
    """The wrapped engine's query: guided text for the synthesizer, the plain question for retrieval."""
    return QueryBundle(query_str=_guided(step.messages, question), custom_embedding_strs=[question])


def _abstained(decision: Decision) -> Response:
    """The Response when the retrieval phase abstained: the policy's message, no sources."""
    return Response(response=decision.message or "", source_nodes=[], metadata=_metadata(decision))


class _RetrievalAbstained(Exception):
    def __init__(self, decision: Decision) -> None:
        self.decision = decision


class GuardedQueryEngine(BaseQueryEngine):
    """Wraps a query engine: input phase (guidelines), retrieval phase (through a ConformalPostprocessor on the
    wrapped engine, if any), output phase on the answer (with the LLM's logprobs when it returns them), and
    escalation to ``escalate_llm``. The Response's ``metadata["guardrails"]`` holds the Decision. Streaming
    engines are supported: the stream is held back ``stream_window`` pieces and cut on a violation."""

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        guard: Guard | str | Path,
        *,
        escalate_llm: Any = None,
        stream_window: int = 16,
        alert_bci: float = 20.0,
    ) -> None:
        super().__init__(callback_manager=getattr(query_engine, "callback_manager", None))
        self._engine = query_engine
        self._guard = guard if isinstance(guard, Guard) else Guard.from_policy(guard)
        self._escalate_llm = escalate_llm
        self._stream_window = stream_window
        self._alert_bci = alert_bci
        ensure_collector()

    @property
    def guard(self) -> Guard:
        return self._guard

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    def _escalation_prompt(self, prompt: list[Message], sources: list[Any]) -> str:
        context = "\n".join(n.node.get_content() for n in sources)
        question = next((m.content for m in reversed(prompt) if m.role == "user"), "")
        return f"Context:\n{context}\n\n{_guided(prompt, question)}" if context else _guided(prompt, question)

    def _generation(self, response: Any, state: _context.CallState) -> Generation:
        text = str(response.response or "") if isinstance(response, Response) else str(response)
        tokens = from_llamaindex(state.logprobs[-1]) if state.logprobs else None
        return Generation(text=text, tokens=tokens)

    def _model_result(self, response: Any, state: _context.CallState, sources: list[Any]) -> ModelResult:
        """After the wrapped engine answered: keep its sources, stop if the retrieval phase abstained, and
        carry the retrieval Decision into the output phase."""
        sources.extend(response.source_nodes)
        blocked = _blocked_by_retrieval(state)
        if blocked is not None:
            raise _RetrievalAbstained(blocked)
        return ModelResult(self._generation(response, state), state.retrieval)

    def _response(self, outcome: Outcome, sources: list[Any]) -> Response:
        return Response(
            response=outcome.text,
            source_nodes=sources if outcome.decision.action is Action.ALLOW else [],
            metadata=_metadata(outcome.decision),
        )

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        question = query_bundle.query_str
        state = _context.CallState()
        token = _context.current.set(state)
        sources: list[Any] = []
        try:

            def model(step: ModelStep) -> ModelResult:
                state.before = step.context
                response = self._engine.query(_bundle(step, question))
                if isinstance(response, StreamingResponse):
                    raise TypeError("use stream() for a streaming query engine")
                return self._model_result(response, state, sources)

            def escalate_call(prompt: list[Message]) -> Generation:
                return Generation(text=self._escalate_llm.complete(self._escalation_prompt(prompt, sources)).text)

            escalate = escalate_call if self._escalate_llm is not None else None
            try:
                outcome = run(
                    guarded_chat(
                        self._guard, [Message(role="user", content=question)], can_escalate=escalate is not None
                    ),
                    model,
                    escalate,
                )
            except _RetrievalAbstained as stop:
                return _abstained(stop.decision)
            return self._response(outcome, sources)
        finally:
            _context.current.reset(token)

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        question = query_bundle.query_str
        state = _context.CallState()
        token = _context.current.set(state)
        sources: list[Any] = []
        try:

            async def model(step: ModelStep) -> ModelResult:
                state.before = step.context
                return self._model_result(await self._engine.aquery(_bundle(step, question)), state, sources)

            async def escalate_call(prompt: list[Message]) -> Generation:
                completion = await self._escalate_llm.acomplete(self._escalation_prompt(prompt, sources))
                return Generation(text=completion.text)

            escalate = escalate_call if self._escalate_llm is not None else None
            try:
                outcome = await arun(
                    guarded_chat(
                        self._guard, [Message(role="user", content=question)], can_escalate=escalate is not None
                    ),
                    model,
                    escalate,
                )
            except _RetrievalAbstained as stop:
                return _abstained(stop.decision)
            return self._response(outcome, sources)
        finally:
            _context.current.reset(token)

    def stream(self, question: str) -> StreamingResponse:
        """Query a *streaming* engine (built with streaming=True); the returned StreamingResponse's generator
        is guarded, and its ``metadata["guardrails"]`` is set when the stream ends."""
        prompt_messages = [Message(role="user", content=question)]
        before = self._guard.before(prompt_messages)
        metadata: dict[str, Any] = _metadata(before)
        if before.final and before.action is not Action.ALLOW:
            return StreamingResponse(response_gen=iter([before.message or ""]), source_nodes=[], metadata=metadata)
        prompt = before.messages if before.messages is not None else prompt_messages
        state = _context.CallState(before=before)
        token = _context.current.set(state)
        try:
            inner = self._engine.query(
                QueryBundle(query_str=_guided(prompt, question), custom_embedding_strs=[question])
            )
        finally:
            _context.current.reset(token)
        blocked = _blocked_by_retrieval(state)
        if blocked is not None:
            return StreamingResponse(
                response_gen=iter([blocked.message or ""]), source_nodes=[], metadata=_metadata(blocked)
            )
        if not isinstance(inner, StreamingResponse):
            raise TypeError("stream() needs a query engine built with streaming=True")
        gate = StreamGate(
            self._guard,
            prompt,
            context=state.retrieval or before,
            window=self._stream_window,
            alert_bci=self._alert_bci,
        )

        def guarded() -> Generator[str, None, None]:
            for piece in inner.response_gen:
                yield from gate.push(piece, piece)
                if gate.cut is not None:
                    break
            released, decision = gate.finish()
            yield from released
            metadata.update(_metadata(decision))
            if decision.action is Action.ESCALATE and self._escalate_llm is not None:
                escalated = self._guard.escalate(
                    prompt,
                    decision,
                    original=gate.text,
                    target=lambda m: Generation(
                        text=self._escalate_llm.complete(self._escalation_prompt(m, inner.source_nodes)).text
                    ),
                )
                metadata.update(_metadata(escalated))
                yield ("\n\n" if gate.text else "") + (escalated.answer or escalated.message or "")
            elif decision.action is not Action.ALLOW:
                yield ("\n\n" if released or gate.text else "") + (decision.message or "")

        return StreamingResponse(response_gen=guarded(), source_nodes=inner.source_nodes, metadata=metadata)


class GuardedChatEngine(BaseChatEngine):
    """The chat-engine twin: each user message goes through the input phase (guidelines are prefixed to the
    message the wrapped engine sees), the answer through the output phase; abstain and escalate as for
    GuardedQueryEngine. ``response.sources`` is emptied when the answer is replaced."""

    def __init__(self, chat_engine: BaseChatEngine, guard: Guard | str | Path, *, escalate_llm: Any = None) -> None:
        self._engine = chat_engine
        self._guard = guard if isinstance(guard, Guard) else Guard.from_policy(guard)
        self._escalate_llm = escalate_llm
        ensure_collector()

    def _flow(self, message: str):
        return guarded_chat(
            self._guard, [Message(role="user", content=message)], can_escalate=self._escalate_llm is not None
        )

    def _wrap(self, outcome: Outcome, raw: AgentChatResponse | None) -> AgentChatResponse:
        allowed = outcome.decision.action is Action.ALLOW and raw is not None
        return AgentChatResponse(
            response=outcome.text,
            sources=raw.sources if allowed else [],
            source_nodes=raw.source_nodes if allowed else [],
            metadata=_metadata(outcome.decision),
        )

    def chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        state = _context.CallState()
        token = _context.current.set(state)
        raw: dict[str, AgentChatResponse] = {}
        try:

            def model(step: ModelStep) -> Generation:
                raw["r"] = self._engine.chat(_guided(step.messages, message), chat_history)
                return Generation(
                    text=str(raw["r"].response), tokens=from_llamaindex(state.logprobs[-1]) if state.logprobs else None
                )

            escalate = (
                (lambda prompt: Generation(text=self._escalate_llm.complete(_guided(prompt, message)).text))
                if self._escalate_llm
                else None
            )
            return self._wrap(run(self._flow(message), model, escalate), raw.get("r"))
        finally:
            _context.current.reset(token)

    async def achat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        return await asyncio.to_thread(self.chat, message, chat_history)

    def stream_chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> StreamingAgentChatResponse:
        response = self.chat(message, chat_history)
        return StreamingAgentChatResponse(
            response=response.response,
            sources=response.sources,
            source_nodes=response.source_nodes,
            metadata=response.metadata,
        )

    async def astream_chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> StreamingAgentChatResponse:
        return await asyncio.to_thread(self.stream_chat, message, chat_history)

    def reset(self) -> None:
        self._engine.reset()

    @property
    def chat_history(self) -> list[ChatMessage]:
        return self._engine.chat_history
