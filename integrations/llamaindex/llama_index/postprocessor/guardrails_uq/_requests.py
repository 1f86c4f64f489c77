"""One agent run, one request: the Decisions of every model call and tool result of a workflow run.

A FunctionAgent or AgentWorkflow calls its LLM several times per run (once per step, across agents after a
handoff). GuardedLLM keys its per-request state by the run's id, so every Decision of the run carries
``request_id == handler.run_id`` and every phase continues from the one before it (its signals, and an
earlier abstain or escalate as the run's verdict). Outside a workflow run each model call is a request of
its own.

The registry keeps the most recent runs only (:data:`KEPT`): it is for reading a run's verdict right after
it ends, not a log (the audit log is).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from guardrails_uq import Decision, ScoredDocument
from guardrails_uq.audit import RequestRecord
from guardrails_uq.decision import new_id

KEPT = 1024
"""Runs whose state the registry keeps (least recently used are dropped first)."""


@dataclass
class AgentRequest:
    """The guard's state for one request: its Decisions in order, the input phase's result (the injected
    guideline text, the user's question), the tool results taken as evidence so far, and which tool each
    allowed tool call named, and the tool definitions the input phase has read (an agent taking over after a
    handoff brings its own), and the user and system messages it has read (a message new mid-run is read
    again: a ReAct agent's tool observations come back as user messages)."""

    request_id: str
    decisions: list[Decision] = field(default_factory=list)
    input: Decision | None = None
    question: str = ""
    guidelines: str | None = None
    retrieval: Decision | None = None
    evidence: dict[str, ScoredDocument] = field(default_factory=dict)
    seen_tool_results: set[str] = field(default_factory=set)
    tool_names: dict[str, str] = field(default_factory=dict)
    tools_read: set[str] = field(default_factory=set)
    read_turns: set[str] = field(default_factory=set)

    @property
    def latest(self) -> Decision | None:
        """The Decision the next phase continues from."""
        return self.decisions[-1] if self.decisions else None

    def record(self) -> RequestRecord:
        """The request as the audit log groups it (``verdict``: what the user got)."""
        return RequestRecord(self.request_id, list(self.decisions))


_runs: OrderedDict[str, AgentRequest] = OrderedDict()
_runs_lock = threading.Lock()


def current_run_id() -> str | None:
    """The id of the workflow run this code runs in (None outside a run)."""
    try:
        from workflows.plugins.basic import get_current_run_id

        run_id = get_current_run_id()
    except ImportError:  # another workflows runtime: the instrumentation tags name the run too
        run_id = None
    if run_id is None:
        from llama_index_instrumentation.dispatcher import active_instrument_tags

        tag = active_instrument_tags.get().get("llamaindex.run_id")
        run_id = tag if isinstance(tag, str) else None
    return run_id


def request_for_call() -> AgentRequest:
    """The request a model call belongs to: its workflow run's (created on first use), else a new one."""
    run_id = current_run_id()
    if run_id is None:
        return AgentRequest(new_id())
    with _runs_lock:
        request = _runs.get(run_id)
        if request is None:
            request = _runs[run_id] = AgentRequest(run_id)
            while len(_runs) > KEPT:
                _runs.popitem(last=False)
        else:
            _runs.move_to_end(run_id)
        return request


def lookup(run_id: str) -> AgentRequest | None:
    """The state of a recent workflow run, or None."""
    with _runs_lock:
        return _runs.get(run_id)
