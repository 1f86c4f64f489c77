"""InputGuard: the policy's input phase as the first step of a chain (before retrieval)."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableLambda

from guardrails_uq import Action, Guard, Message, violation_for


def input_guard(guard: Guard, *, key: str | None = None) -> RunnableLambda:
    """A runnable that runs the input phase on the chain's input (a string, or ``input[key]``) and raises
    AbstainViolation (abstain, or on_error failing closed) or EscalateViolation (escalate) when a rule
    decides; otherwise it passes the input through unchanged. Put it first in a RAG chain so a harmful
    request is refused before anything is retrieved; wrap the chain in :func:`fallback_on_escalate` to turn
    the abstain into the policy's message."""

    def check(value: Any) -> Any:
        text = value[key] if key is not None else value
        decision = guard.before([Message(role="user", content=str(text))])
        if decision.final and decision.action is not Action.ALLOW:
            raise violation_for(decision)
        return value

    async def acheck(value: Any) -> Any:
        text = value[key] if key is not None else value
        decision = await guard.abefore([Message(role="user", content=str(text))])
        if decision.final and decision.action is not Action.ALLOW:
            raise violation_for(decision)
        return value

    return RunnableLambda(check, afunc=acheck, name="guardrails_input")
