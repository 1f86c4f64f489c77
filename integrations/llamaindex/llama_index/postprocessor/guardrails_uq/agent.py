"""GuardedLLM: a policy around every model call of a LlamaIndex agent (FunctionAgent, AgentWorkflow).

Give an agent a GuardedLLM wrapping its function-calling LLM and each model call of a run goes through the
policy, all under one request id (the workflow's ``run_id``):

* **input phase** before the run's first model call (guidelines are injected into every call's system
  prompt); when it blocks, the model is never called and the agent answers the policy's message;
* **retrieval phase** on tool results: each result is evidence, scored against the user's question; when
  a retrieval rule blocks (nothing relevant came back), the model is not called again; results the
  conformal threshold drops are withheld from the model;
* **output phase** after each model response, on its text, reasoning and tool calls; a blocked response is
  replaced by the policy's message *without its tool calls* (so no tool runs on it and the agent stops);
  an escalated one by ``escalate_to``'s answer (or the policy's escalation target), itself checked;
* **tool phase** before each tool runs, for tools given to the agent as ``llm.guard_tools(tools)``: a
  refused call never runs and the model reads the policy message as its result (:mod:`.tools`).

Streamed responses (``FunctionAgent(streaming=True)``, the default) pass through a StreamGate: text is held
back ``stream_window`` chunks (``stream_mode="buffer"``: until the whole response passed), tool calls are
passed on only once the whole response passed, and a violation cuts the stream, which ends with the policy's
message. Every Decision is written to the audit log and, inside a workflow step, to the run's event stream as
a :class:`GuardrailsEvent`; ``GuardedLLM.request(handler)`` gives the run's Decisions and verdict.

Outside a workflow run (``llm.chat(...)`` called directly) each call is its own request and the response's
``additional_kwargs["guardrails"]`` holds its Decision.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from pathlib import Path
from typing import Any, Literal

from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms import LLM
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.tools import BaseTool
from llama_index.core.workflow import Event
from pydantic import Field, PrivateAttr

from guardrails_uq import Guard, as_embedder
from guardrails_uq.audit import RequestRecord
from guardrails_uq.evidence_scores import cosine_scores
from guardrails_uq.jsonsafe import definitions_text

from . import _requests
from ._turn import AgentPolicy, Scorer, Turn
from .tools import GuardedTool

Call = Callable[[list[ChatMessage]], ChatResponse]
StreamCall = Callable[[list[ChatMessage]], ChatResponseGen]


class GuardrailsEvent(Event):
    """A Decision made during an agent run, written to the run's event stream (``handler.stream_events()``).
    ``decision`` is the Decision as JSON (``Decision.model_validate(event.decision)`` restores it)."""

    decision: dict[str, Any]


def embedding_scorer(embedder: Any = None) -> Scorer:
    """Score tool results by cosine similarity to the question with ``embedder`` (an Embedder, a LlamaIndex
    BaseEmbedding, ...; default: the packaged MiniLM). Use the embedder the retrieval calibration was made
    with. A blank result scores -1 (the lowest)."""
    model = as_embedder(embedder)

    def score(question: str, texts: Sequence[str]) -> list[float]:
        return cosine_scores(model, question, texts)

    return score


def _history(chat_history: Sequence[ChatMessage] | None, user_msg: str | ChatMessage | None) -> list[ChatMessage]:
    messages = list(chat_history or [])
    if user_msg is not None:
        messages.append(ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str) else user_msg)
    return messages


def _unread_direct(tools: Sequence[Any]) -> frozenset[str]:
    """Names of the ``tools`` whose result the agent returns to the user as it is (``return_direct``) and no
    GuardedTool reads (``handoff`` excepted: a handoff never ends the run)."""
    names = set()
    for tool in tools:
        metadata = getattr(tool, "metadata", None)
        if getattr(metadata, "return_direct", False) and not isinstance(tool, GuardedTool):
            names.add(str(metadata.get_name()))  # type: ignore[union-attr]
    return frozenset(names - {"handoff"})


def _definitions(tools: Sequence[Any]) -> str:
    """The tool definitions the model gets, as it reads them (:func:`~guardrails_uq.jsonsafe.definitions_text`
    of each tool in OpenAI's format; a tool that cannot say it: its name and description)."""
    found: list[Any] = []
    for tool in tools:
        metadata = getattr(tool, "metadata", None)
        try:
            found.append(metadata.to_openai_tool(skip_length_check=True))  # type: ignore[union-attr]
        except Exception:
            found.append([getattr(metadata, "name", None), getattr(metadata, "description", None)])
    return definitions_text(found)


def _publish(turn: Turn) -> None:
    """Write the turn's Decisions to the workflow's event stream when called inside a step (else nothing)."""
    if not turn.new:
        return
    try:
        from llama_index.core.workflow import Context

        ctx = Context.get_step_context()
    except Exception:  # not inside a workflow step
        return
    for decision in turn.new:
        ctx.write_event_to_stream(GuardrailsEvent(decision=decision.model_dump(mode="json")))


class GuardedLLM(FunctionCallingLLM):
    """Wraps an LLM (a FunctionCallingLLM for agents) so every call passes the policy; see the module
    docstring for what each phase does. ``evidence_tools``: names of the tools whose results are evidence
    (default: all but ``handoff``; leave out tools whose results are not evidence, such as a calculator);
    ``scorer``: scores a tool result against the question on the scale the policy's retrieval calibration
    uses (default: :func:`embedding_scorer` with the Guard's embedder). Calibrate with an absolute score
    kind (``score_kind="similarity"``): a relative one keeps the best result whatever its score, so it
    cannot tell that a lone tool result is irrelevant."""

    llm: LLM = Field(description="The wrapped model; it sees only prompts the policy let through.")
    escalate_to: LLM | None = Field(
        default=None, description="Answers escalated calls (default: the policy's escalation target, if any)."
    )
    evidence_tools: list[str] | None = Field(
        default=None, description="Tools whose results are retrieved evidence (default: all but handoff)."
    )
    stream_window: int = Field(default=16, ge=0, description="Chunks held back while a response streams.")
    stream_mode: Literal["cut", "buffer"] = Field(
        default="cut", description="cut: release text window-deep, cut on a violation; buffer: release none early."
    )
    alert_bci: float = Field(default=20.0, description="BCI of a copied span that triggers a mid-stream decision.")
    _policy: AgentPolicy = PrivateAttr()

    def __init__(
        self,
        llm: LLM,
        guard: Guard | str | Path,
        *,
        escalate_to: LLM | None = None,
        evidence_tools: Sequence[str] | None = None,
        scorer: Scorer | None = None,
        stream_window: int = 16,
        stream_mode: Literal["cut", "buffer"] = "cut",
        alert_bci: float = 20.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            llm=llm,
            escalate_to=escalate_to,
            evidence_tools=list(evidence_tools) if evidence_tools is not None else None,
            stream_window=stream_window,
            stream_mode=stream_mode,
            alert_bci=alert_bci,
            **kwargs,
        )
        self._policy = AgentPolicy(
            guard if isinstance(guard, Guard) else Guard.from_policy(guard),
            scorer=scorer,
            evidence_tools=evidence_tools,
            stream_window=stream_window,
            stream_mode=stream_mode,
            alert_bci=alert_bci,
        )

    @classmethod
    def class_name(cls) -> str:
        return "GuardedLLM"

    @property
    def guard(self) -> Guard:
        return self._policy.guard

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata

    @staticmethod
    def request(handler_or_run_id: Any) -> RequestRecord | None:
        """Every Decision of a recent agent run (a WorkflowHandler or its ``run_id``) and its ``verdict``;
        None for a run this process did not guard (or one too old to be kept)."""
        run_id = getattr(handler_or_run_id, "run_id", handler_or_run_id)
        request = _requests.lookup(str(run_id))
        return request.record() if request is not None else None

    def guard_tools(self, tools: Sequence[BaseTool]) -> list[GuardedTool]:
        """``tools`` behind the tool phase (:class:`~.tools.GuardedTool`): give these to the agent, so a tool
        a tool rule refuses never runs (the model reads the policy message as its result) and an escalated
        call runs only when ``escalate_to`` (else the policy's escalation target) approves it."""
        return [GuardedTool(tool, self.guard, self.escalate_to) for tool in tools]

    # -- the seam: one guarded call, sync and async, whole and streamed ------------------------------------

    def _turn(self, messages: Sequence[ChatMessage], tools: Sequence[Any] = ()) -> Turn:
        turn = Turn(self._policy, _requests.request_for_call(), messages, self.llm.metadata.model_name)
        turn.unread_direct = _unread_direct(tools)
        turn.tools_text = _definitions(tools)
        return turn

    def _tool_calls(self, response: ChatResponse) -> tuple[list[Any], str | None]:
        """The response's tool calls as the agent will read them, or why they cannot be read."""
        if not isinstance(self.llm, FunctionCallingLLM):
            return [], None
        try:
            return list(self.llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)), None
        except NotImplementedError:
            return [], None
        except Exception as exc:
            return [], f"the model's tool calls cannot be read: {type(exc).__name__}: {exc}"

    def _escalation_answer(self, turn: Turn) -> str | BaseException | None:
        if self.escalate_to is None:
            return None
        try:
            return self.escalate_to.chat(turn.escalation_messages()).message.content or ""
        except Exception as exc:  # recorded by Guard.escalate, which applies on_error
            return exc

    async def _aescalation_answer(self, turn: Turn) -> str | BaseException | None:
        if self.escalate_to is None:
            return None
        try:
            return (await self.escalate_to.achat(turn.escalation_messages())).message.content or ""
        except Exception as exc:
            return exc

    def _run(self, messages: Sequence[ChatMessage], call: Call, tools: Sequence[Any] = ()) -> ChatResponse:
        turn = self._turn(messages, tools)
        turn.start()
        if turn.blocked is None:
            response = call(turn.history)
            turn.review(response, *self._tool_calls(response))
        if turn.pending_escalation:
            turn.escalate(self._escalation_answer(turn))
        _publish(turn)
        return turn.result()

    async def _arun(
        self, messages: Sequence[ChatMessage], call: Callable[..., Awaitable[ChatResponse]], tools: Sequence[Any] = ()
    ) -> ChatResponse:
        turn = self._turn(messages, tools)
        await asyncio.to_thread(turn.start)
        if turn.blocked is None:
            response = await call(turn.history)
            await asyncio.to_thread(turn.review, response, *self._tool_calls(response))
        if turn.pending_escalation:
            await asyncio.to_thread(turn.escalate, await self._aescalation_answer(turn))
        _publish(turn)
        return turn.result()

    def _stream(self, messages: Sequence[ChatMessage], call: StreamCall, tools: Sequence[Any] = ()) -> ChatResponseGen:
        turn = self._turn(messages, tools)
        turn.start()
        chunks = call(turn.history) if turn.blocked is None else None

        def gen() -> Generator[ChatResponse, None, None]:
            if chunks is not None:
                turn.open_stream()
                try:
                    for chunk in chunks:
                        yield from turn.push(chunk)
                        if turn.cut:
                            break
                finally:
                    if hasattr(chunks, "close"):
                        chunks.close()
                last = turn.last_chunk
                turn.end_stream(*(self._tool_calls(last) if last is not None else ([], None)))
            if turn.pending_escalation:
                turn.escalate(self._escalation_answer(turn))
            _publish(turn)
            yield from turn.tail()

        return gen()

    async def _astream(
        self,
        messages: Sequence[ChatMessage],
        call: Callable[..., Awaitable[ChatResponseAsyncGen]],
        tools: Sequence[Any] = (),
    ) -> ChatResponseAsyncGen:
        turn = self._turn(messages, tools)
        await asyncio.to_thread(turn.start)
        chunks = await call(turn.history) if turn.blocked is None else None

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            if chunks is not None:
                turn.open_stream()
                try:
                    async for chunk in chunks:
                        for released in turn.push(chunk):
                            yield released
                        if turn.cut:
                            break
                finally:
                    if hasattr(chunks, "aclose"):
                        await chunks.aclose()
                last = turn.last_chunk
                calls = self._tool_calls(last) if last is not None else ([], None)
                await asyncio.to_thread(turn.end_stream, *calls)
            if turn.pending_escalation:
                await asyncio.to_thread(turn.escalate, await self._aescalation_answer(turn))
            _publish(turn)
            for chunk in turn.tail():
                yield chunk

        return gen()

    # -- LLM -------------------------------------------------------------------------------------------------

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._run(messages, lambda history: self.llm.chat(history, **kwargs))

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._arun(messages, lambda history: self.llm.achat(history, **kwargs))

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._stream(messages, lambda history: self.llm.stream_chat(history, **kwargs))

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return await self._astream(messages, lambda history: self.llm.astream_chat(history, **kwargs))

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return chat_to_completion_decorator(self.chat)(prompt, **kwargs)

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await achat_to_completion_decorator(self.achat)(prompt, **kwargs)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return stream_chat_to_completion_decorator(self.stream_chat)(prompt, **kwargs)

    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return await astream_chat_to_completion_decorator(self.astream_chat)(prompt, **kwargs)

    # -- FunctionCallingLLM: the wrapped model prepares and parses its own tool calls ------------------------

    def _tool_kwargs(self, verbose: bool, allow_parallel_tool_calls: bool, tool_required: bool) -> dict[str, Any]:
        extra: dict[str, Any] = {"verbose": verbose, "allow_parallel_tool_calls": allow_parallel_tool_calls}
        if tool_required:
            extra["tool_required"] = True
        return extra

    def chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        extra = {**self._tool_kwargs(verbose, allow_parallel_tool_calls, tool_required), **kwargs}
        return self._run(
            _history(chat_history, user_msg),
            lambda history: self._inner().chat_with_tools(tools, chat_history=history, **extra),
            tools,
        )

    async def achat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        extra = {**self._tool_kwargs(verbose, allow_parallel_tool_calls, tool_required), **kwargs}
        return await self._arun(
            _history(chat_history, user_msg),
            lambda history: self._inner().achat_with_tools(tools, chat_history=history, **extra),
            tools,
        )

    def stream_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponseGen:
        extra = {**self._tool_kwargs(verbose, allow_parallel_tool_calls, tool_required), **kwargs}
        return self._stream(
            _history(chat_history, user_msg),
            lambda history: self._inner().stream_chat_with_tools(tools, chat_history=history, **extra),
            tools,
        )

    async def astream_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> ChatResponseAsyncGen:
        extra = {**self._tool_kwargs(verbose, allow_parallel_tool_calls, tool_required), **kwargs}
        return await self._astream(
            _history(chat_history, user_msg),
            lambda history: self._inner().astream_chat_with_tools(tools, chat_history=history, **extra),
            tools,
        )

    def _inner(self) -> FunctionCallingLLM:
        if not isinstance(self.llm, FunctionCallingLLM):
            raise TypeError(f"{type(self.llm).__name__} cannot call tools: wrap a FunctionCallingLLM")
        return self.llm

    def _prepare_chat_with_tools(self, tools: Sequence[Any], **kwargs: Any) -> dict[str, Any]:
        return self._inner()._prepare_chat_with_tools(tools, **kwargs)

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[Any]:
        return self._inner().get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )
