"""GuardedTool: the tool phase before a LlamaIndex agent's tool runs (made by ``GuardedLLM.guard_tools``).

    agent step ─▶ GuardedLLM (output phase on the tool call) ─▶ GuardedTool.acall(**arguments)
                                                               ├ allow ─▶ the tool runs
                                                               ├ abstain ─▶ it does not run; the model reads
                                                               │            the policy message as its result
                                                               └ escalate ─▶ the escalation target approves it
                                                                            (it runs) or not (it does not)

The phase runs inside the agent's run: it reads the run's latest Decision (its input signals, its verdict)
and carries the run's request id. Its Decision is logged but is not the run's context or verdict: a refused
tool call does not end the run. Without tool rules in the policy the tool runs unchecked (nothing to decide).

A ``return_direct`` tool's result is the run's answer (the agent returns it without another model call), so
the output phase reads it (its text, what the agent returns) and what the policy does not allow is replaced
by the policy's message or the escalation's answer; that Decision is the run's verdict (:meth:`GuardedTool.direct`).
GuardedLLM refuses a model step that calls a return_direct tool not wrapped here (its result would go unread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.llms import LLM
from llama_index.core.tools import AsyncBaseTool, BaseTool, ToolMetadata, ToolOutput
from llama_index.core.tools.types import adapt_to_async_tool

from guardrails_uq import Action, Generation, Guard, Message

from . import _requests

_ROLES = {"system": MessageRole.SYSTEM, "user": MessageRole.USER, "assistant": MessageRole.ASSISTANT}


def _reviewer(llm: LLM | None) -> Callable[[list[Message]], str] | None:
    """The escalation target as Guard.approve_tool calls it: ``llm``'s reply to the approval prompt (None: the
    Guard's own target, the policy's ``escalation.model``)."""
    if llm is None:
        return None

    def review(messages: list[Message]) -> str:
        prompt = [ChatMessage(role=_ROLES.get(m.role, MessageRole.USER), content=m.content) for m in messages]
        return llm.chat(prompt).message.content or ""

    return review


class GuardedTool(AsyncBaseTool):
    """``tool`` behind the tool phase of ``guard`` (see the module docstring); same name, description and
    schema, so the model and the agent see the tool unchanged. ``escalate_to`` approves escalated calls."""

    def __init__(self, tool: BaseTool, guard: Guard, escalate_to: LLM | None = None) -> None:
        self.tool = tool
        self.guard = guard
        self.escalate_to = escalate_to

    @property
    def metadata(self) -> ToolMetadata:
        return self.tool.metadata

    def refusal(self, arguments: dict[str, Any]) -> ToolOutput | None:
        """The tool phase on a call with ``arguments``: None when the tool may run, else the ToolOutput that
        stands for its result (the policy message; ``raw_output`` the Decision as JSON)."""
        if not self.guard.guards_tools:
            return None
        request = _requests.request_for_call()
        name = self.metadata.get_name()
        decision = self.guard.tool(name, arguments, context=request.latest, request_id=request.request_id)
        if decision.action is Action.ESCALATE:
            decision = self.guard.approve_tool(decision, target=_reviewer(self.escalate_to))
        if decision.action is Action.ALLOW:
            return None
        message = decision.message or ""
        return ToolOutput(
            content=message,
            tool_name=name,
            raw_input=arguments,
            raw_output={"guardrails": decision.client_view()},
            is_error=True,
        )

    def direct(self, output: ToolOutput) -> ToolOutput:
        """``output`` as the agent may return it: unchanged unless the tool returns its result directly (a
        ``return_direct`` result that is not an error), which the output phase reads first, as an answer to
        the run's question; one the policy does not allow becomes the policy's message (or the escalation's
        answer), ``raw_output`` the Decision. The Decision is added to the run's (it is its verdict)."""
        if not self.metadata.return_direct or output.is_error:
            return output
        request = _requests.request_for_call()
        prompt = [Message(role="user", content=request.question)] if request.question else []
        text = output.content
        decision = self.guard.after(
            Generation(text=text), messages=prompt, context=request.latest, request_id=request.request_id
        )
        if decision.action is Action.ESCALATE and decision.final:
            review = _reviewer(self.escalate_to)
            target = None if review is None else (lambda messages: Generation(text=review(messages)))
            decision = self.guard.escalate(prompt, decision, original=text, target=target)
        request.decisions.append(decision)
        if decision.action is Action.ALLOW:
            return output
        return ToolOutput(
            content=decision.answer if decision.answer is not None else (decision.message or ""),
            tool_name=output.tool_name,
            raw_input=output.raw_input,
            raw_output={"guardrails": decision.client_view()},
        )

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        refused = self.refusal(_arguments(args, kwargs))
        if refused is not None:
            return refused
        return self.direct(adapt_to_async_tool(self.tool).call(*args, **kwargs))

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        refused = await asyncio.to_thread(self.refusal, _arguments(args, kwargs))
        if refused is not None:
            return refused
        output = await adapt_to_async_tool(self.tool).acall(*args, **kwargs)
        return await asyncio.to_thread(self.direct, output)


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments as the tool phase reads them (a lone positional input as ``input``)."""
    return {**({"input": args[0]} if len(args) == 1 else {f"arg{i}": a for i, a in enumerate(args)}), **kwargs}
