"""GuardedQueryEngine: any LlamaIndex query engine behind a guardrails-uq policy.

Guidelines go into the *query text the synthesizer sees*, while retrieval keeps using the user's question
(``QueryBundle.custom_embedding_strs``). We chose this over a postprocessor that adds a guideline node
because it works with any query engine, never mixes guidelines into the retrieved evidence (where a
synthesizer would treat them as facts about the world, and where they would count against the conformal
threshold), and needs no prompt-template surgery.

One query is one request: the input, retrieval (a ConformalPostprocessor on the wrapped engine) and output
Decisions share a ``request_id``, each phase continues from the one before it (the output Decision carries
the ``retrieval.*`` signals), and a retrieval abstain or escalate is the query's verdict: the answer the
synthesizer produced anyway is logged in the output Decision's ``generated`` and never returned.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any, Literal

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.schema import QueryBundle

from guardrails_uq import Action, Decision, Generation, Guard, Message
from guardrails_uq.flow import ModelResult, ModelStep, Outcome, arun, guarded_chat, run
from guardrails_uq.streaming import StreamGate

from . import _context
from ._convert import metadata, tokens_of
from ._escalation import escalation_target
from .events import ensure_collector

_END = object()


def guided(prompt: list[Message], question: str) -> str:
    """The question with the injected guidelines (the system message the input phase produced) before it."""
    system = "\n\n".join(m.content for m in prompt if m.role == "system")
    return f"{system}\n\nQuestion: {question}" if system else question


def _decided(decision: Decision | None) -> bool:
    return decision is not None and decision.final and decision.action is not Action.ALLOW


def _bundle(prompt: list[Message], question: str) -> QueryBundle:
    """The wrapped engine's query: guided text for the synthesizer, the plain question for retrieval."""
    return QueryBundle(query_str=guided(prompt, question), custom_embedding_strs=[question])


class GuardedQueryEngine(BaseQueryEngine):
    """Wraps a query engine: input phase (guidelines), retrieval phase (through a ConformalPostprocessor on the
    wrapped engine, if any), output phase on the answer (with the LLM's logprobs when it returns them), and
    escalation to ``escalate_to`` (a LlamaIndex LLM; default: the policy's escalation target). The Response's
    ``metadata["guardrails"]`` holds the request's verdict. Streaming engines go through :meth:`stream`."""

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        guard: Guard | str | Path,
        *,
        escalate_to: Any = None,
        escalate_llm: Any = None,
        stream_window: int = 16,
        stream_mode: Literal["cut", "buffer"] = "cut",
        alert_bci: float = 20.0,
    ) -> None:
        """``escalate_llm`` is the deprecated name of ``escalate_to`` (removed in the next release)."""
        super().__init__(callback_manager=getattr(query_engine, "callback_manager", None))
        self._engine = query_engine
        self._guard = guard if isinstance(guard, Guard) else Guard.from_policy(guard)
        self._escalate_to = escalation_target(escalate_to, escalate_llm, "GuardedQueryEngine")
        self._stream_window = stream_window
        self._stream_mode = stream_mode
        self._alert_bci = alert_bci
        ensure_collector()

    @property
    def guard(self) -> Guard:
        return self._guard

    def _get_prompt_modules(self) -> dict[str, Any]:
        return {}

    # -- shared pieces ------------------------------------------------------------------------------------

    def _escalation_prompt(self, prompt: list[Message], sources: list[Any]) -> str:
        context = "\n".join(n.node.get_content() for n in sources)
        question = next((m.content for m in reversed(prompt) if m.role == "user"), "")
        return f"Context:\n{context}\n\n{guided(prompt, question)}" if context else guided(prompt, question)

    def _escalate(
        self, prompt: list[Message], decision: Decision, original: str | None, sources: list[Any]
    ) -> Decision:
        """Escalate ``decision``: ``escalate_to`` answers (else the policy's target); the answer is reviewed."""
        target = None
        if self._escalate_to is not None:

            def target(messages: list[Message]) -> Generation:
                return Generation(text=self._escalate_to.complete(self._escalation_prompt(messages, sources)).text)

        return self._guard.escalate(prompt, decision, original=original, target=target)

    def _model_result(self, response: Any, state: _context.CallState, sources: list[Any]) -> ModelResult:
        """The wrapped engine's answer, with the Decision the output phase continues from (the retrieval
        phase's; when that blocked, the output phase repeats its verdict)."""
        if isinstance(response, StreamingResponse | AsyncStreamingResponse):
            raise TypeError("use stream() for a streaming query engine")
        sources.extend(getattr(response, "source_nodes", []))
        text = str(response.response or "") if isinstance(response, Response) else str(response)
        tokens = tokens_of(state.logprobs[-1]) if state.logprobs else None
        return ModelResult(Generation(text=text, tokens=tokens), state.context)

    def _response(self, outcome: Outcome, sources: list[Any]) -> Response:
        return Response(
            response=outcome.text,
            source_nodes=sources if outcome.decision.action is Action.ALLOW else [],
            metadata=metadata(outcome.decision),
        )

    # -- query and aquery ---------------------------------------------------------------------------------

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        question = query_bundle.query_str
        state = _context.CallState(question=question)
        sources: list[Any] = []

        def model(step: ModelStep) -> ModelResult:
            state.before = step.context
            return self._model_result(self._engine.query(_bundle(step.messages, question)), state, sources)

        def escalate(prompt: list[Message]) -> Generation:
            return Generation(text=self._escalate_to.complete(self._escalation_prompt(prompt, sources)).text)

        with _context.active(state):
            flow = guarded_chat(
                self._guard, [Message(role="user", content=question)], can_escalate=self._escalate_to is not None
            )
            outcome = run(flow, model, escalate if self._escalate_to is not None else None)
        return self._response(outcome, sources)

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        question = query_bundle.query_str
        state = _context.CallState(question=question)
        sources: list[Any] = []

        async def model(step: ModelStep) -> ModelResult:
            state.before = step.context
            return self._model_result(await self._engine.aquery(_bundle(step.messages, question)), state, sources)

        async def escalate(prompt: list[Message]) -> Generation:
            completion = await self._escalate_to.acomplete(self._escalation_prompt(prompt, sources))
            return Generation(text=completion.text)

        with _context.active(state):
            flow = guarded_chat(
                self._guard, [Message(role="user", content=question)], can_escalate=self._escalate_to is not None
            )
            outcome = await arun(flow, model, escalate if self._escalate_to is not None else None)
        return self._response(outcome, sources)

    # -- stream -------------------------------------------------------------------------------------------

    def _closed(self, prompt: list[Message], decision: Decision) -> StreamingResponse:
        """The stream of a request an earlier phase decided: its message (or the escalation's answer)."""
        if decision.action is Action.ESCALATE:
            decision = self._escalate(prompt, decision, None, [])
        text = decision.answer if decision.answer is not None else (decision.message or "")
        return StreamingResponse(response_gen=iter([text]), source_nodes=[], metadata=metadata(decision))

    def stream(self, question: str) -> StreamingResponse:
        """Query a *streaming* engine (built with streaming=True). The returned StreamingResponse's generator is
        guarded: pieces are held back ``stream_window`` deep (``stream_mode="buffer"``: until the whole answer
        passed) and decided with their token logprobs; a violation cuts the stream, which ends with the
        policy's message (or the escalation's answer). ``metadata["guardrails"]`` holds the verdict once the
        stream ends; ``source_nodes`` is emptied when the answer is replaced."""
        messages = [Message(role="user", content=question)]
        before = self._guard.before(messages)
        if _decided(before):
            return self._closed(messages, before)
        prompt = before.messages if before.messages is not None else messages
        state = _context.CallState(before=before, question=question)
        with _context.active(state):
            inner = self._engine.query(_bundle(prompt, question))
        if _decided(state.retrieval):
            assert state.retrieval is not None
            return self._closed(prompt, state.retrieval)  # the model's stream is never started
        if not isinstance(inner, StreamingResponse) or inner.response_gen is None:
            raise TypeError("stream() needs a query engine built with streaming=True")
        gate = StreamGate(
            self._guard,
            prompt,
            context=state.context,
            window=self._stream_window,
            alert_bci=self._alert_bci,
            mode=self._stream_mode,
        )
        sources = list(inner.source_nodes)
        result_metadata: dict[str, Any] = metadata(state.context or before)
        pieces = iter(inner.response_gen)

        def guarded() -> Generator[str, None, None]:
            shown = False
            while gate.cut is None:
                with _context.active(state):  # the LLM's chunk events (and their logprobs) reach this request
                    piece = next(pieces, _END)
                if piece is _END:
                    break
                for released in gate.push(str(piece), str(piece), state.take_stream_tokens()):
                    shown = True
                    yield released
            if hasattr(pieces, "close"):
                pieces.close()  # a cut stream is not read further
            released, decision = gate.finish()
            yield from released
            if decision.action is Action.ESCALATE:
                decision = self._escalate(prompt, decision, gate.text, sources)
            result_metadata.update(metadata(decision))
            if decision.action is not Action.ALLOW:
                sources.clear()
                text = decision.answer if decision.answer is not None else (decision.message or "")
                yield ("\n\n" if shown else "") + text

        return StreamingResponse(response_gen=guarded(), source_nodes=sources, metadata=result_metadata)
