"""Hostile trial, session 6: inputs that made the guard decide differently from what it promises, each fixed.

* The async path waited for a timed check only after the phase's own-thread checks had run, so a check that
  returned after its deadline (while the phase was busy) was accepted: the sync path timed it out and
  abstained, the async path allowed on its late signals."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from guardrails_uq import Action, Call, Guard, Signals, loads_policy
from guardrails_uq.checks import CheckSpec, SignalSpec, register, unregister
from guardrails_uq.policy.schema import CheckConfig


class _Probe:
    def __init__(self, name: str, run) -> None:
        self.name, self.phase, self._run = name, "output", run

    def run(self, call: Call) -> Signals:
        return self._run(call)


def _spec(name: str, run) -> CheckSpec:
    class Config(CheckConfig):
        pass

    Config.__name__ = f"{name.title()}Config"
    return CheckSpec(
        name=name,
        phase="output",
        config=Config,
        signals={f"{name}.score": SignalSpec("number", "the probe's number")},
        build=lambda config, base_dir, deps: _Probe(name, run),
        rewrites=frozenset(),
        waits=False,
    )


LATE_POLICY = """
version: 1
name: late
h6a_timed: {timeout_ms: 100}
h6b_compute: {}
rules:
  - {name: flagged, at: output, when: "h6a_timed.score > 5.0", action: escalate}
on_error: abstain
"""


@pytest.fixture
def late_checks() -> Iterator[threading.Event]:
    """``h6a_timed`` (limit 100 ms) answers only once ``h6b_compute`` (a check that computes in the phase's
    thread, 0.3 s here) has released it: past its deadline whichever path runs them. Yields the release."""
    release, returned = threading.Event(), threading.Event()

    def timed(call: Call) -> Signals:
        release.wait(10)
        returned.set()
        return Signals(values={"h6a_timed.score": 1.0})

    def compute(call: Call) -> Signals:
        time.sleep(0.3)  # past the timed check's deadline
        release.set()
        returned.wait(10)  # the timed check has its (late) answer before the phase waits for it
        time.sleep(0.1)
        return Signals(values={"h6b_compute.score": 0.0})

    specs = [_spec("h6a_timed", timed), _spec("h6b_compute", compute)]
    for spec in specs:
        register(spec)
    yield release
    release.set()
    for spec in specs:
        unregister(spec.name)


@pytest.mark.timeout(30)
def test_a_check_that_answers_after_its_deadline_times_out_in_the_async_path_too(late_checks) -> None:
    guard = Guard(loads_policy(LATE_POLICY), audit=False)
    sync = guard.after("an answer")
    late_checks.clear()
    concurrent = asyncio.run(guard.aafter("an answer"))
    for decision in (sync, concurrent):
        assert decision.action is Action.ABSTAIN and decision.rule_label == "(on_error)"
        assert [(e.check, e.type) for e in decision.errors][:1] == [("h6a_timed", "CheckTimeoutError")]
        assert "h6a_timed.score" not in decision.signals


@pytest.mark.timeout(30)
def test_a_late_result_is_a_timeout_on_its_check_span_and_in_the_metrics_too(late_checks) -> None:
    """The Decision records the timeout; the check's span and the duration metric said "ok" (the worker
    finished them when its late result came). They now say what the phase kept."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from guardrails_uq.telemetry import Telemetry

    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader]))
    guard = Guard(loads_policy(LATE_POLICY), audit=False, telemetry=telemetry)
    decision = asyncio.run(guard.aafter("an answer"))
    assert decision.errors[0].type == "CheckTimeoutError"
    [span] = [s for s in spans.get_finished_spans() if s.name == "apply_guardrail h6a_timed"]
    assert span.status.status_code is StatusCode.ERROR and span.attributes["error.type"] == "CheckTimeoutError"
    data = reader.get_metrics_data()
    outcomes = {
        p.attributes["outcome"]
        for r in data.resource_metrics
        for sc in r.scope_metrics
        for m in sc.metrics
        if m.name == "guardrails_uq.check.duration"
        for p in m.data.data_points
        if p.attributes["check"] == "h6a_timed"
    }
    assert outcomes == {"timeout"}
