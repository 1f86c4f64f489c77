"""Between LlamaIndex's objects and guardrails-uq's plain data: messages, the text the output phase reads,
token logprobs, and the Decision recorded when something cannot be checked.

The output phase must read exactly what a user (or a tool) would receive. For a chat message that is its
text, any reasoning text, and every tool call as its tool reads it: the name and the decoded strings of
its arguments (the proxy's reading, :func:`guardrails_uq.jsonsafe.tool_call_text`). Blocks the guard cannot read (images, audio, documents, citations) make the message uncheckable,
and an uncheckable answer is decided by the policy's ``on_error`` like a failed check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ThinkingBlock, ToolCallBlock

from guardrails_uq import Decision, Guard, Message, TokenLogprob
from guardrails_uq.call import opaque_call_id
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
    """LlamaIndex chat messages as core Messages, as the model reads them: the text blocks, an assistant turn's
    tool calls (``ToolCallBlock`` blocks and OpenAI-style ``additional_kwargs["tool_calls"]``, ids as
    :func:`~guardrails_uq.call.opaque_call_id` keys) and a tool message's call id and tool name, so the input
    phase reads earlier turns' calls (:attr:`Message.read_text`). Blocks the guard cannot read are listed by
    :func:`unreadable_prompt`; the answer is read with :func:`checked_text`."""
    out = []
    for message in messages:
        core_role = role(message)
        fields: dict[str, Any] = {"role": core_role, "content": message.content or ""}
        calls = _tool_calls(message)
        if calls and core_role == "assistant":
            fields["tool_calls"] = [
                {"id": opaque_call_id(call_id), "function": {"name": name, "arguments": arguments}}
                for call_id, name, arguments in calls
            ]
        elif calls:  # a call written into another role's message: its text is still read
            lines = [tool_call_text(name, arguments) for _, name, arguments in calls]
            fields["content"] = "\n".join(p for p in [fields["content"], *lines] if p)
        if core_role == "tool":
            kwargs = message.additional_kwargs
            fields["tool_call_id"] = opaque_call_id(str(kwargs["tool_call_id"])) if kwargs.get("tool_call_id") else None
            fields["name"] = str(kwargs.get("name") or kwargs.get("tool_name") or "")[:128] or None
        out.append(Message.model_validate(fields))
    return out


def _tool_calls(message: ChatMessage) -> list[tuple[str, str, str]]:
    """(id, name, arguments as JSON text) of every tool call written in ``message``, blocks first, each once."""
    found: list[tuple[str, str, str]] = []
    for block in message.blocks:
        if isinstance(block, ToolCallBlock):
            found.append((str(block.tool_call_id or ""), str(block.tool_name), _arguments(block.tool_kwargs)))
    for raw in message.additional_kwargs.get("tool_calls") or ():
        function = _field(raw, "function")
        name = _field(function, "name") if function is not None else _field(raw, "name")
        arguments = _field(function, "arguments") if function is not None else _field(raw, "arguments")
        if name:
            found.append((str(_field(raw, "id") or ""), str(name), _arguments(arguments)))
    # the guard only reads these (the model gets the original messages): a name too long or empty for a core
    # Message is cut or named, never a reason to stop reading the arguments
    named = [(i, (name or "tool")[:128], arguments) for i, name, arguments in found]
    return list(dict.fromkeys(named))


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _arguments(arguments: Any) -> str:
    """Arguments as JSON text (a string is kept as the model wrote it)."""
    if arguments is None:
        return "{}"
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False, default=str)


def unreadable_prompt(messages: Sequence[ChatMessage]) -> list[str]:
    """Block types in ``messages`` the guard cannot read (images, audio, documents...): the model reads them,
    so a prompt holding one cannot be checked and the policy's ``on_error`` decides."""
    return sorted({kind for message in messages for kind in unreadable(message)})


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


def failed(
    guard: Guard,
    phase: Phase,
    where: str,
    problem: str,
    *,
    context: Decision | None = None,
    request_id: str | None = None,
) -> Decision:
    """The ``on_error`` Decision for something the integration could not check (recorded in the audit log),
    carrying the request id (``request_id`` when there is no ``context`` yet) and the signals of ``context``:
    :meth:`Guard.failure`."""
    return guard.failure(phase, where, problem, context=context, request_id=request_id)
