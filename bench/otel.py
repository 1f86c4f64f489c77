"""OpenTelemetry cost: p50 latency per request with OTel on vs off vs absent, on the demo policy and on a rules-only one.

A request is the three phases (input, retrieval, output) of one demo question with a grounded answer, inside
the app's own request span (as in a traced app: the phases join the app's trace and its sampling decision).
Three ways to run OTel, each against "off" (the same app span, a Guard that records nothing) interleaved in one
process (same embedder, same load):

* always-on: every span recorded (the SDK's default sampler, ParentBased(ALWAYS_ON)), BatchSpanProcessor with an
  exporter that discards, and a MeterProvider (in-memory reader): 3 phase spans, 6 check spans, 3 events, metrics.
* sampled 10%: the same with ParentBased(TraceIdRatioBased(0.1)), the usual production set-up: 1 request in 10
  is traced, every request counted in the metrics. Its p50 is an untraced request.
* phases only: always-on with ``telemetry: {check_spans: false}`` (3 phase spans, no check spans).
* metrics: a MeterProvider and no tracer provider.

"absent": a subprocess where importing opentelemetry fails (the Guard records nothing; no app span). The
rules-only policy (two tiny checks per phase) shows the per-request overhead without the checks' own time.
"SDK floor": what the SDK alone costs for the 9 nested spans the issue asks for, with no attribute, event or
metric. Target: on adds <= 0.3 ms per request (p50).

    python bench/otel.py [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine

ROOT = Path(__file__).resolve().parents[1]
BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(name)
sys.meta_path.insert(0, _Block())
"""
RULES_ONLY = """
version: 1
name: rules-only
signals: {app.score: number}
rules:
  - {name: high, at: output, when: "app.score > 0.9", action: abstain}
  - {name: mid, at: input, when: "app.score > 0.95", action: escalate}
"""


def demo_request(guard: Any, chunks: list, question: str, answer: Any) -> None:
    from guardrails_uq import Message

    before = guard.before([Message(role="user", content=question)])
    retrieved = guard.retrieve(question, chunks, context=before)
    guard.after(answer, context=retrieved)


def rules_request(guard: Any) -> None:
    from guardrails_uq import Message

    before = guard.before([Message(role="user", content="hi")], signals={"app.score": 0.5})
    retrieved = guard.retrieve("hi", [], context=before)
    guard.after("fine", context=retrieved)


def workloads(telemetry: Any = None, embedder: Any = None, *, check_spans: bool = True) -> dict[str, Any]:
    """name -> (guard, one-request function) for the demo policy and the rules-only policy (``check_spans``:
    the policies' ``telemetry.check_spans``)."""
    from guardrails_uq import Generation, Guard, ScoredDocument, TokenLogprob, loads_policy
    from guardrails_uq.testing import StaticCheck

    extra = "" if check_spans else "\ntelemetry: {check_spans: false}\n"
    demo_path = ROOT / "policies" / "demo.yaml"
    demo = loads_policy(demo_path.read_text() + extra, file=str(demo_path), base_dir=demo_path.parent)
    guard = Guard(demo, audit=False, telemetry=telemetry, embedder=embedder)
    rows = [json.loads(line) for line in (ROOT / "examples" / "data" / "nimbus_kb.jsonl").read_text().splitlines()]
    chunks = [ScoredDocument(id=r["id"], text=r["text"], score=0.8 - 0.01 * i) for i, r in enumerate(rows[:6])]
    text = chunks[0].text
    answer = Generation(text=text, tokens=[TokenLogprob(token=w + " ", logprob=-0.1) for w in text.split(" ")])
    tiny = [StaticCheck(f"c{i}", phase, values={}) for phase in ("input", "retrieval", "output") for i in range(2)]
    rules = Guard(loads_policy(RULES_ONLY + extra), checks=tiny, audit=False, telemetry=telemetry)
    return {
        "demo": (guard, lambda: demo_request(guard, chunks, "How do I reset my password?", answer)),
        "rules-only": (rules, lambda: rules_request(rules)),
    }


def sample(fn: Any, n: int, clock: Any = time.perf_counter) -> list[float]:
    out = []
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def absent(n: int) -> None:
    """The child process: opentelemetry blocked; print p50 per workload as JSON."""
    from guardrails_uq.telemetry import available

    assert not available()
    loads = workloads()
    for _, fn in loads.values():
        sample(fn, 5)
    print(json.dumps({name: statistics.median(sample(fn, n)) for name, (_, fn) in loads.items()}))
    print(json.dumps({name: statistics.median(sample(fn, n, time.thread_time)) for name, (_, fn) in loads.items()}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--absent", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.absent:
        absent(args.requests)
        return
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from guardrails_uq.telemetry import Telemetry

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    def tracing(sampler: Any = None) -> TracerProvider:
        provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1 << 16))
        return provider

    def in_app_span(tracer: Any, fn: Any) -> Any:
        def request() -> None:
            with tracer.start_as_current_span("app request"):
                fn()

        return request

    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    always, sampled = tracing(), tracing(ParentBased(TraceIdRatioBased(0.1)))
    off = workloads()
    embedder = off["demo"][0].embedder
    modes = {
        "always-on": (always, workloads(Telemetry(tracer_provider=always, meter_provider=meter_provider), embedder)),
        "phases only": (
            always,
            workloads(Telemetry(tracer_provider=always, meter_provider=meter_provider), embedder, check_spans=False),
        ),
        "sampled 10%": (
            sampled,
            workloads(Telemetry(tracer_provider=sampled, meter_provider=meter_provider), embedder),
        ),
        "metrics": (None, workloads(Telemetry(meter_provider=meter_provider), embedder)),
    }
    assert off["demo"][0]._telemetry.recorder() is None
    assert all(loads["demo"][0]._telemetry.recorder() is not None for _, loads in modes.values())
    child = subprocess.run(
        [sys.executable, "-c", BLOCK + f"import runpy, sys; sys.argv = ['otel.py', '--absent', '--requests', '{args.requests}']; "
         f"runpy.run_path({str(Path(__file__))!r}, run_name='__main__')"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    absent_p50, absent_cpu = (json.loads(line) for line in child.stdout.strip().splitlines()[-2:])
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.1f}; {args.requests} requests per path "
          "(3 phases each), interleaved on/off")  # fmt: skip
    for name in ("demo", "rules-only"):
        print(
            f"{name}: absent p50 wall {absent_p50[name] * 1e3:.3f} ms, cpu {absent_cpu[name] * 1e3:.3f} ms (own process)"
        )
        for mode, (provider, loads) in modes.items():
            tracer = (provider or otel_trace.NoOpTracerProvider()).get_tracer("app")
            fn_on, fn_off = in_app_span(tracer, loads[name][1]), in_app_span(tracer, off[name][1])
            for fn in (fn_on, fn_off):
                sample(fn, 5)
            for label, clock in (("wall", time.perf_counter), ("cpu", time.thread_time)):
                times_on: list[float] = []
                times_off: list[float] = []
                for _ in range(args.requests):
                    times_on += sample(fn_on, 1, clock)
                    times_off += sample(fn_off, 1, clock)
                p_on, p_off = statistics.median(times_on), statistics.median(times_off)
                print(
                    f"  {mode:<12} {label:<4} p50 on {p_on * 1e3:7.3f} ms | off {p_off * 1e3:7.3f} ms | "
                    f"on adds {(p_on - p_off) * 1e3:+.3f} ms (on/off {p_on / p_off:.3f})"
                )
    floor_tracer = always.get_tracer("floor")

    def floor() -> None:  # the SDK alone: 3 phase spans, each current while 2 check spans run under it
        for _ in range(3):
            phase = floor_tracer.start_span("phase")
            token = otel_context.attach(otel_trace.set_span_in_context(phase))
            for _ in range(2):
                floor_tracer.start_span("check").end()
            otel_context.detach(token)
            phase.end()

    cost = statistics.median(sample(floor, args.requests, time.thread_time))
    print(f"SDK floor, cpu: 9 nested spans, no attribute, event or metric = {cost * 1e3:.3f} ms per request")
    for provider in (always, sampled):
        provider.shutdown()
    print("target: on adds <= 0.3 ms per request (p50). wall: latency (includes waiting for a core on a busy")
    print("machine); cpu: this thread's CPU time per request (what the Guard's work costs, load-independent)")


if __name__ == "__main__":
    main()
