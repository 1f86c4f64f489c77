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

from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)

from guardrails_uq import Decision, Guard, Message, TokenLogprob
from guardrails_uq.call import opaque_call_id
from guardrails_uq.jsonsafe import json_strings, tool_call_text
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
_READABLE = (TextBlock, ThinkingBlock, ToolCallBlock, CachePoint)  # a cache point holds no text
#: ``additional_kwargs`` keys read as structure, not as text: the calls (read as calls) and the call id (a key)
_STRUCTURE = frozenset({"tool_calls", "function_call", "tool_call_id"})
_NAME_KEYS = ("name", "tool_name")


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
    phase reads earlier turns' calls (:attr:`Message.read_text`). GuardedLLM gives the model the app's own
    messages, ids as written, so the ids' text is read too (one line of the content). Blocks the guard cannot
    read are listed by :func:`unreadable_prompt`; the answer is read with :func:`checked_text`."""
    out = []
    for message in messages:
        core_role = role(message)
        fields: dict[str, Any] = {"role": core_role, "content": prompt_text(message)}
        calls = _tool_calls(message)
        ids = [call_id for call_id, _, _ in calls]
        if core_role == "tool":
            ids.append(str(message.additional_kwargs.get("tool_call_id") or ""))
        ids = [i for i in dict.fromkeys(ids) if i]
        if calls and core_role == "assistant":
            fields["tool_calls"] = [
                {"id": opaque_call_id(call_id), "function": {"name": (name or "tool")[:128], "arguments": arguments}}
                for call_id, name, arguments in calls
            ]
            # a name that does not fit a core call (empty, or past 128 characters) is read whole as text
            calls = [call for call in calls if not 0 < len(call[1]) <= 128]
        if calls:  # a call written into another role's message, or a name cut above: its text is still read
            lines = [tool_call_text(name, arguments) for _, name, arguments in calls]
            fields["content"] = "\n".join(p for p in [fields["content"], *lines] if p)
        if ids:
            fields["content"] = "\n".join(p for p in [fields["content"], " ".join(ids)] if p)
        if core_role == "tool":
            kwargs = message.additional_kwargs
            fields["tool_call_id"] = opaque_call_id(str(kwargs["tool_call_id"])) if kwargs.get("tool_call_id") else None
            fields["name"] = _tool_name(message)
        out.append(Message.model_validate(fields))
    return out


def prompt_text(message: ChatMessage) -> str:
    """Everything the model may read in ``message`` besides its tool calls, one piece a line: the text blocks,
    the reasoning blocks (an adapter sends a turn's ``ThinkingBlock`` back), and every string of
    ``additional_kwargs`` (LlamaIndex's OpenAI adapters forward it into the request: a ``content`` there
    replaces the blocks' text, a ``name`` names the speaker, ``reasoning_content`` is a turn's reasoning),
    except the calls and the call id (read as structure) and a tool message's name (its :attr:`Message.name`)."""
    parts = [message.content or ""]
    parts += [b.content for b in message.blocks if isinstance(b, ThinkingBlock) and b.content]
    named = role(message) == "tool" and _tool_name(message) is not None
    for key, value in message.additional_kwargs.items():
        if key in _STRUCTURE or (named and key in _NAME_KEYS):
            continue
        parts += json_strings(value)
    return "\n".join(p for p in parts if p)


def _tool_name(message: ChatMessage) -> str | None:
    """A tool message's tool name (``name`` or ``tool_name``) when it fits :attr:`Message.name` (at most 128
    characters; a longer one is read by :func:`prompt_text` as text, whole)."""
    kwargs = message.additional_kwargs
    name = str(kwargs.get("name") or kwargs.get("tool_name") or "")
    return name if 0 < len(name) <= 128 else None


def _tool_calls(message: ChatMessage) -> list[tuple[str, str, str]]:
    """(id, name, arguments as JSON text) of every tool call written in ``message`` (``ToolCallBlock`` blocks,
    ``additional_kwargs`` ``tool_calls`` and the legacy single ``function_call``), each once."""
    found: list[tuple[str, str, str]] = []
    for block in message.blocks:
        if isinstance(block, ToolCallBlock):
            found.append((str(block.tool_call_id or ""), str(block.tool_name), _arguments(block.tool_kwargs)))
    legacy = message.additional_kwargs.get("function_call")
    for raw in [*(message.additional_kwargs.get("tool_calls") or ()), *([legacy] if legacy else [])]:
        function = _field(raw, "function")
        name = _field(function, "name") if function is not None else _field(raw, "name")
        arguments = _field(function, "arguments") if function is not None else _field(raw, "arguments")
        if name or arguments:  # a call without a name still carries its arguments to the model
            found.append((str(_field(raw, "id") or ""), str(name or ""), _arguments(arguments)))
    return list(dict.fromkeys(found))


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
