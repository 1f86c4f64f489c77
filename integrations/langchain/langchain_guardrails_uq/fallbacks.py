"""fallback_on_escalate: an escalation falls back to a larger model; an abstain never does.

With ``GuardrailsCallbackHandler(guard, raise_error=True)`` (or ``input_guard``, or a ConformalRetriever, by
default) a blocked run raises AbstainViolation (the policy abstained, or a check failed and
on_error failed closed) or EscalateViolation (the policy escalated). Only the second may be answered by
another model: ``with_fallbacks(..., exceptions_to_handle=(GuardrailViolation,))`` would hand a refused
request (say, how to build a bomb) to the fallback model, which answers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda

from guardrails_uq import AbstainViolation, Decision, EscalateViolation

from ._convert import decision_metadata

In = TypeVar("In")
Out = TypeVar("Out")


def _policy_message(decision: Decision) -> AIMessage:
    """The policy's answer to an abstain, shaped like a GuardedChatModel's (Decision in response_metadata)."""
    return AIMessage(content=decision.message or "", response_metadata=decision_metadata(decision))


def fallback_on_escalate(
    runnable: Runnable[In, Out], fallbacks: Runnable[In, Any] | Sequence[Runnable[In, Any]]
) -> Runnable[In, Out | AIMessage]:
    """``runnable`` with ``fallbacks`` tried on EscalateViolation only; an AbstainViolation becomes an
    AIMessage holding the policy's message (the Decision in ``response_metadata["guardrails"]``), and no
    fallback is called.

    Wrap the guarded chat model (or a chain ending in it): the abstain answer is an AIMessage. Anything else
    propagates, including an EscalateViolation the fallbacks raised themselves (nobody left to answer).
    ``stream`` yields the whole answer as one chunk: a callback handler sees the output only when the model
    has finished, so passing the model's chunks through would show text the policy has not checked yet.
    """
    chain = runnable.with_fallbacks(
        [fallbacks] if isinstance(fallbacks, Runnable) else list(fallbacks),
        exceptions_to_handle=(EscalateViolation,),
    )

    def answer(value: In, config: RunnableConfig) -> Out | AIMessage:
        try:
            return chain.invoke(value, config)
        except AbstainViolation as violation:
            return _policy_message(violation.decision)

    async def aanswer(value: In, config: RunnableConfig) -> Out | AIMessage:
        try:
            return await chain.ainvoke(value, config)
        except AbstainViolation as violation:
            return _policy_message(violation.decision)

    return RunnableLambda(answer, afunc=aanswer, name="fallback_on_escalate")
