"""Between LlamaIndex's objects and guardrails-uq's plain data: messages, the text the output phase reads,
token logprobs, and the Decision recorded when something cannot be checked.

The output phase must read exactly what a user (or a tool) would receive. For a chat message that is its
text, any reasoning text, and every tool call as its tool reads it: the name and the decoded strings of
its arguments (the proxy's reading, :func:`guardrails_uq.jsonsafe.tool_call_text`). Blocks the guard cannot read (images, audio, documents, citations) make the message uncheckable,
and an uncheckable answer is decided by the policy's ``on_error`` like a failed check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ThinkingBlock, ToolCallBlock

from guardrails_uq import Decision, Guard, Message, TokenLogprob
from guardrails_uq.jsonsafe import tool_call_text
from guardrails_uq.models.logprobs import from_llamaindex
from guardrails_uq.types import Phase

_ROLES: dict[str, str] = {
    MessageRole.SYSTEM.value: "system",
    MessageRole.DEVELOPER.value: "system",
    MessageRole.USER.value: "user",
    MessageRole.ASSISTANT.value: "assistant",
    MessageRole.CHATBOT.value: "assistant",
    MessageRole.MODEL.value: "assistant",
    MessageRole.TOOL.value: "tool",
    MessageRole.FUNCTION.value: "tool",
}
_READABLE = (TextBlock, ThinkingBlock, ToolCallBlock)


def metadata(decision: Decision) -> dict[str, Any]:
    """The ``{"guardrails": <Decision as JSON>}`` entry integrations attach to what they return."""
    return {"guardrails": decision.model_dump(mode="json")}


def role(message: ChatMessage) -> str:
    """The core role of a LlamaIndex message (developer counts as system, function and tool as tool)."""
    value = message.role.value if isinstance(message.role, MessageRole) else str(message.role)
    return _ROLES.get(value, "user")


def to_messages(messages: Sequence[ChatMessage]) -> list[Message]:
    """LlamaIndex chat messages as core Messages (text blocks only; see :func:`checked_text` for answers)."""
    return [Message(role=role(m), content=m.content or "") for m in messages]  # type: ignore[arg-type]


def unreadable(message: ChatMessage) -> list[str]:
    """Block types of ``message`` the guard cannot read (empty when every block is text, reasoning or a
    tool call)."""
    return [getattr(b, "block_type", type(b).__name__) for b in message.blocks if not isinstance(b, _READABLE)]


def tool_call_lines(calls: Sequence[Any]) -> list[str]:
    """Tool calls (LlamaIndex ``ToolSelection``s) as each tool reads them
    (:func:`guardrails_uq.jsonsafe.tool_call_text`: the name, then every key and decoded string of the
    arguments)."""
    return [tool_call_text(str(call.tool_name), call.tool_kwargs) for call in calls]


def checked_text(message: ChatMessage, calls: Sequence[Any] = ()) -> str:
    """What the output phase reads for a model message: its text, its reasoning text, then its tool calls."""
    parts = [message.content or ""]
    parts += [b.content for b in message.blocks if isinstance(b, ThinkingBlock) and b.content]
    parts += tool_call_lines(calls)
    return "\n".join(p for p in parts if p)


def tokens_of(logprobs: Any) -> list[TokenLogprob] | None:
    """Token logprobs of a LlamaIndex response (``ChatResponse.logprobs`` / ``CompletionResponse.logprobs``).

    None when the model sent none. Logprobs that cannot be parsed become one token with an infinite
    logprob, which the uncertainty check refuses (a check failure), so the policy's ``on_error`` decides
    instead of the answer passing as if the model had sent no logprobs."""
    try:
        return from_llamaindex(logprobs)
    except Exception:
        return [TokenLogprob(token="", logprob=math.inf)]


def failed(guard: Guard, phase: Phase, where: str, problem: str, *, context: Decision | None = None) -> Decision:
    """The ``on_error`` Decision for something the integration could not check (recorded in the audit log),
    carrying the request id and the signals of ``context``: :meth:`Guard.failure`."""
    return guard.failure(phase, where, problem, context=context)
