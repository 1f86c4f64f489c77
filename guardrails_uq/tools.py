"""The ``tool`` phase's signals: what a tool call the model made says, read before the tool runs.

    model step ─▶ output phase (output.kind == "tool_call") ─▶ for each call: Guard.tool(name, arguments)
                                                               ├ allow ─▶ the tool runs
                                                               ├ abstain ─▶ the tool does not run; the model
                                                               │            reads the policy message as its result
                                                               └ escalate ─▶ Guard.approve_tool: the escalation
                                                                            target approves or denies; none: waits

:class:`ToolCheck` publishes ``tool.name``, ``tool.arguments`` (the decoded arguments as a map, for rules
such as ``tool.arguments.user != app.user``), ``tool.folded`` (the same, strings folded for deny-lists) and, when the policy configures ``injection``, the injection
check's reading of the arguments' text (``tool.injection_*``: an agent told by an injected page to send what
it read somewhere). The approval prompt and its reading live here too, so every integration asks the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote_plus

from .call import Call, Message, ScoredDocument
from .checks import Check, Signals, SignalSpec
from .errors import CheckError, ToolArgumentsError
from .jsonsafe import dumps, json_strings, sanitize, tool_call_text
from .textnorm import normalize
from .types import Phase

#: Signals of every tool phase, whatever checks the policy configures.
TOOL_SIGNALS: Mapping[str, SignalSpec] = {
    "tool.name": SignalSpec("string", "Name of the tool the model called (the tool phase runs before it does)."),
    "tool.arguments": SignalSpec(
        "map",
        "The call's arguments, decoded (JSON text parsed) as a map: rules read fields, e.g. "
        "tool.arguments.user; reading a field the call does not have fails the rule (abstain, whatever on_error "
        "says), so write has(tool.arguments.user) where it may be missing.",
    ),
    "tool.folded": SignalSpec(
        "map",
        "tool.arguments with every string read as a comparison should (look-alike letters and NFKC folded, "
        "invisible characters removed, blanks collapsed and trimmed, case folded): for deny-lists, "
        'tool.folded.user == "admin" also stops "Admin ", fullwidth and Cyrillic look-alikes.',
    ),
}

#: Signals the injection check adds to the tool phase (policies with an ``injection`` section).
TOOL_INJECTION_SIGNALS: Mapping[str, SignalSpec] = {
    "tool.injection_score": SignalSpec(
        "number",
        "Highest P(instruction aimed at a model) over the call's argument text (every key and decoded string, "
        "percent-encoded URLs decoded, hidden channels revealed), as injection.score reads tool results.",
    ),
    "tool.injection_flagged": SignalSpec(
        "bool", "tool.injection_score above the injection check's calibrated threshold."
    ),
    "tool.injection_span": SignalSpec("string", "The argument window that gave the highest score, or ''."),
}

#: What the escalation target is asked when a tool rule escalates; its reply must be the word APPROVE alone.
APPROVAL_INSTRUCTIONS = (
    "You review a tool call an AI assistant wants to make for a user, before it runs. Reply with the single "
    "word APPROVE if it should run, or DENY followed by the reason."
)


def tool_signals(*, injection: bool) -> dict[str, SignalSpec]:
    """The tool phase's signals: :data:`TOOL_SIGNALS`, plus :data:`TOOL_INJECTION_SIGNALS` with ``injection``."""
    return {**TOOL_SIGNALS, **(TOOL_INJECTION_SIGNALS if injection else {})}


def decode_arguments(name: str, arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as a map: JSON text is parsed, decoded JSON is taken as is (non-finite numbers
    become null, lone surrogates U+FFFD). Anything but a JSON object is a ToolArgumentsError naming the tool
    (it fails closed whatever on_error says: the model writes the arguments)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError) as exc:
            raise ToolArgumentsError(
                f"tool call {name!r}: arguments are not JSON ({exc})", source="tool.arguments"
            ) from None
    if not isinstance(arguments, Mapping):
        raise ToolArgumentsError(
            f"tool call {name!r}: arguments must be a JSON object, got {type(arguments).__name__}",
            source="tool.arguments",
        )
    decoded: dict[str, Any] = sanitize(dict(arguments))
    return decoded


def folded(value: Any) -> Any:
    """``value`` (decoded arguments) with every string value folded for comparison (:data:`TOOL_SIGNALS`,
    ``tool.folded``): :func:`~.textnorm.normalize` with look-alikes folded, case folded, blanks trimmed.
    Keys are kept as written (a tool's schema matches them exactly)."""
    if isinstance(value, str):
        return " ".join(normalize(value, fold_confusables=True).casefold().split())
    if isinstance(value, dict):
        return {key: folded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [folded(item) for item in value]
    return value


def argument_text(name: str, arguments: Mapping[str, Any]) -> str:
    """What the tool and whoever it sends to read in the call: :func:`~.jsonsafe.tool_call_text`, then every
    percent-encoded string decoded (a URL's query carries text the way a form does)."""
    encoded = [unquote_plus(s) for s in json_strings(arguments, keys=False) if "%" in s or "+" in s]
    return "\n".join([tool_call_text(name, dict(arguments)), *[s for s in encoded if s]])


class ToolCheck:
    """The tool phase's check (every Guard has one): reads ``call.tool`` and publishes :data:`TOOL_SIGNALS`.
    Cheap and never timed: a deny-list on ``tool.name`` or ``tool.folded`` can always be read."""

    name = "tool"
    phase: Phase = "tool"
    rewrites: frozenset[str] = frozenset()
    waits = False

    def run(self, call: Call) -> Signals:
        name, arguments = _read_call(call, self.name)
        values = {"tool.name": name, "tool.arguments": arguments, "tool.folded": folded(arguments)}
        return Signals(values=values, evidence={"name": name, "id": call.tool.id if call.tool else None})


class ToolInjectionCheck:
    """The injection check's reading of a tool call's argument text (:data:`TOOL_INJECTION_SIGNALS`), a check of
    its own in the tool phase so that the injection section's ``timeout_ms`` (``section``) limits it alone: a
    reading that runs out of time leaves ``tool.injection_*`` missing (``on_error`` decides) while the rules on
    :class:`ToolCheck`'s signals still read the call. Thread-safe as the injection check is."""

    name = "tool_injection"
    phase: Phase = "tool"
    section = "injection"
    rewrites: frozenset[str] = frozenset()
    waits = False

    def __init__(self, injection: Check) -> None:
        self.injection = injection

    def run(self, call: Call) -> Signals:
        name, arguments = _read_call(call, self.name)
        tool_id = call.tool.id if call.tool is not None else None  # _read_call refused a call without one
        document = ScoredDocument(id=f"tool:{tool_id or name}", text=argument_text(name, arguments), score=0.0)
        read = self.injection.run(Call(documents=[document]))
        values = {
            "tool.injection_score": read.values["injection.score"],
            "tool.injection_flagged": read.values["injection.flagged"],
            "tool.injection_span": read.values["injection.span"],
        }
        return Signals(values=values, evidence={"injection": read.evidence})


def tool_checks(injection: Check | None) -> tuple[Check, ...]:
    """The tool phase's checks of a Guard: :class:`ToolCheck`, and with the policy's injection check a
    :class:`ToolInjectionCheck` reading the arguments with it."""
    return (ToolCheck(),) if injection is None else (ToolCheck(), ToolInjectionCheck(injection))


def _read_call(call: Call, check: str) -> tuple[str, dict[str, Any]]:
    """The call's tool name and decoded arguments (:func:`decode_arguments`); CheckError without a tool call."""
    if call.tool is None:
        raise CheckError(check, "the tool phase needs a tool call: use Guard.tool(name, arguments)")
    return call.tool.name, decode_arguments(call.tool.name, call.tool.arguments)


def approval_prompt(
    name: str, arguments: Any, *, rule: str | None, request: str | None, messages: Sequence[Message] = ()
) -> list[Message]:
    """The conversation the escalation target reads to approve or deny a tool call: the instructions, the
    conversation so far (``messages``, if any), then the call, the user's request and the rule that asked."""
    lines = [
        f"Tool: {name}",
        f"Arguments: {dumps(arguments, sort_keys=True)}",
        f"User's request: {request or '(unknown)'}",
        f"Policy rule that asks for review: {rule or '(none)'}",
    ]
    return [
        Message(role="system", content=APPROVAL_INSTRUCTIONS),
        *[m for m in messages if m.role != "system"],
        Message(role="user", content="\n".join(lines)),
    ]


def approved(reply: str) -> bool:
    """True only when the reviewer's reply is the word APPROVE alone (any case; blanks, final punctuation and
    markdown emphasis around it ignored). Anything else denies (fail closed): a reply that starts with APPROVE
    and goes on ("APPROVE or DENY? DENY: ...", "APPROVE. Actually no", "Approve only if ...") is not an
    approval."""
    return reply.strip().strip("*_`\"'").strip().rstrip(".!").upper() == "APPROVE"
