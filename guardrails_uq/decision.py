"""The outcome of a Guard phase: action, the rule that decided, every signal, evidence, errors, timings.

A Decision is plain data: ``Decision.model_validate_json(d.model_dump_json()) == d``. Its field names are
the audit log's format; change them only with a new ``format`` version.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from .call import Message, ScoredDocument
from .types import Evidence, Phase, SignalMap


class Action(StrEnum):
    """What the policy decided."""

    ALLOW = "allow"
    ABSTAIN = "abstain"
    ESCALATE = "escalate"


class CheckFailure(BaseModel):
    """A check that raised: which, in which phase, and the error text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    check: str
    phase: Phase
    error: str
    type: str


class Shadow(BaseModel):
    """What shadow mode would have done in a phase, had it been enforced (see the README's "Shadow mode"):
    ``action``, the shadow ``rule`` that would have decided (None: the policy's default or on_error), the
    values it read, and ``error``: why on_error would have decided (a failed check or shadow rule), else None."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action
    rule: str | None = None
    inputs: SignalMap = Field(default_factory=dict)
    error: str | None = None

    @property
    def label(self) -> str:
        """The rule, or (on_error), or (default): the key ``audit stats`` counts it under."""
        return self.rule or ("(on_error)" if self.error is not None else "(default)")


#: Fields of :meth:`Decision.client_view` (besides ``errors``, shown without their text).
CLIENT_FIELDS = frozenset(
    {"format", "id", "request_id", "time", "policy", "phase", "action", "final", "rule", "message", "answer"}
)


def new_id() -> str:
    """A fresh random Decision id (hex)."""
    return uuid.uuid4().hex


class Decision(BaseModel):
    """The result of one phase (or of a whole call) under a policy.

    ``final`` is False for the provisional allow of an input or retrieval phase where no rule matched (the
    call goes on to the next phase), and for every ``tool`` phase Decision (it decides one tool call, not the
    request). ``rule`` is None when the policy's default (or on_error) decided. ``inputs`` holds the signal values the
    deciding rule read. ``messages`` is the prompt after guideline injection (input phase);
    ``documents`` the chunks kept (retrieval phase); ``generated`` the model's answer the output phase
    checked; ``answer`` the text returned to the user when the policy replaced or escalated it. ``shadow``
    holds what shadow rules (or a ``mode: shadow`` policy) would have done instead (absent from the record when
    nothing was shadowed, so logs without shadow rules are unchanged).
    ``request_id`` ties together every phase's Decision of one request (a later phase inherits it from the
    Decision passed as its ``context``); ``id`` names this one Decision.
    """

    model_config = ConfigDict(extra="forbid")

    format: int = 1
    id: str = Field(default_factory=new_id)
    request_id: str = Field(default_factory=new_id)
    time: float = Field(default_factory=time.time)
    policy: str
    phase: Phase
    action: Action
    final: bool = True
    rule: str | None = None
    message: str | None = None
    inputs: SignalMap = Field(default_factory=dict)
    signals: SignalMap = Field(default_factory=dict)
    evidence: dict[str, Evidence] = Field(default_factory=dict)
    errors: list[CheckFailure] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    messages: list[Message] | None = None
    documents: list[ScoredDocument] | None = None
    generated: str | None = None
    answer: str | None = None
    metadata: dict[str, object] = Field(default_factory=dict)
    shadow: Shadow | None = Field(default=None, exclude_if=lambda value: value is None)

    def client_view(self, *, with_signals: bool = False) -> dict[str, object]:
        """What an end user's client may be shown (the proxy's ``guardrails`` field, an integration's message
        metadata): the verdict and who made it, errors as check/phase/type only. Never the blocked answer
        (``generated``), the evidence (copied spans, the escalated-from answer), the injected prompt or the
        retrieved chunks: a refusal that carried the refused text would be no refusal. ``with_signals`` adds
        the signal values and timings (for the app's own code; a proxy keeps them from clients, who could
        tune an evasion on them; so does ``shadow``, what a rule under trial would have done). The audit log keeps
        the whole Decision under the same ``id``."""
        fields = CLIENT_FIELDS | ({"inputs", "signals", "timings_ms", "shadow"} if with_signals else set())
        view: dict[str, object] = self.model_dump(mode="json", include=set(fields))
        view["errors"] = [{"check": e.check, "phase": e.phase, "type": e.type} for e in self.errors]
        return view

    @property
    def allowed(self) -> bool:
        """True when the action is allow."""
        return self.action is Action.ALLOW

    @property
    def rule_label(self) -> str:
        """The deciding rule, or (on_error), (default), or (pass) for a provisional allow."""
        if self.rule:
            return self.rule
        if self.errors:
            return "(on_error)"
        return "(default)" if self.final else "(pass)"

    def explain(self) -> str:
        """A short human-readable account: action, deciding rule, the values it read, what the checks it read
        say about them (their evidence's ``explain`` lines, e.g. the failing claim), errors."""
        lines = [f"{self.action.value.upper()} at {self.phase} ({self.policy})"]
        lines.append(f"  rule: {self.rule_label}")
        for name, value in self.inputs.items():
            lines.append(f"    {name} = {value!r}")
        for check in dict.fromkeys(name.split(".", 1)[0] for name in self.inputs):
            detail = self.evidence.get(check)
            notes = detail.get("explain") if isinstance(detail, dict) else None
            for note in notes if isinstance(notes, list) else ():
                lines.append(f"  {check}: {note}")
        if self.message:
            lines.append(f"  message: {self.message}")
        if self.shadow is not None:
            shadow = self.shadow
            lines.append(f"  shadow: would {shadow.action.value.upper()} ({shadow.label}); not enforced")
            lines += [f"    {name} = {value!r}" for name, value in shadow.inputs.items()]
            if shadow.error:
                lines.append(f"    error: {shadow.error}")
        for failure in self.errors:
            lines.append(f"  error in {failure.check}: {failure.type}: {failure.error}")
        return "\n".join(lines)
