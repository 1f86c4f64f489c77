"""input_guard: the policy's input phase as an explicit first step of a chain.

Optional: a ConformalRetriever runs the input phase itself before retrieving, and a GuardedChatModel before
calling its model. ``input_guard`` is for chains that do other work first (a tool, a query rewriter, an
unguarded retriever) and should refuse a harmful request before any of it runs. Its Decision is the input
phase of the chain's request: the guarded components after it reuse it instead of checking (and logging)
the same question again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableConfig, RunnableLambda

from guardrails_uq import Guard, Message

from ._convert import text_of, user_text
from ._phases import RequestPhases, blocked
from ._requests import ensure_tracking, request_of


def _text(value: Any, key: str | None) -> str:
    """The user's text in a chain's input: ``value[key]``; a string; the last human message of a message
    list or prompt value; a message's text."""
    if key is not None:
        if not isinstance(value, Mapping) or key not in value:
            raise TypeError(f"input_guard(key={key!r}) needs a mapping with that key, got {type(value).__name__}")
        value = value[key]
    if isinstance(value, str):
        return value
    if isinstance(value, PromptValue):
        return user_text(value.to_messages())
    if isinstance(value, BaseMessage):
        return text_of(value)
    if isinstance(value, Sequence) and value and all(isinstance(m, BaseMessage) for m in value):
        return user_text(value)
    if isinstance(value, Mapping):
        raise TypeError(
            f"input_guard got a mapping with keys {sorted(map(str, value))}: pass key= naming the user's text"
        )
    raise TypeError(f"input_guard cannot find the user's text in a {type(value).__name__}: pass key=")


def input_guard(guard: Guard, *, key: str | None = None) -> RunnableLambda:
    """A runnable that runs the input phase on the user's text and raises AbstainViolation (abstain, or
    on_error failing closed) or EscalateViolation (escalate) when a rule decides; otherwise it passes the
    input through unchanged. The text is ``input[key]`` when ``key`` is given, else the input itself (a
    string, a message, a list of messages or a prompt value: the last human message); a mapping without
    ``key`` is a TypeError, never its ``str()``. Wrap the chain in :func:`fallback_on_escalate` to turn an
    abstain into the policy's message."""
    ensure_tracking()

    def check(value: Any, config: RunnableConfig) -> Any:
        manager = config.get("callbacks")
        phases = RequestPhases(guard, request_of(getattr(manager, "parent_run_id", None)))
        decision = phases.before([Message(role="user", content=_text(value, key))])
        if blocked(decision):
            raise phases.violation(decision)
        return value

    async def acheck(value: Any, config: RunnableConfig) -> Any:
        return await asyncio.to_thread(check, value, config)

    return RunnableLambda(check, afunc=acheck, name="guardrails_input")
