"""OpenTelemetry cost: p50 latency per request with OTel on vs off vs absent, on the demo policy and on a rules-only one.

A request is the three phases (input, retrieval, output) of one demo question with a grounded answer. "on": the
Guard records to an SDK TracerProvider (BatchSpanProcessor, an exporter that discards) and MeterProvider
(in-memory reader): 3 phase spans, 6 check spans, 3 events, the metrics. "off": opentelemetry installed, no
provider configured. "absent": a subprocess where importing opentelemetry fails. on and off run interleaved in
one process (same embedder, same load); absent runs the same loop in its own process. The rules-only policy
(two tiny checks per phase) shows the per-request overhead without the checks' own time. Target: on adds
<= 0.3 ms per request (p50).

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


def workloads(telemetry: Any = None, embedder: Any = None) -> dict[str, Any]:
    """name -> (guard, one-request function) for the demo policy and the rules-only policy."""
    from guardrails_uq import Generation, Guard, ScoredDocument, TokenLogprob, load_policy, loads_policy
    from guardrails_uq.testing import StaticCheck

    guard = Guard(load_policy(ROOT / "policies" / "demo.yaml"), audit=False, telemetry=telemetry, embedder=embedder)
    rows = [json.loads(line) for line in (ROOT / "examples" / "data" / "nimbus_kb.jsonl").read_text().splitlines()]
    chunks = [ScoredDocument(id=r["id"], text=r["text"], score=0.8 - 0.01 * i) for i, r in enumerate(rows[:6])]
    text = chunks[0].text
    answer = Generation(text=text, tokens=[TokenLogprob(token=w + " ", logprob=-0.1) for w in text.split(" ")])
    tiny = [StaticCheck(f"c{i}", phase, values={}) for phase in ("input", "retrieval", "output") for i in range(2)]
    rules = Guard(loads_policy(RULES_ONLY), checks=tiny, audit=False, telemetry=telemetry)
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
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from guardrails_uq.telemetry import Telemetry

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    off = workloads()
    on = workloads(Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider), off["demo"][0].embedder)
    assert off["demo"][0]._telemetry.recorder() is None and on["demo"][0]._telemetry.recorder() is not None
    child = subprocess.run(
        [sys.executable, "-c", BLOCK + f"import runpy, sys; sys.argv = ['otel.py', '--absent', '--requests', '{args.requests}']; "
         f"runpy.run_path({str(Path(__file__))!r}, run_name='__main__')"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    absent_p50, absent_cpu = (json.loads(line) for line in child.stdout.strip().splitlines()[-2:])
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.1f}; {args.requests} requests per path "
          "(3 phases each), interleaved on/off")  # fmt: skip
    for name in ("demo", "rules-only"):
        fn_on, fn_off = on[name][1], off[name][1]
        for fn in (fn_on, fn_off):
            sample(fn, 5)
        for label, clock, base in (("wall", time.perf_counter, absent_p50), ("cpu", time.thread_time, absent_cpu)):
            times_on: list[float] = []
            times_off: list[float] = []
            for _ in range(args.requests):
                times_on += sample(fn_on, 1, clock)
                times_off += sample(fn_off, 1, clock)
            p_on, p_off = statistics.median(times_on), statistics.median(times_off)
            print(
                f"{name:<10} {label:<4} p50 on {p_on * 1e3:7.3f} ms | off {p_off * 1e3:7.3f} ms | absent "
                f"{base[name] * 1e3:7.3f} ms (own process) | on adds {(p_on - p_off) * 1e3:+.3f} ms (on/off {p_on / p_off:.3f})"
            )
    tracer = tracer_provider.get_tracer("floor")
    histogram = meter_provider.get_meter("floor").create_histogram("floor")

    def floor() -> None:  # what the SDK itself costs for one request's 9 spans and 10 measurements
        for _ in range(9):
            tracer.start_span("span").end()
        for _ in range(10):
            histogram.record(1.0, {"policy": "p"})

    cost = statistics.median(sample(floor, args.requests, time.thread_time))
    print(f"SDK floor, cpu: 9 bare spans + 10 metric records = {cost * 1e3:.3f} ms per request")
    tracer_provider.shutdown()
    print("target: on adds <= 0.3 ms per request (p50). wall: latency (includes waiting for a core on a busy")
    print("machine); cpu: this thread's CPU time per request (what the Guard's work costs, load-independent)")


if __name__ == "__main__":
    main()
