"""Conversions between LangChain objects and guardrails-uq's framework-free data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage

from guardrails_uq import Decision, Generation, Message, TokenLogprob
from guardrails_uq.models.logprobs import from_langchain


def decision_metadata(decision: Decision) -> dict[str, Any]:
    """``{"guardrails": <the client view of the Decision, with signals>}``, for a message's
    ``response_metadata`` (:meth:`Decision.client_view`: never the blocked text or the evidence)."""
    return {"guardrails": decision.client_view(with_signals=True)}


#: How the guideline block that the input phase injects begins (guardrails_uq.guidelines.render.HEADER).
GUIDELINES_HEADER = "Here are some guidelines for the assistant to follow:"

_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "tool": "tool",
}


def text_of(message: Any) -> str:
    """The text of a message or chunk whose content is a string or a list of content blocks."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def to_core(messages: Sequence[BaseMessage]) -> list[Message]:
    """LangChain messages -> guardrails-uq Messages (roles: system, user, assistant, tool)."""
    out = []
    for message in messages:
        role = message.role if isinstance(message, ChatMessage) else message.type
        out.append(Message(role=_ROLES.get(role, "user"), content=text_of(message)))  # type: ignore[arg-type]
    return out


def to_langchain(messages: Sequence[Message]) -> list[BaseMessage]:
    """guardrails-uq Messages -> LangChain messages."""
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    out: list[BaseMessage] = []
    for message in messages:
        if message.role == "tool":
            out.append(ToolMessage(content=message.content, tool_call_id="guardrails"))
        else:
            out.append(kinds[message.role](content=message.content))
    return out


def tokens_of(message: Any) -> list[TokenLogprob] | None:
    """Token logprobs a LangChain message (or chunk) carries in response_metadata["logprobs"], if any."""
    metadata = getattr(message, "response_metadata", None) or {}
    return from_langchain(metadata)


def tool_calls_text(message: Any) -> str:
    """The tool calls an AI message makes, one ``name(arguments as JSON)`` a line ("" when none)."""
    lines = []
    for call in getattr(message, "tool_calls", None) or []:
        lines.append(f"{call.get('name')}({json.dumps(call.get('args', {}), ensure_ascii=False, sort_keys=True)})")
    for call in getattr(message, "invalid_tool_calls", None) or []:
        lines.append(f"{call.get('name')}({call.get('args') or ''})")
    return "\n".join(lines)


def generation_of(message: Any) -> Generation:
    """A guardrails-uq Generation from a LangChain AI message: its text plus, when it calls tools, each call's
    name and arguments (the output phase checks everything the model produced; token logprobs then cover only
    part of the text, so they are left out)."""
    calls = tool_calls_text(message)
    if calls:
        text = text_of(message)
        return Generation(text=f"{text}\n{calls}" if text else calls, kind="tool_call")
    return Generation(text=text_of(message), tokens=tokens_of(message))


def user_text(messages: Sequence[Any]) -> str:
    """The text of the last user (human) message, "" when there is none."""
    for message in reversed(messages):
        role = message.role if isinstance(message, ChatMessage) else getattr(message, "type", None)
        if role in ("human", "user"):
            return text_of(message)
    return ""


def guideline_block(decision: Decision | None) -> str | None:
    """The guideline block an input-phase Decision injected into its prompt (None when it injected none)."""
    for message in (decision.messages or []) if decision is not None else []:
        if message.role == "system" and GUIDELINES_HEADER in message.content:
            return message.content[message.content.index(GUIDELINES_HEADER) :]
    return None


def with_guidelines(system: str | None, block: str | None) -> str | None:
    """A system prompt with the guideline block appended (as the input phase renders it)."""
    if not block or (system and block in system):
        return system
    return f"{system}\n\n{block}" if system and system.strip() else block
