"""Every exception guardrails-uq raises, in one tree.

GuardrailsError                 base class; catch this to catch everything below
├── PolicyError                 a policy file (or its cases file) is invalid: carries file, line, fix
│   └── RuleEvaluationError     a rule's CEL expression failed while deciding a call
├── CheckError                  a check raised while running; the Guard turns it into on_error
│   └── CheckTimeoutError       a check did not finish within its timeout_ms; its signals are missing
├── ArtifactError               an artifact (index, calibration, model file) is missing, damaged or mismatched
├── InputError                  a call, corpus line or data file handed to the library is malformed
│   └── HostileInputError       input a check cannot read and an attacker can shape: fails closed always
│       ├── WorkBudgetError     a check ran out of its work budget
│       └── ToolArgumentsError  a tool call's arguments are not a JSON object
├── NotFittedError              a calibration object was applied before fit()
├── ModelError                  a generation backend failed (HTTP, auth, malformed body, local model)
└── GuardrailViolation          raised by integrations to abort a run; carries the Decision
    ├── AbstainViolation        the policy abstained (or failed closed): answer with the message, never fall back
    └── EscalateViolation       the policy escalated: a larger model or a human may answer instead
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .decision import Decision


class GuardrailsError(Exception):
    """Base class of every error raised by guardrails-uq.

    Every subclass pickles and unpickles as itself with its attributes (Ray tasks and actors, process pools),
    whatever its constructor takes."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(vars(self))))


def _rebuild(cls: type[GuardrailsError], args: tuple[Any, ...], state: dict[str, Any]) -> GuardrailsError:
    error = cls.__new__(cls)
    error.args = args
    vars(error).update(state)
    return error


class PolicyError(GuardrailsError):
    """A policy file is invalid; names the file, the line and how to fix it."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        fix: str | None = None,
        rule: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = str(file) if file is not None else None
        self.line = line
        self.fix = fix
        self.rule = rule
        self.detail = detail
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.file or "<policy>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        text = f"{where}: {self.problem}"
        if self.rule:
            text += f" (rule {self.rule!r})"
        if self.detail:
            text += "\n" + self.detail
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class RuleEvaluationError(PolicyError):
    """A rule's condition raised while evaluating a call (wrong type, missing signal)."""


class CheckError(GuardrailsError):
    """A check failed while running; the Guard records it and applies the policy's on_error."""

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(f"check {check!r} failed: {message}")


class CheckTimeoutError(CheckError):
    """A check did not finish within its ``timeout_ms``: its signals are missing and ``on_error`` decides."""

    def __init__(self, check: str, timeout_ms: float) -> None:
        self.timeout_ms = timeout_ms
        super().__init__(check, f"did not finish within its timeout_ms of {timeout_ms:g} ms; its signals are missing")


class ArtifactError(GuardrailsError):
    """An artifact is missing, damaged, of an unknown format or made by a different embedder/retriever."""

    def __init__(self, path: str | Path | None, message: str, *, fix: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.fix = fix
        text = f"{self.path}: {message}" if self.path else message
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)


class InputError(GuardrailsError, ValueError):
    """Malformed input data: names the file, line or field and how to fix it."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None) -> None:
        self.source = source
        self.line = line
        where = source or ""
        if source and line is not None:
            where = f"{source}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class HostileInputError(InputError):
    """Input a check cannot read, in a form an attacker can choose (an attack signal): the Guard fails closed
    (abstains under ``on_error: allow``) instead of following on_error."""


class WorkBudgetError(HostileInputError):
    """A check ran out of its work budget on hostile-looking input; the Guard fails closed whatever on_error says."""


class ToolArgumentsError(HostileInputError):
    """A tool call's arguments are not a JSON object (the model writes them); the tool phase fails closed."""


class NotFittedError(GuardrailsError, RuntimeError):
    """A calibration object was used before fit() (or load())."""


class ModelError(GuardrailsError):
    """A generation backend failed: HTTP error, authentication, unknown model, malformed response."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False) -> None:
        self.status = status
        self.retryable = retryable
        super().__init__(message)


class GuardrailViolation(GuardrailsError):
    """Raised to abort a run when the policy abstains or escalates; carries the Decision."""

    def __init__(self, decision: Decision, message: str | None = None) -> None:
        self.decision = decision
        text = message or (
            f"guardrails-uq decided {decision.action.value}"
            + (f" by rule {decision.rule!r}" if decision.rule else "")
            + (f": {decision.message}" if decision.message else "")
        )
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.decision,))


class AbstainViolation(GuardrailViolation):
    """The policy abstained (a refusal, or on_error failing closed). Never answer from a fallback model."""


class EscalateViolation(GuardrailViolation):
    """The policy escalated: the one violation a fallback (larger model, human review) may answer."""


def violation_for(decision: Decision) -> GuardrailViolation:
    """The violation matching a non-allow Decision: EscalateViolation for escalate, AbstainViolation otherwise."""
    from .decision import Action

    cls = EscalateViolation if decision.action is Action.ESCALATE else AbstainViolation
    return cls(decision)
