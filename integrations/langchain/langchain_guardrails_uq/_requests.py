"""One request, one id, one verdict: the phases that guarded components run inside one LangChain run share state.

A *request* is one top-level LangChain run: ``chain.invoke(question)``, one input of ``chain.batch``, one
``agent.invoke``. Its id is the root run's id (hex), so every phase Decision of the request carries the id
LangSmith and every other tracer show for that run. Components find their request from their own run id:

    chain run (root, id R) ─▶ ConformalRetriever run ─▶ request R: input, retrieval Decisions
                           └▶ GuardedChatModel run    ─▶ request R: output Decision, with their signals

To know the root of any run, :func:`ensure_tracking` registers :class:`RunTracker` once per process through
``langchain_core.tracers.context.register_configure_hook`` (the mechanism LangChain's own tracers use): a
callback handler, added to every top-level run and inherited by its children, that records each run's root
while it runs and forgets the run (and the request's state) when the root ends. It is called from the
constructors of this package's components, never on import. Both maps are bounded (oldest dropped first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from langchain_core.callbacks import BaseCallbackHandler

from guardrails_uq import Action, Decision

_MAX_RUNS = 200_000
_MAX_REQUESTS = 20_000


@dataclass
class Request:
    """The Decisions one request has made so far. Thread-safe (a chain runs its branches in threads)."""

    id: str
    decisions: list[Decision] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set, repr=False)
    _handed_off: set[str] = field(default_factory=set, repr=False)
    withheld: set[str] = field(default_factory=set)  # tool results the retrieval phase dropped (agent middleware)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def unseen(self, keys: list[str]) -> list[str]:
        """The keys not passed to this method before in this request (e.g. tool results already assessed)."""
        with self._lock:
            new = [k for k in keys if k not in self._seen]
            self._seen.update(new)
            return new

    def record(self, decision: Decision) -> Decision:
        """Remember a Decision of this request; returns it."""
        with self._lock:
            self.decisions.append(decision)
        return decision

    def hand_off(self, decision: Decision) -> None:
        """An escalation was raised to the caller (EscalateViolation): the fallback that answers it is part of
        this request and runs its phases normally, reading the escalation's signals."""
        with self._lock:
            self._handed_off.add(decision.id)

    def verdict(self) -> Decision | None:
        """The first final non-allow Decision (the request's verdict once a phase blocked it) that was not
        handed off to a fallback, else None."""
        with self._lock:
            return next(
                (
                    d
                    for d in self.decisions
                    if d.final and d.action is not Action.ALLOW and d.id not in self._handed_off
                ),
                None,
            )

    def context(self, policy: str) -> Decision | None:
        """What the next phase of ``policy`` reads: the verdict when a phase blocked the request; otherwise
        the latest Decision of that policy with the signals and evidence of every earlier one (branches of a
        chain that ran in parallel each contribute theirs); None before any phase ran."""
        blocked = self.verdict()
        if blocked is not None:
            return blocked
        with self._lock:
            mine = [d for d in self.decisions if d.policy == policy]
        if not mine:
            return None
        signals: dict[str, Any] = {}
        evidence: dict[str, Any] = {}
        for decision in mine:
            signals.update(decision.signals)
            evidence.update(decision.evidence)
        # final=False: a context to read; only the verdict above is repeated by later phases
        return mine[-1].model_copy(update={"signals": signals, "evidence": evidence, "final": False})

    def input_for(self, text: str, policy: str) -> Decision | None:
        """The input-phase Decision ``policy`` made in this request for the user text ``text`` (reused by a
        later component instead of running and logging the phase again)."""
        with self._lock:
            return next(
                (
                    d
                    for d in self.decisions
                    if d.phase == "input" and d.policy == policy and d.metadata.get("request") == text
                ),
                None,
            )


class RunTracker(BaseCallbackHandler):
    """Records the root of every LangChain run while it runs, and the request state of each root."""

    run_inline = True  # called in the run's own thread/task, before the run's body starts
    raise_error = False

    def __init__(self) -> None:
        self._roots: OrderedDict[UUID, UUID] = OrderedDict()
        self._members: dict[UUID, list[UUID]] = {}
        self._requests: OrderedDict[UUID, Request] = OrderedDict()
        self._lock = threading.Lock()

    # -- queries ------------------------------------------------------------------------------------------

    def root(self, run_id: UUID) -> UUID:
        """The root of ``run_id`` (itself when unknown or top-level)."""
        with self._lock:
            return self._roots.get(run_id, run_id)

    def request(self, run_id: UUID | None) -> Request:
        """The request ``run_id`` belongs to (a fresh, untracked one without a run id)."""
        if run_id is None:
            return Request(id=uuid4().hex)
        with self._lock:
            root = self._roots.get(run_id, run_id)
            request = self._requests.get(root)
            if request is None:
                request = self._requests[root] = Request(id=root.hex)
                while len(self._requests) > _MAX_REQUESTS:
                    self._requests.popitem(last=False)
            return request

    # -- bookkeeping --------------------------------------------------------------------------------------

    def _start(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        with self._lock:
            root = run_id if parent_run_id is None else self._roots.get(parent_run_id, parent_run_id)
            self._roots[run_id] = root
            self._members.setdefault(root, []).append(run_id)
            while len(self._roots) > _MAX_RUNS:
                old, old_root = self._roots.popitem(last=False)
                if old == old_root:
                    self._members.pop(old, None)

    def _end(self, run_id: UUID) -> None:
        with self._lock:
            if self._roots.get(run_id) != run_id:
                return  # a child: forgotten with its root
            for member in self._members.pop(run_id, []):
                self._roots.pop(member, None)
            self._requests.pop(run_id, None)

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._start(run_id, parent_run_id)

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._start(run_id, parent_run_id)

    def on_llm_start(
        self, serialized: Any, prompts: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._start(run_id, parent_run_id)

    def on_retriever_start(
        self, serialized: Any, query: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._start(run_id, parent_run_id)

    def on_tool_start(
        self, serialized: Any, input_str: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._start(run_id, parent_run_id)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._end(run_id)


_tracker: RunTracker | None = None
_install_lock = threading.Lock()


def ensure_tracking() -> RunTracker:
    """The process's RunTracker, registered with LangChain on first call (idempotent, thread-safe)."""
    global _tracker
    with _install_lock:
        if _tracker is None:
            from langchain_core.tracers.context import register_configure_hook

            tracker = RunTracker()
            # a default value (not var.set) so that every thread and task sees the tracker
            register_configure_hook(ContextVar("guardrails_uq_run_tracker", default=tracker), True)
            _tracker = tracker
        return _tracker


def request_of(run_id: UUID | None) -> Request:
    """The request a run belongs to (see the module docstring)."""
    return ensure_tracking().request(run_id)


def current_run_id() -> UUID | None:
    """The id of the run whose body is executing in this context (from LangChain's child config), if any."""
    from langchain_core.runnables.config import var_child_runnable_config

    config = var_child_runnable_config.get()
    manager = (config or {}).get("callbacks")
    return getattr(manager, "parent_run_id", None)
