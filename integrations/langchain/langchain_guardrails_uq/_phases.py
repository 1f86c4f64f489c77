"""A Guard's phases bound to one request: each phase reads what the request decided so far, carries the
request's id, and is remembered for the phases after it.

* A phase after a block repeats the block (one request, one verdict) without running its checks.
* The input phase runs once per user text: a later component of the same request (the model after a
  retriever or ``input_guard`` checked the question) reuses that Decision, with its guidelines injected into
  its own prompt, instead of running and logging the phase again.
* The Decision a component returns carries the signals of every earlier phase of the request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from guardrails_uq import (
    Action,
    Decision,
    Generation,
    Guard,
    GuardrailViolation,
    Message,
    ScoredDocument,
    violation_for,
)
from guardrails_uq.errors import InputError
from guardrails_uq.types import Phase

from ._convert import guideline_block, with_guidelines
from ._requests import Request


def _user_input(messages: Sequence[Message]) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


def render(messages: Sequence[Message], block: str | None) -> list[Message]:
    """Core messages with a guideline block merged into the first system message (or a new one first)."""
    messages = list(messages)
    if not block:
        return messages
    for i, message in enumerate(messages):
        if message.role == "system":
            merged = Message(role="system", content=with_guidelines(message.content, block) or "")
            return [*messages[:i], merged, *messages[i + 1 :]]
    return [Message(role="system", content=block), *messages]


def blocked(decision: Decision | None) -> bool:
    """True for a Decision that ends the request (final, not allow)."""
    return decision is not None and decision.final and decision.action is not Action.ALLOW


class RequestPhases:
    """``guard``'s phases within ``request`` (see the module docstring). Duck-types the parts of Guard that
    :func:`guardrails_uq.flow.guarded_chat` calls (before, after, escalate)."""

    def __init__(self, guard: Guard, request: Request) -> None:
        self.guard = guard
        self.request = request
        self.policy = guard.policy.name
        self.made: list[Decision] = []  # the Decisions this object's phases made (not reused or repeated ones)

    @property
    def request_id(self) -> str:
        return self.request.id

    def verdict(self) -> Decision | None:
        """The Decision that ended this request, if one did (from any component of the request)."""
        return self.request.verdict()

    def context(self) -> Decision | None:
        """The verdict, or the latest Decision of this policy with every earlier phase's signals."""
        return self.verdict() or self.request.context(self.policy)

    def before(self, messages: Sequence[Message], **kwargs: Any) -> Decision:
        """Input phase (or the verdict, or the reused input Decision for the same user text). The returned
        Decision's ``messages`` is the prompt to send (guidelines injected)."""
        verdict = self.verdict()
        if verdict is not None:
            return verdict
        prior = self.request.input_for(_user_input(messages), self.policy)
        context = self.context()
        if prior is not None and context is not None:
            return context.model_copy(update={"messages": render(messages, guideline_block(prior))})
        return self._record(self.guard.before(messages, context=context, request_id=self.request_id, **kwargs))

    def retrieve(self, query: str, documents: Sequence[ScoredDocument], **kwargs: Any) -> Decision:
        """Retrieval phase (or the verdict)."""
        context = self.context()
        return self._record(
            self.guard.retrieve(query, documents, context=context, request_id=self.request_id, **kwargs)
        )

    def after(self, generation: Generation | str, *, context: Decision | None = None, **kwargs: Any) -> Decision:
        """Output phase; ``context`` defaults to the request's."""
        context = context if context is not None else self.context()
        decision = self.guard.after(generation, context=context, request_id=self.request_id, **kwargs)
        return self._record(decision) if kwargs.get("record", True) else decision

    def tool(self, name: str, arguments: Any, **kwargs: Any) -> Decision:
        """Tool phase on one tool call, reading the request's context (its verdict when a phase blocked it).
        Logged, but not remembered as the request's context or verdict: an abstained tool call does not end
        the request (the model reads the policy message as the tool's result)."""
        decision = self.guard.tool(name, arguments, context=self.context(), request_id=self.request_id, **kwargs)
        self.made.append(decision)
        return decision

    def approve_tool(self, decision: Decision, **kwargs: Any) -> Decision:
        """Guard.approve_tool (the escalation target approves or denies; none: the call waits for review)."""
        approval = self.guard.approve_tool(decision, **kwargs)
        self.made.append(approval)
        return approval

    def failure(
        self, phase: Phase, where: str, error: BaseException | str, *, context: Decision | None = None
    ) -> Decision:
        """:meth:`Guard.failure` within the request: the ``on_error`` Decision for something that could not be
        checked, carrying the request's id and signals; logged and remembered."""
        context = context if context is not None else self.context()
        return self._record(self.guard.failure(phase, where, error, context=context, request_id=self.request_id))

    def after_read(self, read: Callable[[], Generation], **kwargs: Any) -> Decision:
        """Output phase on ``read()`` (e.g. :func:`~._convert.generation_of` of a message: everything a client
        reads in it); the ``on_error`` Decision when it cannot be read (InputError: a block the guard cannot
        read). ``kwargs`` as for :meth:`after`."""
        try:
            generation = read()
        except InputError as exc:
            return self.failure("output", "response", exc, context=kwargs.get("context"))
        return self.after(generation, **kwargs)

    def escalate(self, messages: Sequence[Message], decision: Decision, **kwargs: Any) -> Decision:
        """Guard.escalate (its answer passes the output phase there)."""
        return self._record(self.guard.escalate(messages, decision, **kwargs))

    def record(self, decision: Decision) -> Decision:
        """Remember a Decision made elsewhere (a StreamGate's) for this request."""
        return self._record(decision)

    def violation(self, decision: Decision) -> GuardrailViolation:
        """The exception that stops the chain for a blocked Decision; an escalation raised this way is handed
        off (the fallback that answers it runs its own phases in this request)."""
        if decision.action is Action.ESCALATE:
            self.request.hand_off(decision)
        return violation_for(decision)

    def _record(self, decision: Decision) -> Decision:
        self.made.append(decision)
        return self.request.record(decision)
