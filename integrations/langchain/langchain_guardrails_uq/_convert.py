"""Conversions between LangChain objects and guardrails-uq's framework-free data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage

from guardrails_uq import Generation, Message, TokenLogprob
from guardrails_uq.models.logprobs import from_langchain

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


def generation_of(message: Any) -> Generation:
    """A guardrails-uq Generation from a LangChain AI message."""
    return Generation(text=text_of(message), tokens=tokens_of(message))
