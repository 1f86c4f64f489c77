"""Test helpers shipped with the library (as httpx ships MockTransport).

* :class:`StaticCheck`: a check that returns fixed (or computed) signals, for testing policies and apps
  without models.
* :class:`FailingCheck`: a check that always raises, for testing on_error handling.
* :func:`assert_conforms`: the conformance suite every check must pass (use it for your own checks).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .call import Call
from .checks import Check, CheckSpec, Signals
from .types import Evidence, Phase, SignalMap

_TYPE_CHECKS: dict[str, Callable[[object], bool]] = {
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
}


@dataclass
class StaticCheck:
    """Returns ``values`` (or ``compute(call)``) every time; counts its runs (thread-safe)."""

    name: str
    phase: Phase
    values: SignalMap = field(default_factory=dict)
    compute: Callable[[Call], SignalMap] | None = None
    evidence: Evidence = field(default_factory=dict)
    runs: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self, call: Call) -> Signals:
        with self._lock:
            self.runs += 1
        values = self.compute(call) if self.compute is not None else dict(self.values)
        return Signals(values=values, evidence=dict(self.evidence))


@dataclass
class FailingCheck:
    """Always raises ``error``."""

    name: str
    phase: Phase
    error: Exception = field(default_factory=lambda: RuntimeError("boom"))

    def run(self, call: Call) -> Signals:
        raise self.error


def assert_conforms(check: Check, spec: CheckSpec, calls: Sequence[Call], *, threads: int = 4) -> None:
    """Assert the Check contract on ``calls``: declared phase and name; exactly the declared signals with
    their declared types (None allowed only where the description says "or null"); JSON-compatible
    evidence; no mutation of the call; same result when run concurrently from several threads."""
    assert check.name == spec.name, f"check.name {check.name!r} != spec.name {spec.name!r}"
    assert check.phase == spec.phase, f"{spec.name}: phase {check.phase!r} != spec {spec.phase!r}"
    assert calls, "give at least one call"
    serial = []
    for call in calls:
        before = call.model_dump_json()
        result = check.run(call)
        assert call.model_dump_json() == before, f"{spec.name}: run() changed its call"
        _assert_values(spec, result.values)
        json.dumps(result.evidence)  # raises when evidence is not JSON-compatible
        serial.append(result.values)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        parallel = list(pool.map(lambda c: check.run(c).values, calls))
    for one, other in zip(serial, parallel, strict=True):
        assert _same(one, other), f"{spec.name}: results differ under concurrency: {one} != {other}"


def _assert_values(spec: CheckSpec, values: Mapping[str, object]) -> None:
    declared = set(spec.signals)
    assert set(values) == declared, f"{spec.name}: produced {sorted(values)}, declared {sorted(declared)}"
    for name, value in values.items():
        info = spec.signals[name]
        if value is None:
            assert "or null" in info.description, f"{name} is None but its spec does not allow null"
            continue
        assert _TYPE_CHECKS[info.type](value), f"{name}={value!r} is not a {info.type}"


def _same(a: Mapping[str, object], b: Mapping[str, object]) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, float) and isinstance(y, float):
            if not (x == y or (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-5)):
                return False
        elif x != y:
            return False
    return True
