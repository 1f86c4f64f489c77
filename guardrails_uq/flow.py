"""The guarded chat flow, written once for every framework and for both sync and async callers.

:func:`guarded_chat` is a generator that *describes* the steps of one guarded model call (input phase,
the model, output phase, escalation) without performing any I/O: it yields a step and receives the step's
result. :func:`run` performs the steps synchronously, :func:`arun` asynchronously (guard work in a worker
thread, the model awaited). Integrations supply only the two model callables.

    messages ─▶ Guard.before ─(blocked)──────────────────────────────▶ policy message
                     │ (allowed; guidelines injected)
                     ▼
                  model(prompt) ─▶ Guard.after ─ allow ─────────────▶ the model's answer
                                        ├─ abstain ─────────────────▶ policy message
                                        └─ escalate ─▶ escalation ──▶ the larger model's answer
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from .call import Generation, Message
from .decision import Action, Decision
from .errors import InputError
from .guard import Guard


@dataclass(frozen=True)
class GuardStep:
    """Call ``fn(*args, **kwargs)`` on the Guard (CPU work: run it off the event loop when async)."""

    fn: Callable[..., Decision]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class ModelStep:
    """Call the app's model on ``messages`` (``context``: the input phase's Decision). The driver's model
    callable receives this step and returns a :class:`Generation`, or a :class:`ModelResult` when the call
    made decisions of its own (a retrieval phase inside a query engine) that the output phase must see, or
    the :class:`~guardrails_uq.errors.InputError` that says why the model's output cannot be read (a content
    block the guard cannot read): the output phase then decides ``on_error`` (``guard.failure``)."""

    messages: list[Message]
    context: Decision


@dataclass(frozen=True)
class ModelResult:
    """A model step's generation plus the Decision to carry into the output phase (instead of the input's)."""

    generation: Generation
    context: Decision | None = None


@dataclass(frozen=True)
class EscalateStep:
    """Run the escalation target on ``messages``; the result must be a Generation (or str)."""

    messages: list[Message]


@dataclass(frozen=True)
class Outcome:
    """What the user gets: ``text``, the final Decision, and the model's own generation when it ran."""

    text: str
    decision: Decision
    generation: Generation | None = None

    @property
    def blocked(self) -> bool:
        """True when the text is the policy's message instead of a model's answer."""
        return self.decision.action is Action.ABSTAIN or (
            self.decision.action is not Action.ALLOW and self.decision.answer is None
        )


Flow = Generator[GuardStep | ModelStep | EscalateStep, Any, Outcome]


def guarded_chat(guard: Guard, messages: Sequence[Message], *, can_escalate: bool) -> Flow:
    """The steps of one guarded chat call. ``can_escalate``: the caller has an escalation model of its own
    (otherwise the Guard's policy target is used, if any)."""
    messages = list(messages)
    before: Decision = yield GuardStep(guard.before, (messages,), {})
    if before.final and before.action is not Action.ALLOW:
        if before.action is Action.ESCALATE:
            return (yield from _escalate(guard, messages, before, None, can_escalate))
        return Outcome(text=before.message or "", decision=before)
    prompt = before.messages if before.messages is not None else messages
    produced: Generation | ModelResult | InputError = yield ModelStep(prompt, before)
    context = before
    if isinstance(produced, InputError):
        failed: Decision = yield GuardStep(guard.failure, ("output", "response", produced), {"context": before})
        return (yield from _decided(guard, prompt, failed, None, can_escalate))
    if isinstance(produced, ModelResult):
        generation, context = produced.generation, produced.context or before
    else:
        generation = produced
    after: Decision = yield GuardStep(guard.after, (generation,), {"messages": prompt, "context": context})
    return (yield from _decided(guard, prompt, after, generation, can_escalate))


def _decided(
    guard: Guard, prompt: list[Message], after: Decision, generation: Generation | None, can_escalate: bool
) -> Flow:
    """The outcome of the output phase's Decision (or of the on_error Decision when the output was unreadable,
    ``generation`` None: then even an allow shows no model text)."""
    if after.action is Action.ESCALATE:
        return (yield from _escalate(guard, prompt, after, generation, can_escalate))
    if after.action is Action.ABSTAIN or generation is None:
        return Outcome(text=after.message or "", decision=after, generation=generation)
    return Outcome(text=generation.text, decision=after, generation=generation)


def _escalate(
    guard: Guard, messages: list[Message], decision: Decision, generation: Generation | None, can_escalate: bool
) -> Flow:
    answer: Generation | Exception | None = None
    if can_escalate:
        answer = yield EscalateStep(messages)  # the driver returns the model's exception instead of raising it
    target = None
    if isinstance(answer, Exception):
        failure = answer

        def target(_messages: list[Message]) -> Generation:
            raise failure

    elif answer is not None:
        target = lambda _messages: answer  # noqa: E731
    original = generation.text if generation is not None else None
    escalated: Decision = yield GuardStep(
        guard.escalate, (messages, decision), {"original": original, "target": target}
    )
    text = escalated.answer if escalated.answer is not None else (escalated.message or "")
    return Outcome(text=text, decision=escalated, generation=generation)


def run(
    flow: Flow,
    model: Callable[[ModelStep], Generation | ModelResult | InputError],
    escalate: Callable[[list[Message]], Generation] | None = None,
) -> Outcome:
    """Perform a flow synchronously."""
    result: Any = None
    try:
        while True:
            step = flow.send(result)
            if isinstance(step, GuardStep):
                result = step.fn(*step.args, **step.kwargs)
            elif isinstance(step, ModelStep):
                result = model(step)
            else:
                try:
                    result = escalate(step.messages) if escalate is not None else None
                except Exception as exc:  # recorded by Guard.escalate, which applies on_error
                    result = exc
    except StopIteration as done:
        return done.value


async def arun(
    flow: Flow,
    model: Callable[[ModelStep], Awaitable[Generation | ModelResult | InputError]],
    escalate: Callable[[list[Message]], Awaitable[Generation]] | None = None,
) -> Outcome:
    """Perform a flow asynchronously: Guard steps in a worker thread, model calls awaited."""
    result: Any = None
    try:
        while True:
            step = flow.send(result)
            if isinstance(step, GuardStep):
                result = await asyncio.to_thread(step.fn, *step.args, **step.kwargs)
            elif isinstance(step, ModelStep):
                result = await model(step)
            else:
                try:
                    result = await escalate(step.messages) if escalate is not None else None
                except Exception as exc:  # recorded by Guard.escalate, which applies on_error
                    result = exc
    except StopIteration as done:
        return done.value
