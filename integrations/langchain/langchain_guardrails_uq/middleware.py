"""GuardrailsMiddleware: a guardrails-uq policy around every step of a LangChain v1 agent (``create_agent``).

    agent.invoke ─▶ before_model ─▶ input phase (once per user text) ─ blocked ─▶ policy message, jump to end
        ▲                        └▶ retrieval phase on new tool results ─ blocked ─▶ policy message, end
        │          wrap_model_call: guidelines in the system prompt, withheld tool results hidden,
        │                           the model ─▶ output phase (text and tool-call arguments)
        │                                         ├ allow ─▶ the model's message (Decision in metadata)
        │                                         ├ abstain ─▶ policy message, no tool calls (the loop ends)
        │                                         └ escalate ─▶ the larger model's checked answer, no tool calls
        └── wrap_tool_call: tool phase on each call (tool.name, tool.arguments, app signals)
                              ├ allow ─▶ the tool runs (a ``return_direct`` result passes the output phase)
                              ├ abstain ─▶ the tool does not run; its result is the policy message
                              └ escalate ─▶ the escalation target approves (the tool runs) or not (it does not)

Every phase of one ``agent.invoke`` carries one request id (the run's id) and reads the signals of the phases
before it; the last message carries the final Decision in ``response_metadata["guardrails"]``. The model
runs out of sight of stream consumers (see ``_quiet``): ``stream_mode="messages"`` and ``astream_events``
receive each model step once the output phase has passed it, never the model's raw tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse, hook_config
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, SystemMessage, ToolMessage
from langgraph.runtime import Runtime

from guardrails_uq import Action, Decision, Generation, Guard, Message, ScoredDocument
from guardrails_uq.embeddings import Embedder, as_embedder
from guardrails_uq.errors import InputError
from guardrails_uq.evidence_scores import WITHHELD, RefusedResults, cosine_scores, scores_read
from guardrails_uq.types import SignalMap

from ._convert import (
    as_forwarded,
    checked_message,
    decision_metadata,
    generation_of,
    guideline_block,
    text_of,
    to_core,
    to_langchain,
    tools_text,
    user_text,
    with_guidelines,
)
from ._phases import RequestPhases, blocked
from ._quiet import quiet_config, quiet_context
from ._requests import current_run_id, ensure_tracking, request_of


def _policy_message(decision: Decision, text: str | None = None) -> AIMessage:
    """The answer that replaces a blocked step: the policy's message (or an escalation's answer), no tool calls."""
    content = text if text is not None else (decision.answer or decision.message or "")
    return AIMessage(content=content, response_metadata=decision_metadata(decision))


class GuardrailsMiddleware(AgentMiddleware):
    """Guards an agent made by ``langchain.agents.create_agent`` (see the module docstring for the flow).

    ``guard``: a Guard or a policy path. ``escalate_to``: the chat model that answers when the output phase
    escalates (default: the policy's escalation target; none: the policy's escalate message). Tool results
    are the agent's retrieved evidence: before the next model call they pass the retrieval phase, scored
    like a retriever's chunks by the cosine similarity of ``embeddings`` (default: the Guard's embedder,
    the retriever the policy's default ``retrieval.fingerprint`` names) between the user's request and the
    result (or by ``scorer(query, texts)``: the scores of the retriever the calibration was made with), or by
    ``metadata[score_key]`` of the Documents a tool returns as its artifact. A result the
    conformal check drops is withheld from the model; a retrieval rule that blocks (no-evidence) ends the
    run with its message. ``evidence_tools`` limits this to the named tools (default: every tool; leave out
    tools whose results are not evidence, such as a calculator). ``signals(runtime_context)`` returns the
    app's signals for a request from the agent's runtime context (``create_agent(context_schema=...)``,
    ``agent.invoke(..., context=...)``), e.g. ``{"app.user": context.user}``: every phase reads them, the
    tool phase too (``tool.arguments.user != app.user``). Put this middleware first in
    ``middleware=[...]``: it then wraps the others, and no other hook sees a request it refused.
    """

    def __init__(
        self,
        guard: Guard | str | Path,
        *,
        escalate_to: BaseChatModel | None = None,
        evidence_tools: Collection[str] | None = None,
        embeddings: Any = None,
        scorer: Callable[[str, Sequence[str]], Sequence[float]] | None = None,
        score_key: str = "score",
        top_logprobs: int = 5,
        signals: Callable[[Any], SignalMap] | None = None,
    ) -> None:
        super().__init__()
        self.guard = guard if isinstance(guard, Guard) else Guard.from_policy(guard)
        self.escalate_to = escalate_to
        self.evidence_tools = frozenset(evidence_tools) if evidence_tools is not None else None
        self.score_key = score_key
        self.top_logprobs = top_logprobs
        self._embedder: Embedder | None = as_embedder(embeddings) if embeddings is not None else None
        self._scorer = scorer
        self._signals = signals
        #: tool results dropped or blocked on, withheld in every later run too (a checkpointer keeps them)
        self._refused = RefusedResults()
        ensure_tracking()

    # -- the agent's hooks ----------------------------------------------------------------------------

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: AgentState, runtime: Runtime) -> dict[str, Any] | None:
        """Input phase (once per user text) and retrieval phase on new tool results; a block ends the run."""
        decision = self._screen(self._phases(), state["messages"], runtime)
        return None if decision is None else {"messages": [_policy_message(decision)], "jump_to": "end"}

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: AgentState, runtime: Runtime) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.before_model, state, runtime)

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse | AIMessage:
        """The model call with guidelines injected, out of sight of stream consumers, then the output phase."""
        phases = self._phases()
        # also when another hook jumped past before_model
        decision = self._screen(phases, request.messages, request.runtime) or self._beside_refused(phases, request)
        if decision is not None:
            return ModelResponse(result=[_policy_message(decision)])
        response = quiet_context().run(handler, self._prepared(phases, request))
        return self._checked(phases, request, response)

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelResponse | AIMessage:
        phases = self._phases()
        decision = await asyncio.to_thread(self._screen, phases, request.messages, request.runtime)
        decision = decision or await asyncio.to_thread(self._beside_refused, phases, request)
        if decision is not None:
            return ModelResponse(result=[_policy_message(decision)])
        prepared = self._prepared(phases, request)
        response = await asyncio.create_task(_awaited(handler(prepared)), context=quiet_context())
        return await asyncio.to_thread(self._checked, phases, request, response)

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        """Tool phase before the tool runs (a blocked call's result is the policy message); a
        ``return_direct`` tool's result is the answer, so it passes the output phase."""
        refused = self._tool_phase(request)
        if refused is not None:
            return refused
        return self._direct(request, handler(request))

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        refused = await asyncio.to_thread(self._tool_phase, request)
        if refused is not None:
            return refused
        result = await handler(request)
        return await asyncio.to_thread(self._direct, request, result)

    # -- phases ---------------------------------------------------------------------------------------

    def _phases(self) -> RequestPhases:
        return RequestPhases(self.guard, request_of(current_run_id()))

    def _app_signals(self, runtime: Any) -> SignalMap:
        """The app's signals for this request, from the runtime context (none without ``signals=``); an
        InputError when ``signals`` fails (the phase then fails closed through ``on_error``)."""
        if self._signals is None:
            return {}
        try:
            return dict(self._signals(getattr(runtime, "context", None)))
        except Exception as exc:
            raise InputError(
                f"signals(runtime context) failed: {type(exc).__name__}: {exc}",
                source="GuardrailsMiddleware(signals=...)",
            ) from exc

    def _tool_phase(self, request: Any) -> ToolMessage | None:
        """The tool phase on ``request.tool_call``: None when the tool may run, else the ToolMessage that
        stands for its result (the policy's message, the Decision in ``response_metadata``). An escalated call
        runs only when the escalation target approves it."""
        if not self.guard.guards_tools:
            return None
        phases = self._phases()
        call = request.tool_call
        try:
            signals = self._app_signals(getattr(request, "runtime", None))
        except InputError as exc:
            decision = phases.failure("tool", "signals", exc)
        else:
            decision = phases.tool(
                str(call.get("name") or ""), call.get("args") or {}, call_id=call.get("id"), signals=signals
            )
        if decision.action is Action.ESCALATE:
            decision = phases.approve_tool(decision, target=self._target())
        if decision.action is Action.ALLOW:
            return None
        return ToolMessage(
            content=decision.message or "",
            tool_call_id=call.get("id") or "",
            name=call.get("name"),
            status="error",
            response_metadata=decision_metadata(decision),
        )

    @staticmethod
    def _read_once(phases: RequestPhases, key: str, messages: list[Message]) -> Decision | None:
        """The input phase on ``messages`` the first time ``key`` comes up in the request: the Decision when it
        blocks (logged and remembered as the verdict), else None (not logged: one input Decision per user text)."""
        if not phases.request.unseen([key]):
            return None
        decision = phases.guard.before(messages, request_id=phases.request_id, record=False)
        if not blocked(decision):
            return None
        phases.guard.record(decision)
        return phases.record(decision)

    def _beside_refused(self, phases: RequestPhases, request: ModelRequest) -> Decision | None:
        """The input phase on what the model gets beside the state's messages, once per distinct text in a
        request: the tool definitions bound to it (:func:`~._convert.tools_text`, as the proxy reads a
        request's ``tools``), and the system prompt with the conversation (a ``dynamic_prompt`` may build it
        from data the user controls). The Decision when one blocks, else None."""
        tools = tools_text(request.tools)
        if tools:
            decision = self._read_once(phases, "tools\x00" + tools, [Message(role="user", content=tools)])
            if decision is not None:
                return decision
        system = request.system_message
        text = text_of(system) if system is not None else ""
        if text:
            return self._read_once(phases, "system\x00" + text, to_core([system, *request.messages]))
        return None

    def _screen(self, phases: RequestPhases, messages: list[AnyMessage], runtime: Any) -> Decision | None:
        """The Decision that blocks the next model call, or None: the request's verdict, else the input
        phase (reused when it already ran on this user text), else the retrieval phase on tool results
        not assessed yet."""
        verdict = phases.verdict()
        if verdict is not None:
            return verdict
        try:
            before = phases.before(to_core(messages), signals=self._app_signals(runtime))
        except InputError as exc:  # the app's signals failed or do not fit the policy: fail closed, logged
            return phases.failure("input", "signals", exc)
        if blocked(before):
            return before
        evidence = self._new_evidence(phases, messages)
        if evidence is None:
            return None
        documents, owners = evidence
        decision = phases.retrieve(user_text(messages), documents)
        kept = {d.id for d in decision.documents} if decision.documents is not None else {d.id for d in documents}
        useful = {owner for doc, owner in owners.items() if doc in kept}
        dropped = set(owners.values()) - useful
        phases.request.withheld.update(dropped)
        ended = blocked(decision)  # the run ends on these results: a later run must not give them to the model
        refused = set(owners.values()) if ended else dropped
        self._refused.add(text_of(m) for m in messages if isinstance(m, ToolMessage) and _key(m) in refused)
        return decision if ended else None

    def _new_evidence(
        self, phases: RequestPhases, messages: list[AnyMessage]
    ) -> tuple[list[ScoredDocument], dict[str, str]] | None:
        """The tool results since the model's last call that are evidence and were not assessed yet, as
        scored documents, with the tool call each came from; None when there are none (or the policy has
        no retrieval phase)."""
        if not self._has_retrieval():
            return None
        results: list[ToolMessage] = []
        for message in reversed(messages):
            if isinstance(message, AIMessage):
                break
            if isinstance(message, ToolMessage) and (
                self.evidence_tools is None or (message.name or "") in self.evidence_tools
            ):
                results.append(message)
        fresh = set(phases.request.unseen([_key(m) for m in results]))
        results = [m for m in reversed(results) if _key(m) in fresh]
        if not results:
            return None
        query = user_text(messages)
        pending: list[tuple[str, str, str, float | None]] = []  # (doc id, owner, text, score)
        for message in results:
            artifact = message.artifact if isinstance(message.artifact, list) else []
            scored = [d for d in artifact if isinstance(d, Document) and self.score_key in d.metadata]
            owner = _key(message)
            if scored:
                for i, d in enumerate(scored):
                    pending.append((f"{owner}#{d.id or i}", owner, d.page_content, float(d.metadata[self.score_key])))
            else:
                pending.append((owner, owner, text_of(message), None))
        unscored = [i for i, p in enumerate(pending) if p[3] is None]
        scores = self._similarities(query, [pending[i][2] for i in unscored]) if unscored else []
        for i, score in zip(unscored, scores, strict=True):
            pending[i] = (*pending[i][:3], score)
        documents = [ScoredDocument(id=d, text=t, score=float(s or 0.0)) for d, _, t, s in pending]
        return documents, {d: owner for d, owner, _, _ in pending}

    def _has_retrieval(self) -> bool:
        return bool(self.guard.checks["retrieval"]) or any(r.at == "retrieval" for r in self.guard.policy.model.rules)

    def _similarities(self, query: str, texts: list[str]) -> list[float]:
        if self._scorer is not None:
            return [float(s) for s in self._scorer(query, texts)]
        if not scores_read(self.guard):
            return [0.0] * len(texts)  # no conformal check: nothing reads the scores
        return cosine_scores(self._embedder or self.guard.embedder, query, texts)

    def _prepared(self, phases: RequestPhases, request: ModelRequest) -> ModelRequest:
        """The request the model sees: guidelines in the system prompt, withheld tool results hidden, nothing
        the input phase did not read (:func:`~._convert.as_forwarded`: other roles' names dropped, tool-call ids
        opaque), logprobs asked for when the model has that option."""
        overrides: dict[str, Any] = {}
        block = guideline_block(phases.request.input_for(user_text(request.messages), phases.policy))
        system = with_guidelines(request.system_prompt, block)
        if system != request.system_prompt:
            overrides["system_message"] = SystemMessage(content=system or "")
        withheld = phases.request.withheld
        overrides["messages"] = as_forwarded(
            [
                m.model_copy(update={"content": WITHHELD, "artifact": None})
                if isinstance(m, ToolMessage) and (_key(m) in withheld or text_of(m) in self._refused)
                else m
                for m in request.messages
            ]
        )
        if "logprobs" in type(request.model).model_fields and "logprobs" not in request.model_settings:
            overrides["model_settings"] = {
                **request.model_settings,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
            }
        return request.override(**overrides) if overrides else request

    def _checked(self, phases: RequestPhases, request: ModelRequest, response: Any) -> ModelResponse:
        """The output phase on the model's message; a blocked one is replaced by the policy's message."""
        if isinstance(response, AIMessage):
            response = ModelResponse(result=[response])
        messages = list(response.result)
        index = next((i for i, m in enumerate(messages) if isinstance(m, AIMessage)), None)
        if index is None:
            return response
        message = messages[index]
        prompt = to_core(self._prompt(request))
        decision = phases.after_read(lambda: generation_of(message), messages=prompt)
        if decision.action is Action.ALLOW:
            messages[index] = checked_message(message, decision)
            return ModelResponse(result=messages, structured_response=response.structured_response)
        if decision.action is Action.ESCALATE:
            decision = phases.escalate(
                _escalation_prompt(prompt), decision, original=text_of(message), target=self._target()
            )
        return ModelResponse(result=[_policy_message(decision)])

    def _direct(self, request: Any, result: Any) -> Any:
        tool = getattr(request, "tool", None)
        if tool is None or not getattr(tool, "return_direct", False) or not isinstance(result, ToolMessage):
            return result
        phases = self._phases()
        state = getattr(request, "state", None) or {}
        prompt = to_core(state.get("messages", []) if isinstance(state, dict) else [])
        decision = phases.after_read(lambda: generation_of(result), messages=prompt)
        if decision.action is Action.ALLOW:
            return result
        if decision.action is Action.ESCALATE:
            decision = phases.escalate(
                _escalation_prompt(prompt), decision, original=text_of(result), target=self._target()
            )
        return result.model_copy(
            update={
                "content": decision.answer or decision.message or "",
                "artifact": None,
                "response_metadata": decision_metadata(decision),
            }
        )

    @staticmethod
    def _prompt(request: ModelRequest) -> list[BaseMessage]:
        return [request.system_message, *request.messages] if request.system_message else list(request.messages)

    def _target(self) -> Callable[[list[Any]], Generation] | None:
        """The escalation target: ``escalate_to`` (run out of sight of stream consumers), else the Guard's."""
        if self.escalate_to is None:
            return None
        model = self.escalate_to
        return lambda prompt: generation_of(model.invoke(to_langchain(prompt), quiet_config(None)))


def _key(message: ToolMessage) -> str:
    """Names one tool result within a request (the message id LangGraph gives it, and its tool call's id)."""
    return f"{message.tool_call_id}:{message.id or ''}"


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _escalation_prompt(prompt: list[Message]) -> list[Message]:
    """The conversation for an escalation target that has no tools: tool results become context in user
    turns, tool-calling turns without text are left out."""
    out = []
    for message in prompt:
        if message.role == "tool":
            out.append(Message(role="user", content=f"Tool result:\n{message.content}"))
        elif message.role != "assistant" or message.content.strip():
            out.append(message)
    return out
