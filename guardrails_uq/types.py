"""Type aliases shared across the package."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

#: A signal value: what a check measures and a rule reads.
SignalValue: TypeAlias = bool | int | float | str | list[str] | list[float] | list[int] | dict[str, Any] | None
#: Flat mapping of dotted signal names ("provenance.bci_max") to values.
SignalMap: TypeAlias = dict[str, SignalValue]
#: The places a Guard runs: before the model (input), on retrieved chunks, after the model (output), and
#: before a tool the model called runs (tool: an agent's step, after the output phase passed it).
Phase: TypeAlias = Literal["input", "retrieval", "output", "tool"]
PHASES: tuple[Phase, ...] = ("input", "retrieval", "output", "tool")
#: JSON-compatible evidence attached to a Decision.
Evidence: TypeAlias = dict[str, Any]
