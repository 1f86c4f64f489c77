"""OpenTelemetry metrics and sampling (issue 24, item 2, the cost target): the counters are tallied in process
and reported by observable counters, check durations are queued and recorded into the histogram when a reader
collects. What a user relies on: every policy sharing a meter provider is counted, every reader (cumulative or
delta) sees every duration exactly once, nothing is dropped when no reader collects, and a trace the sampler
drops costs no check spans but is still measured."""

from __future__ import annotations

import os
import subprocess
import sys

from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

from guardrails_uq import Guard, loads_policy
from guardrails_uq.telemetry import Telemetry
from guardrails_uq.testing import StaticCheck

POLICY = """
version: 1
name: {name}
signals: {{app.score: number}}
rules:
  - {{name: high, at: output, when: "app.score > 0.9", action: abstain}}
"""


def points(reader: InMemoryMetricReader) -> dict[str, list]:
    """Metric name -> data points of one collection by ``reader``."""
    found: dict[str, list] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def guard(meter_provider: MeterProvider, name: str = "alpha", tracer_provider: TracerProvider | None = None) -> Guard:
    checks = [StaticCheck("fast", "output", values={}), StaticCheck("other", "output", values={})]
    telemetry = Telemetry(meter_provider=meter_provider, tracer_provider=tracer_provider)
    return Guard(loads_policy(POLICY.format(name=name)), checks=checks, audit=False, telemetry=telemetry)


def durations(found: dict[str, list]) -> dict[tuple[str, str], int]:
    return {(p.attributes["policy"], p.attributes["check"]): p.count for p in found["guardrails_uq.check.duration"]}


def requests(found: dict[str, list]) -> dict[str, int]:
    return {p.attributes["policy"]: p.value for p in found["guardrails_uq.requests"]}


def test_every_policy_recording_to_one_meter_provider_is_counted() -> None:
    """A proxy serving several tenants' policies shares one meter provider: each policy's requests,
    decisions and check durations are all reported (an observable counter is registered once per meter)."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    alpha, beta = guard(provider, "alpha"), guard(provider, "beta")
    for _ in range(3):
        alpha.after("fine", signals={"app.score": 0.1})
    for _ in range(2):
        beta.after("fine", signals={"app.score": 0.95})
    found = points(reader)
    assert requests(found) == {"alpha": 3, "beta": 2}
    decisions = {(p.attributes["policy"], p.attributes["action"]): p.value for p in found["guardrails_uq.decisions"]}
    assert decisions == {("alpha", "allow"): 3, ("beta", "abstain"): 2}
    assert durations(found) == {("alpha", "fast"): 3, ("alpha", "other"): 3, ("beta", "fast"): 2, ("beta", "other"): 2}


def test_every_reader_sees_every_duration_once_cumulative_or_delta() -> None:
    cumulative = InMemoryMetricReader()
    delta = InMemoryMetricReader(
        preferred_temporality={
            Counter: AggregationTemporality.DELTA,
            ObservableCounter: AggregationTemporality.DELTA,
            Histogram: AggregationTemporality.DELTA,
        }
    )
    provider = MeterProvider(metric_readers=[cumulative, delta])
    g = guard(provider)
    for _ in range(2):
        g.after("fine", signals={"app.score": 0.1})
    assert durations(points(delta)) == {("alpha", "fast"): 2, ("alpha", "other"): 2}
    assert requests(points(cumulative)) == {"alpha": 2}
    g.after("fine", signals={"app.score": 0.1})
    found_cumulative, found_delta = points(cumulative), points(delta)
    assert durations(found_cumulative) == {("alpha", "fast"): 3, ("alpha", "other"): 3}
    assert requests(found_cumulative) == {"alpha": 3}
    assert durations(found_delta) == {("alpha", "fast"): 1, ("alpha", "other"): 1}, "the delta reader: only the new one"
    assert requests(found_delta) == {"alpha": 1}


def test_durations_past_the_queue_bound_are_recorded_at_once_not_dropped() -> None:
    """No reader collects (a pull exporter nobody scrapes): memory stays bounded and nothing is lost."""
    reader = InMemoryMetricReader()
    g = guard(MeterProvider(metric_readers=[reader]))
    metrics = g._telemetry.recorder().metrics
    metrics.max_pending = 3
    for _ in range(10):
        g.after("fine", signals={"app.score": 0.1})
    assert len(metrics._durations) <= 3
    assert durations(points(reader)) == {("alpha", "fast"): 10, ("alpha", "other"): 10}


def test_a_trace_the_sampler_drops_gets_no_check_spans_but_is_still_measured() -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    g = guard(MeterProvider(metric_readers=[reader]), tracer_provider=tracer_provider)
    assert g.after("fine", signals={"app.score": 0.95}).rule == "high"
    assert spans.get_finished_spans() == ()
    found = points(reader)
    assert durations(found) == {("alpha", "fast"): 1, ("alpha", "other"): 1}
    assert {(p.attributes["action"], p.value) for p in found["guardrails_uq.decisions"]} == {("abstain", 1)}


SAMPLER = """
from opentelemetry import trace
from guardrails_uq.telemetry import configure_otlp
assert configure_otlp("http://127.0.0.1:9")
print(trace.get_tracer_provider().sampler.get_description())
"""


def test_serve_otel_takes_the_sampler_from_the_standard_environment_variables() -> None:
    """`serve --otel` and `telemetry: {otel: true}` build the SDK provider: OTEL_TRACES_SAMPLER applies."""
    env = {**os.environ, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    result = subprocess.run([sys.executable, "-c", SAMPLER], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ParentBased{root:TraceIdRatioBased{0.1}" in result.stdout


def test_check_spans_false_records_phase_spans_only_and_still_times_each_check() -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    policy = loads_policy(POLICY.format(name="alpha") + "telemetry: {check_spans: false}\n")
    checks = [StaticCheck("fast", "output", values={}), StaticCheck("other", "output", values={})]
    telemetry = Telemetry(meter_provider=MeterProvider(metric_readers=[reader]), tracer_provider=tracer_provider)
    decision = Guard(policy, checks=checks, audit=False, telemetry=telemetry).after("x", signals={"app.score": 0.1})
    assert [s.name for s in spans.get_finished_spans()] == ["apply_guardrail alpha"]
    assert durations(points(reader)) == {("alpha", "fast"): 1, ("alpha", "other"): 1}
    assert set(decision.timings_ms) >= {"fast", "other"}


GLOBALS = """
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from guardrails_uq import Guard, loads_policy
from guardrails_uq.testing import StaticCheck

def guard(name):
    text = "version: 1\\nname: " + name + "\\nsignals: {app.score: number}\\n"
    return Guard(loads_policy(text), checks=[StaticCheck("fast", "output", values={})], audit=False)

trace.set_tracer_provider(TracerProvider())
early = guard("early")
early.after("x", signals={"app.score": 0.1})  # records (a tracer provider is set), meters through the proxy
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
late = guard("late")
for g in (early, late):
    g.after("x", signals={"app.score": 0.1})
counts = {}
for resource in reader.get_metrics_data().resource_metrics:
    for scope in resource.scope_metrics:
        for metric in scope.metrics:
            if metric.name == "guardrails_uq.requests":
                counts = {p.attributes["policy"]: p.value for p in metric.data.data_points}
print(sorted(counts.items()))
"""


def test_guards_made_before_and_after_the_app_sets_its_meter_provider_are_all_counted() -> None:
    result = subprocess.run([sys.executable, "-c", GLOBALS], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[('early', 2), ('late', 1)]", result.stdout + result.stderr  # nothing lost
