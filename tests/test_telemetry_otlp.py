"""OpenTelemetry over the wire: ``guardrails-uq serve --otel`` (a real process) exports its spans and metrics over
OTLP/HTTP to a real receiver on 127.0.0.1 that decodes the protobuf requests (ExportTraceServiceRequest,
ExportMetricsServiceRequest); the proxy's spans continue the client's trace (W3C traceparent)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from guardrails_uq import Generation, TokenLogprob
from guardrails_uq.testing import ChatCompletionsServer, free_port

ROOT = Path(__file__).resolve().parent.parent
POLICY = """
version: 1
name: otlp-proxy
uncertainty: {score: mean_nll}
rules:
  - {name: unsure, at: output, when: "uncertainty.available && uncertainty.mean_nll > 2.0", action: escalate}
"""

METRICS = {"guardrails_uq.requests", "guardrails_uq.decisions", "guardrails_uq.check.duration"}


class Receiver:
    """An OTLP/HTTP receiver: keeps the spans and metric names it is sent."""

    def __init__(self) -> None:
        self.spans: list = []
        self.metrics: set[str] = set()
        self.paths: list[str] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.paths.append(self.path)
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    for resource in request.resource_spans:
                        for scope in resource.scope_spans:
                            received.spans.extend((resource, scope.scope, span) for span in scope.spans)
                elif self.path == "/v1/metrics":
                    request = ExportMetricsServiceRequest.FromString(body)
                    for resource in request.resource_metrics:
                        for scope in resource.scope_metrics:
                            received.metrics.update(metric.name for metric in scope.metrics)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attributes(span) -> dict:
    values = {}
    for kv in span.attributes:
        value = kv.value
        values[kv.key] = getattr(value, value.WhichOneof("value"))
    return values


def reply(request: dict) -> Generation:
    text = "Open Settings and choose Export."
    return Generation(text=text, tokens=[TokenLogprob(token=w + " ", logprob=-0.05) for w in text.split(" ")])


@pytest.mark.timeout(90)
def test_serve_otel_exports_spans_and_metrics_to_an_otlp_receiver(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    receiver = Receiver()
    port = free_port()
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_SERVICE_NAME": "proxy-under-test",
    }
    with ChatCompletionsServer(reply) as upstream:
        command = [sys.executable, "-m", "guardrails_uq.cli", "serve", "--otel", "--policy", str(tmp_path / "policy.yaml"),
                   "--upstream", upstream.base_url, "--port", str(port)]  # fmt: skip
        server = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
            response = httpx.post(
                f"{base}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "How do I export? secret-4111"}]},
                headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
                timeout=30,
            )
            assert response.status_code == 200 and response.headers["x-guardrails-action"] == "allow"
            deadline = time.time() + 30
            names = set()
            while time.time() < deadline:
                names = {span.name for _, _, span in receiver.spans}
                wanted = {"POST /v1/chat/completions", "apply_guardrail otlp-proxy", "apply_guardrail uncertainty"}
                # every metric, not the first export's: one may fall between the phases (300 ms interval)
                if wanted <= names and METRICS.issubset(receiver.metrics):
                    break
                time.sleep(0.1)
        finally:
            server.terminate()
            output = server.communicate(timeout=30)[0]
            receiver.close()
    assert wanted <= names, f"spans received: {names}; server said: {output[-2000:]}"
    spans = {span.name: (resource, scope, span) for resource, scope, span in receiver.spans}
    parents = {span.span_id: span.parent_span_id for _, _, span in receiver.spans}

    def ancestors(span) -> list[bytes]:
        found, current = [], span.parent_span_id
        while current:
            found.append(current)
            current = parents.get(current, b"")
        return found

    resource, _, request_span = spans["POST /v1/chat/completions"]  # FastAPI's server span
    assert request_span.trace_id.hex() == trace_id and request_span.parent_span_id.hex() == parent_id
    service = {kv.key: kv.value.string_value for kv in resource.resource.attributes}["service.name"]
    assert service == "proxy-under-test"
    phases = [span for _, _, span in receiver.spans if span.name == "apply_guardrail otlp-proxy"]
    assert {attributes(s)["guardrails_uq.phase"] for s in phases} == {"input", "output"}
    for phase in phases:  # the client's trace, under the proxy's request span
        assert phase.trace_id.hex() == trace_id and request_span.span_id in ancestors(phase)
    output_phase = next(s for s in phases if attributes(s)["guardrails_uq.phase"] == "output")
    phase_attrs = attributes(output_phase)
    assert phase_attrs["gen_ai.operation.name"] == "apply_guardrail"
    assert phase_attrs["gen_ai.security.target.type"] == "llm_output"
    assert phase_attrs["gen_ai.security.decision.type"] == "allow" and phase_attrs["guardrails_uq.rule"] == "(default)"
    assert [event.name for event in output_phase.events] == ["gen_ai.guardrail.result"]
    _, check_scope, check = spans["apply_guardrail uncertainty"]
    assert check.parent_span_id == output_phase.span_id and check_scope.name == "guardrails_uq"
    assert attributes(check)["gen_ai.guardian.name"] == "uncertainty"
    assert not any("secret-4111" in str(attributes(span)) for _, _, span in receiver.spans), "no content by default"
    assert METRICS.issubset(receiver.metrics)
