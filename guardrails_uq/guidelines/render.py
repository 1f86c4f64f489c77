"""Rendering retrieved guidelines into the prompt (Guide-Align's format)."""

from __future__ import annotations

from collections.abc import Sequence

from ..call import Message
from .index import Retrieved

HEADER = "Here are some guidelines for the assistant to follow:"


def guideline_text(retrieved: Sequence[Retrieved]) -> str:
    """The guideline block: the header, then one numbered "title: text" per guideline."""
    lines = [HEADER]
    lines += [f"{i}. {r.guideline.title}: {r.guideline.text}" for i, r in enumerate(retrieved, start=1)]
    return "\n".join(lines)


def render_messages(messages: Sequence[Message], retrieved: Sequence[Retrieved]) -> list[Message]:
    """Chat models: the guidelines go in a system message before the user turn (first in the conversation,
    where chat templates expect it), merged into an existing system message (appended after its text) when
    there is one. No guidelines: messages unchanged."""
    messages = list(messages)
    if not retrieved:
        return messages
    block = guideline_text(retrieved)
    for i, message in enumerate(messages):
        if message.role == "system":
            merged = Message(
                role="system", content=f"{message.content}\n\n{block}" if message.content.strip() else block
            )
            return [*messages[:i], merged, *messages[i + 1 :]]
    return [Message(role="system", content=block), *messages]  # first: chat templates expect system first


def render_prompt(prompt: str, retrieved: Sequence[Retrieved]) -> str:
    """Completion models: the guideline block, a blank line, then the prompt."""
    return f"{guideline_text(retrieved)}\n\n{prompt}" if retrieved else prompt
