"""OpenTelemetry (issue 24, item 2): spans per phase and per check with the draft GenAI guardrail attributes,
an event per Decision, metrics without tracing, no message content unless the policy opts in, and nothing at
all (but a working Guard) when opentelemetry is not installed. The SDK's in-memory exporters, attribute by
attribute; the OTLP/HTTP path is tested against a real receiver in test_telemetry_otlp.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from guardrails_uq import Action, Call, Guard, Message, PolicyError, loads_policy
from guardrails_uq.telemetry import Telemetry, policy_version
from guardrails_uq.testing import FailingCheck, StaticCheck

ROOT = Path(__file__).resolve().parent.parent
SECRET_REQUEST = "my card number is 4111 1111 1111 1111, how do I export?"
SECRET_ANSWER = "Open Settings, then Export; your card 4111 is on file."

POLICY = """
version: 1
name: telemetry
signals: {{app.tier: string}}
risk: {{}}
size: {{}}
rules:
  - {{name: risky, at: output, when: "risk.score > 0.5 && risk.flagged", action: abstain, message: "No."}}
  - {{name: long, at: output, when: "size.words > 50.0", action: escalate}}
on_error: {on_error}
telemetry: {{content: {content}}}
"""


class Recording:
    """An SDK tracer provider and meter provider that keep what they record in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def telemetry(self, *, traces: bool = True) -> Telemetry:
        return Telemetry(tracer_provider=self.tracer_provider if traces else None, meter_provider=self.meter_provider)

    def finished(self) -> dict[str, list]:
        by_name: dict[str, list] = {}
        for span in self.spans.get_finished_spans():
            by_name.setdefault(span.name, []).append(span)
        return by_name

    def metrics(self) -> dict[str, list]:
        """Metric name -> data points."""
        found: dict[str, list] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


def checks(risk: float = 0.9, flagged: bool = True) -> list:
    return [
        StaticCheck("risk", "output", values={"risk.score": risk, "risk.flagged": flagged}),
        StaticCheck("size", "output", compute=lambda call: {"size.words": float(len(call.generation.text.split()))}),
    ]


def guard_for(recording: Recording, *, content: bool = False, on_error: str = "abstain", extra=(), **kw) -> Guard:
    policy = loads_policy(POLICY.format(content=str(content).lower(), on_error=on_error))
    return Guard(policy, checks=[*kw.get("checks", checks()), *extra], audit=False, telemetry=recording.telemetry())


@pytest.fixture(autouse=True)
def _declare_probe_signals(monkeypatch):
    """'risk' and 'size' are test checks: register their specs so the policy's rules may read them."""
    from guardrails_uq.checks import CheckSpec, SignalSpec, register, unregister
    from guardrails_uq.policy.schema import CheckConfig

    specs = [
        CheckSpec(
            "risk",
            "output",
            CheckConfig,
            {"risk.score": SignalSpec("number", "r"), "risk.flagged": SignalSpec("bool", "f")},
            lambda c, b, d: None,
            rewrites=frozenset(),
        ),
        CheckSpec(
            "size",
            "output",
            CheckConfig,
            {"size.words": SignalSpec("number", "w")},
            lambda c, b, d: None,
            rewrites=frozenset(),
        ),
    ]
    for spec in specs:
        register(spec)
    yield
    for spec in specs:
        unregister(spec.name)


def test_each_phase_and_check_is_a_span_with_the_guardrail_attributes() -> None:
    recording = Recording()
    guard = guard_for(recording)
    app = recording.tracer_provider.get_tracer("app")
    with app.start_as_current_span("app request") as parent:
        decision = guard.after(SECRET_ANSWER, messages=[Message(role="user", content=SECRET_REQUEST)])
    assert decision.action is Action.ABSTAIN and decision.rule == "risky"
    spans = recording.finished()
    [phase] = spans["apply_guardrail telemetry"]
    [risk] = spans["apply_guardrail risk"]
    [size] = spans["apply_guardrail size"]
    assert phase.parent.span_id == parent.get_span_context().span_id, "the phase nests under the app's span"
    assert risk.parent.span_id == phase.context.span_id and size.parent.span_id == phase.context.span_id
    assert phase.context.trace_id == parent.get_span_context().trace_id
    assert phase.kind is SpanKind.INTERNAL
    attrs = dict(phase.attributes)
    expected = {
        "gen_ai.operation.name": "apply_guardrail",
        "gen_ai.guardian.name": "telemetry",
        "gen_ai.guardian.provider.name": "guardrails-uq",
        "gen_ai.security.target.type": "llm_output",
        "gen_ai.security.policy.name": "telemetry",
        "gen_ai.security.policy.version": policy_version(guard.policy),
        "gen_ai.security.policy.id": "risky",
        "gen_ai.security.decision.type": "deny",
        "guardrails_uq.phase": "output",
        "guardrails_uq.action": "abstain",
        "guardrails_uq.rule": "risky",
        "guardrails_uq.final": True,
        "guardrails_uq.request_id": decision.request_id,
        "guardrails_uq.decision_id": decision.id,
        "guardrails_uq.errors": 0,
        "guardrails_uq.signal.risk.score": 0.9,  # the numbers the deciding rule read
        "guardrails_uq.signal.risk.flagged": True,
    }
    assert attrs == expected, {k: (attrs.get(k), v) for k, v in expected.items() if attrs.get(k) != v} or attrs
    assert "guardrails_uq.signal.size.words" not in attrs, "only what the deciding rule read"
    [event] = phase.events
    assert event.name == "gen_ai.guardrail.result"
    assert dict(event.attributes) == {
        "gen_ai.security.decision.type": "deny",
        "guardrails_uq.action": "abstain",
        "guardrails_uq.rule": "risky",
    }
    assert dict(size.attributes) == {
        "gen_ai.operation.name": "apply_guardrail",
        "gen_ai.guardian.name": "size",
        "guardrails_uq.phase": "output",
    }
    assert size.status.status_code is StatusCode.UNSET and phase.status.status_code is StatusCode.UNSET


def _all_values(recording: Recording) -> list[str]:
    values = []
    for span in recording.spans.get_finished_spans():
        values += [str(v) for v in span.attributes.values()]
        values += [str(v) for event in span.events for v in event.attributes.values()]
        values.append(span.status.description or "")
    return values


def test_message_content_is_recorded_only_when_the_policy_opts_in() -> None:
    for content in (False, True):
        recording = Recording()
        guard = guard_for(recording, content=content)
        before = guard.before([Message(role="user", content=SECRET_REQUEST)])
        guard.after(SECRET_ANSWER, context=before)
        text = " ".join(_all_values(recording))
        assert ("4111" in text) is content, f"content={content}: {text[:300]}"
    phases = recording.finished()["apply_guardrail telemetry"]
    [phase] = [s for s in phases if s.attributes["guardrails_uq.phase"] == "output"]
    assert phase.attributes["gen_ai.security.content.input.value"] == SECRET_REQUEST
    assert phase.attributes["gen_ai.security.content.output.value"] == SECRET_ANSWER


def test_a_failing_check_and_a_timeout_are_errors_on_their_spans() -> None:
    from guardrails_uq.checks import CheckSpec, SignalSpec, register, unregister
    from guardrails_uq.policy.schema import CheckConfig

    release = threading.Event()

    def hang(call: Call) -> dict:
        release.wait(20)
        return {"slow.score": 1.0}

    register(CheckSpec("slow", "output", CheckConfig, {"slow.score": SignalSpec("number", "s")}, lambda c, b, d: None))
    try:
        recording = Recording()
        text = POLICY.format(content="false", on_error="allow") + "slow: {timeout_ms: 20}\n"
        failing = FailingCheck("risk", "output", RuntimeError("model server down: secret 4111"))
        extra = [StaticCheck("size", "output", values={"size.words": 1.0}), StaticCheck("slow", "output", compute=hang)]
        guard = Guard(loads_policy(text), checks=[failing, *extra], audit=False, telemetry=recording.telemetry())
        decision = guard.after("fine")
        release.set()
        assert [e.type for e in decision.errors] == ["RuntimeError", "CheckTimeoutError", "RuleEvaluationError"]
        spans = recording.finished()
        [risk], [slow], [phase] = (
            spans["apply_guardrail risk"],
            spans["apply_guardrail slow"],
            spans["apply_guardrail telemetry"],
        )
        assert risk.status.status_code is StatusCode.ERROR and risk.attributes["error.type"] == "RuntimeError"
        assert slow.status.status_code is StatusCode.ERROR and slow.attributes["error.type"] == "CheckTimeoutError"
        assert slow.attributes["guardrails_uq.check.timeout_ms"] == 20.0
        assert slow.end_time is not None, "a timed-out check's span ends at its timeout, not when (if) it returns"
        assert phase.status.status_code is StatusCode.ERROR and phase.attributes["error.type"] == "RuntimeError"
        assert phase.attributes["guardrails_uq.rule"] == "(on_error)" and phase.attributes["guardrails_uq.errors"] == 3
        assert "4111" not in " ".join(_all_values(recording)), "error texts may quote content: never recorded"
        errors = {
            (p.attributes["check"], p.attributes["error.type"]): p.value
            for p in recording.metrics()["guardrails_uq.errors"]
        }
        assert errors == {
            ("risk", "RuntimeError"): 1,
            ("slow", "CheckTimeoutError"): 1,
            ("rules", "RuleEvaluationError"): 1,
        }
        outcomes = {
            (p.attributes["check"], p.attributes["outcome"])
            for p in recording.metrics()["guardrails_uq.check.duration"]
        }
        assert outcomes == {("risk", "error"), ("slow", "timeout"), ("size", "ok")}
    finally:
        release.set()
        unregister("slow")


def test_concurrent_checks_in_the_async_path_still_nest_under_their_phase() -> None:
    recording = Recording()
    guard = guard_for(recording)
    app = recording.tracer_provider.get_tracer("app")

    async def request() -> None:
        with app.start_as_current_span("async app request"):
            await guard.aafter("short answer")

    asyncio.run(request())
    spans = recording.finished()
    [root], [phase] = spans["async app request"], spans["apply_guardrail telemetry"]
    assert phase.parent.span_id == root.context.span_id
    for name in ("apply_guardrail risk", "apply_guardrail size"):
        [check] = spans[name]
        assert check.parent.span_id == phase.context.span_id and check.context.trace_id == root.context.trace_id


def test_metrics_are_recorded_without_tracing() -> None:
    recording = Recording()
    policy = loads_policy(POLICY.format(content="false", on_error="abstain"))
    guard = Guard(policy, checks=checks(), audit=False, telemetry=recording.telemetry(traces=False))
    guard.after("short answer")
    low = Guard(policy, checks=checks(risk=0.1), audit=False, telemetry=recording.telemetry(traces=False))
    low.after("short answer")
    low.after(" ".join(["word"] * 60))
    assert not recording.spans.get_finished_spans(), "no tracer provider given, none global: no spans"
    found = recording.metrics()
    assert {(p.attributes["phase"], p.value) for p in found["guardrails_uq.requests"]} == {("output", 3)}
    decisions = {(p.attributes["action"], p.attributes["rule"]): p.value for p in found["guardrails_uq.decisions"]}
    assert decisions == {("abstain", "risky"): 1, ("allow", "(default)"): 1, ("escalate", "long"): 1}
    durations = {p.attributes["check"]: p.count for p in found["guardrails_uq.check.duration"]}
    assert durations == {"risk": 3, "size": 3}
    assert all(p.attributes["policy"] == "telemetry" for points in found.values() for p in points)


def test_nothing_is_recorded_when_nothing_is_configured() -> None:
    """OpenTelemetry installed, no provider given or set globally: the Guard has no recorder (no cost)."""
    guard = Guard(loads_policy(POLICY.format(content="false", on_error="abstain")), checks=checks(), audit=False)
    assert guard._telemetry.recorder() is None
    assert guard.after("x").rule == "risky"


BLOCKED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"blocked: {name}")
        return None
sys.meta_path.insert(0, Block())
import asyncio
from guardrails_uq import Guard, PolicyError, loads_policy
from guardrails_uq.telemetry import available
from guardrails_uq.testing import StaticCheck
assert not available()
assert not [m for m in sys.modules if m.startswith("opentelemetry")]
policy = loads_policy('''
version: 1
name: plain
rules: [{name: big, at: output, when: "probe.x > 1.0", action: abstain}]
signals: {probe.x: number}
''')
guard = Guard(policy, audit=False)
assert guard.after("a", signals={"probe.x": 2.0}).rule == "big"
assert asyncio.run(guard.aafter("a", signals={"probe.x": 0.0})).action.value == "allow"
try:
    Guard(loads_policy("version: 1\\nname: o\\ntelemetry: {otel: true}\\n", file="o.yaml"), audit=False)
except PolicyError as exc:
    print("REFUSED", exc)
print("OK")
"""


def test_the_guard_runs_without_opentelemetry_installed() -> None:
    result = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "REFUSED o.yaml: telemetry.otel is true but opentelemetry is not installed" in result.stdout
    assert "pip install 'guardrails-uq[otel]'" in result.stdout


def test_otel_true_without_the_sdk_names_the_extra(monkeypatch) -> None:
    """opentelemetry-api present but not the SDK/exporter: a PolicyError naming the fix, not an ImportError."""
    import builtins

    real = builtins.__import__

    def no_sdk(name, *args, **kwargs):
        if name.startswith("opentelemetry.sdk") or name.startswith("opentelemetry.exporter"):
            raise ImportError(f"blocked {name}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sdk)
    with pytest.raises(PolicyError, match=r"telemetry\.otel needs OpenTelemetry.*\n  fix: install the otel extra"):
        Guard(loads_policy("version: 1\nname: o\ntelemetry: {otel: true}\n", file="o.yaml"), audit=False)


def test_check_spans_record_no_strings_or_lists() -> None:
    """Strings and lists among a check's signals (ids, categories, app text) never become span attributes."""
    recording = Recording()
    texty = StaticCheck("risk", "output", values={"risk.score": 0.1, "risk.flagged": False})
    guard = guard_for(recording, checks=[texty, StaticCheck("size", "output", values={"size.words": 1.0})])
    guard.after("x", signals={"app.tier": "secret-tier-4111"})
    assert "secret-tier-4111" not in " ".join(_all_values(recording))


def test_signals_sent_as_evidence_do_not_leak() -> None:
    recording = Recording()
    leaky = StaticCheck("risk", "output", values={"risk.score": 0.9, "risk.flagged": True}, evidence={"quote": "4111"})
    guard = guard_for(recording, checks=[leaky, StaticCheck("size", "output", values={"size.words": 1.0})])
    guard.after("x")
    assert "4111" not in " ".join(_all_values(recording))


def test_a_call_the_guard_refuses_still_ends_its_phase_span_as_an_error() -> None:
    from guardrails_uq import InputError

    recording = Recording()
    guard = guard_for(recording)
    with pytest.raises(InputError, match=r"app\.unknown"):
        guard.after("x", signals={"app.unknown": 1.0})
    [phase] = recording.finished()["apply_guardrail telemetry"]
    assert phase.status.status_code is StatusCode.ERROR and phase.attributes["error.type"] == "InputError"
    guard.after("x")  # the next call's spans are not children of the failed one
    spans = recording.finished()["apply_guardrail telemetry"]
    assert len(spans) == 2 and spans[1].parent is None


def test_the_decisions_metric_counts_what_the_audit_log_gets() -> None:
    """A stream's prefix checks (record=False) are spans but not Decisions; an escalation's outcome is one."""
    recording = Recording()
    guard = guard_for(recording, checks=checks(risk=0.1))
    guard.after("word " * 60, record=False, partial=True)  # a prefix check of a stream
    [prefix] = recording.finished()["apply_guardrail telemetry"]
    assert prefix.attributes["guardrails_uq.partial"] is True
    assert "guardrails_uq.decisions" not in recording.metrics()
    escalated = guard.after("word " * 60)
    guard.escalate([Message(role="user", content="q")], escalated, target=lambda messages: "short")
    decisions = {
        (p.attributes["action"], p.attributes["rule"]): p.value for p in recording.metrics()["guardrails_uq.decisions"]
    }
    assert decisions == {("escalate", "long"): 2}, "the output phase and the escalation's Decision"
