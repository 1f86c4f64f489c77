"""OpenTelemetry for the Guard: a span per phase and per check, an event per Decision, metrics.

Optional: without ``opentelemetry-api`` (the ``otel`` extra) every function here is a no-op and the Guard
records nothing. With it, a Guard records when the app has configured a tracer provider or a meter provider
(``opentelemetry.trace.set_tracer_provider``...), when its policy says ``telemetry: {otel: true}`` (then
:func:`configure_otlp` sets up OTLP/HTTP export unless the app already has a provider), when the proxy runs
with ``serve --otel``, or when providers are passed in (:class:`Telemetry`). Nothing configured costs two
global reads per phase.

Spans follow the draft GenAI security-guardian conventions (semantic-conventions PR #3233, ``apply_guardrail``):

* phase: ``apply_guardrail {policy}``, child of the caller's current span: ``gen_ai.operation.name``
  ``apply_guardrail``, ``gen_ai.guardian.name`` (the policy), ``gen_ai.guardian.provider.name``
  ``guardrails-uq``, ``gen_ai.security.target.type`` (input ``llm_input``, retrieval ``knowledge_result``,
  output ``llm_output``, tool ``tool_call``), ``gen_ai.security.policy.name`` / ``.version`` (a digest of the
  validated policy) / ``.id`` (the deciding rule), ``gen_ai.security.decision.type`` (allow ``allow``, abstain
  ``deny``, escalate ``modify``: the user gets the larger model's or the review message instead),
  ``guardrails_uq.*``: phase, action, rule (the rule label), final, request_id, decision_id,
  errors, partial (a stream's prefix check), and ``guardrails_uq.signal.<name>`` for each number or bool the
  deciding rule read. On a failure
  that ``on_error`` decided: status ERROR and ``error.type``. One event ``gen_ai.guardrail.result`` per
  Decision with the decision type, action and rule.
* check: ``apply_guardrail {check}``, child of its phase span (current while the check runs, in whichever
  thread): ``gen_ai.operation.name``, ``gen_ai.guardian.name`` (the check), ``guardrails_uq.phase``,
  ``guardrails_uq.check.timeout_ms`` (when set); on failure or timeout status ERROR and ``error.type``
  (``CheckTimeoutError``). Lean on purpose (each attribute costs): the policy's attributes are on the
  parent, the check's signals in the Decision (the audit log), the ones the deciding rule read on the parent.
* Message content (the request, the answer) is recorded only with ``telemetry: {content: true}``
  (``gen_ai.security.content.input.value`` / ``.output.value`` on phase spans); error texts never are.

Metrics (recorded with a meter provider even when no tracer provider is configured), all with ``policy``:
``guardrails_uq.requests`` (requests: Decisions made with no earlier phase as context, by the ``phase`` that
started them), ``guardrails_uq.decisions`` (every Decision the audit log gets: phases, escalations, stream
cuts; by ``phase``, ``action``, ``rule``), ``guardrails_uq.check.duration``
(histogram, seconds, by ``phase``, ``check``, ``outcome`` ok | error | timeout), ``guardrails_uq.errors`` (by
``phase``, ``check``, ``error.type``).

Cost (``bench/otel.py``, BENCHMARKS.md). The counters are observable counters over tallies kept here and the
check durations are recorded into the histogram when the app's reader collects (:class:`_Metrics`), so a
request pays a dict update per count instead of the SDK's per-measurement work. A check span is started only
under a recording phase span: in a trace the sampler drops, a request costs three non-recording phase spans
and the counts. What remains with every trace recorded is mostly the SDK's own cost per span.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import CheckTimeoutError, PolicyError

try:  # the otel extra; without it the Guard records nothing
    from opentelemetry import context as otel_context
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace
    from opentelemetry.metrics._internal import _PROXY_METER_PROVIDER, _ProxyMeterProvider
    from opentelemetry.trace import ProxyTracerProvider, Status, StatusCode
except ImportError:  # pragma: no cover - exercised by a subprocess test with the modules blocked
    otel_trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from .checkrun import CheckRun
    from .checks import Check
    from .decision import Decision
    from .policy import CompiledPolicy

PROVIDER = "guardrails-uq"
TARGETS = {"input": "llm_input", "retrieval": "knowledge_result", "output": "llm_output", "tool": "tool_call"}
DECISION_TYPES = {"allow": "allow", "abstain": "deny", "escalate": "modify"}
RESULT_EVENT = "gen_ai.guardrail.result"
_SCOPE = "guardrails_uq"
_OTEL_FIX = "install the otel extra: pip install 'guardrails-uq[otel]' (opentelemetry-sdk and the OTLP/HTTP exporter)"


def available() -> bool:
    """True when opentelemetry-api can be imported."""
    return otel_trace is not None


class Telemetry:
    """Where a Guard sends spans and metrics: the given providers, else the app's global ones once it sets
    them. Pass one to ``Guard(telemetry=...)`` (tests, apps that keep providers out of the globals)."""

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider


def configure_otlp(endpoint: str | None = None, *, where: str = "--otel") -> bool:
    """Set global tracer and meter providers that export over OTLP/HTTP (``endpoint`` the base URL, else the
    OTEL_EXPORTER_OTLP_* environment variables), unless the app has set its own; True when this set them.
    PolicyError naming ``where`` and the fix when the SDK or exporter is not installed."""
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise PolicyError(f"{where} needs OpenTelemetry ({exc.name} is not installed)", fix=_OTEL_FIX) from None
    with _configure_lock:
        changed = False
        base = endpoint.rstrip("/") if endpoint else None
        resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": PROVIDER})
        if isinstance(otel_trace.get_tracer_provider(), ProxyTracerProvider):
            tracer_provider = TracerProvider(resource=resource)
            exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces" if base else None)
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
            otel_trace.set_tracer_provider(tracer_provider)
            changed = True
        if isinstance(otel_metrics.get_meter_provider(), _ProxyMeterProvider):
            metric_exporter = OTLPMetricExporter(endpoint=f"{base}/v1/metrics" if base else None)
            reader = PeriodicExportingMetricReader(metric_exporter)
            otel_metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
            changed = True
        return changed


_configure_lock = threading.Lock()


def policy_version(policy: CompiledPolicy) -> str:
    """A short digest of the validated policy (changes whenever any setting or rule changes)."""
    return hashlib.sha256(policy.model.model_dump_json().encode()).hexdigest()[:12]


class GuardTelemetry:
    """One Guard's telemetry. :meth:`recorder` is None while nothing records (no opentelemetry, no provider)."""

    def __init__(self, policy: CompiledPolicy, telemetry: Telemetry | None = None) -> None:
        self._policy = policy
        self._given = telemetry
        self._recorder: _Recorder | None = None
        self._lock = threading.Lock()
        settings = policy.model.telemetry
        if settings.otel:
            if otel_trace is None:
                raise PolicyError(
                    "telemetry.otel is true but opentelemetry is not installed", file=policy.file, fix=_OTEL_FIX
                )
            configure_otlp(settings.endpoint, where=f"{policy.file}: telemetry.otel")

    def count(self, decision: Decision) -> None:
        """Count a Decision logged outside a phase (an escalation, a stream cut, an integration's failure)."""
        recorder = self.recorder()
        if recorder is not None:
            recorder.count(decision)

    def recorder(self) -> _Recorder | None:
        """The recorder, once anything records (latched: a global provider, once set, stays set)."""
        recorder = self._recorder
        if recorder is not None or otel_trace is None:
            return recorder
        given = self._given
        if given is None and (
            isinstance(otel_trace.get_tracer_provider(), ProxyTracerProvider)
            and isinstance(otel_metrics.get_meter_provider(), _ProxyMeterProvider)
        ):
            return None
        with self._lock:
            if self._recorder is None:
                self._recorder = _Recorder(self._policy, given)
            return self._recorder


def _numbers(prefix: str, values: Any) -> dict[str, Any]:
    """The numbers and bools of a signal map as span attributes (strings and lists may hold content)."""
    return {
        f"{prefix}{name}": value
        for name, value in values.items()
        if isinstance(value, bool | int | float) and value == value  # NaN is not an attribute value
    }


class _Recorder:
    """Spans and instruments of one Guard (OpenTelemetry present and something records)."""

    def __init__(self, policy: CompiledPolicy, given: Telemetry | None) -> None:
        from . import __version__

        tracer_provider = given.tracer_provider if given is not None else None
        meter_provider = given.meter_provider if given is not None else None
        # a provider not given is the global one (a proxy until the app sets it, then the app's)
        self.tracer = (tracer_provider or otel_trace.get_tracer_provider()).get_tracer(_SCOPE, __version__)
        # the global provider through its proxy, whether the app set it before or after this Guard: every
        # Guard on the globals shares one set of instruments (a second set on the same meter would be ignored)
        self.metrics = _Metrics.of(meter_provider if meter_provider is not None else _PROXY_METER_PROVIDER)
        self.policy = policy.name
        self.content = policy.model.telemetry.content
        self.check_spans = policy.model.telemetry.check_spans
        self._phase_attrs: dict[str, dict[str, Any]] = {}
        self._span_name = f"apply_guardrail {policy.name}"
        self._check_spans: dict[tuple[str, str, float | None], tuple[str, dict[str, Any]]] = {}
        self.base = {
            "gen_ai.operation.name": "apply_guardrail",
            "gen_ai.guardian.provider.name": PROVIDER,
            "gen_ai.security.policy.name": policy.name,
            "gen_ai.security.policy.version": policy_version(policy),
        }

    def phase(self, phase: str) -> _PhaseSpan:
        """The phase span (a context manager): current inside the block, so check spans become its children."""
        attributes = self._phase_attrs.get(phase)
        if attributes is None:
            attributes = self._phase_attrs[phase] = {
                **self.base,
                "gen_ai.guardian.name": self.policy,
                "gen_ai.security.target.type": TARGETS.get(phase, phase),
                "guardrails_uq.phase": phase,
            }
        return _PhaseSpan(self.tracer.start_span(self._span_name, attributes=attributes))

    def count(self, decision: Decision, *, first: bool = False) -> None:
        """Count a logged Decision in the metrics (``first``: the request's first phase, also a request)."""
        self.metrics.count(self.policy, decision, first=first)

    def decided(self, span: Any, decision: Decision, *, first: bool, record: bool) -> None:
        """Record ``decision`` on its phase span (attributes, the result event) and, when it is logged
        (``record``; a stream's prefix checks are not), in the metrics."""
        action, label = decision.action.value, decision.rule_label
        if record:
            self.count(decision, first=first)
        if not span.is_recording():
            return
        reads = _numbers("guardrails_uq.signal.", decision.inputs)
        result = {
            "gen_ai.security.decision.type": DECISION_TYPES[action],
            "guardrails_uq.action": action,
            "guardrails_uq.rule": label,
        }
        attributes = {
            **result,
            **reads,
            "guardrails_uq.final": decision.final,
            "guardrails_uq.request_id": decision.request_id,
            "guardrails_uq.decision_id": decision.id,
            "guardrails_uq.errors": len(decision.errors),
        }
        if decision.rule:
            attributes["gen_ai.security.policy.id"] = decision.rule
        if self.content:
            request = decision.metadata.get("request")
            if isinstance(request, str):
                attributes["gen_ai.security.content.input.value"] = request
            if decision.generated is not None:
                attributes["gen_ai.security.content.output.value"] = decision.generated
        if decision.metadata.get("partial"):
            attributes["guardrails_uq.partial"] = True
        if decision.errors:
            failed = decision.errors[0]
            attributes["error.type"] = failed.type
            span.set_status(Status(StatusCode.ERROR, f"{failed.check}: {failed.type}"))
        span.set_attributes(attributes)
        span.add_event(RESULT_EVENT, result)

    def check(self, check: Check, timeout_ms: float | None) -> _CheckTrace:
        """A check span, started now as a child of the current (phase) span; none when that span is not
        recording (a trace the sampler dropped: its children would be dropped too), the duration is still
        measured; none either with ``telemetry: {check_spans: false}``. Policy attributes are the parent's: a
        check span carries what identifies the check."""
        if not self.check_spans or not otel_trace.get_current_span().is_recording():
            return _CheckTrace(self, None, check)
        key = (check.name, check.phase, timeout_ms)
        cached = self._check_spans.get(key)
        if cached is None:
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "apply_guardrail",
                "gen_ai.guardian.name": check.name,
                "guardrails_uq.phase": check.phase,
            }
            if timeout_ms is not None:
                attributes["guardrails_uq.check.timeout_ms"] = timeout_ms
            cached = self._check_spans[key] = (f"apply_guardrail {check.name}", attributes)
        return _CheckTrace(self, self.tracer.start_span(cached[0], attributes=cached[1]), check)


class _Current:
    """``span`` as the current span inside the block (a plain attach/detach, cheaper than ``use_span``)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Any) -> None:
        self._span = span

    def __enter__(self) -> Any:
        self._token = otel_context.attach(otel_trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        otel_context.detach(self._token)


class _PhaseSpan(_Current):
    """A phase's span: current inside the block and ended on leaving it; an exception leaving the block (an app
    signal's error: the Guard never raises from a check) marks it an error."""

    __slots__ = ()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        super().__exit__(kind, exc, tb)
        span = self._span
        if kind is not None:
            span.set_attribute("error.type", kind.__name__)
            span.set_status(Status(StatusCode.ERROR, kind.__name__))
        span.end()


_NOTHING_CURRENT = contextlib.nullcontext()


class _CheckTrace:
    """One check's span (None when the phase's trace is not sampled): current around its run; ended once,
    with the duration measured once (by the run, or by its timeout if that comes first)."""

    __slots__ = ("_check", "_once", "_recorder", "_span")

    def __init__(self, recorder: _Recorder, span: Any, check: Check) -> None:
        self._recorder, self._span, self._check = recorder, span, check
        self._once = threading.Lock()

    def activate(self) -> Any:
        return _NOTHING_CURRENT if self._span is None else _Current(self._span)

    def finish(self, run: CheckRun) -> None:
        if not self._once.acquire(blocking=False):
            return  # the other of (run, timeout) came first
        error = run.error
        outcome = "ok" if error is None else "timeout" if isinstance(error, CheckTimeoutError) else "error"
        self._recorder.metrics.check_ran(self._recorder.policy, self._check, outcome, run.elapsed_ms / 1e3)
        span = self._span
        if span is None:
            return
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, f"{self._check.name}: {type(error).__name__}"))
        if run.finished:  # the run's own end (a worker's result may be read later), on the span's clock
            span.end(end_time=time.time_ns() - int((time.perf_counter() - run.finished) * 1e9))
        else:
            span.end()


class _Metrics:
    """The Guard's instruments, light on the request path: the counters are tallied here and reported by
    observable counters when the app's reader collects; check durations wait in a queue and are recorded
    into the histogram at that collection (before the reader reads it). A request thus pays a dict update
    and a queue append instead of the SDK's per-measurement work (attribute hashing, exemplar sampling, locks:
    12-18 us per measurement on the benchmark machine). Past ``max_pending`` queued durations (no reader
    collects), each new one records the oldest at once: memory stays bounded and nothing is dropped.
    Durations are recorded without exemplars (no span is current at collection). One per meter provider
    (:meth:`of`), shared by every Guard that records to it: an observable instrument's name is registered once
    per meter, so the tallies of all policies go through one set of callbacks (``policy`` tells them apart)."""

    max_pending = 65_536
    _by_provider: ClassVar[weakref.WeakKeyDictionary[Any, _Metrics]] = weakref.WeakKeyDictionary()
    _by_provider_lock = threading.Lock()

    @classmethod
    def of(cls, meter_provider: Any) -> _Metrics:
        """The instruments on ``meter_provider``, created on first use."""
        from . import __version__

        with cls._by_provider_lock:
            found = cls._by_provider.get(meter_provider)
            if found is None:
                found = cls._by_provider[meter_provider] = cls(meter_provider.get_meter(_SCOPE, __version__))
            return found

    def __init__(self, meter: Any) -> None:
        self._attributes: dict[tuple[str, ...], dict[str, str]] = {}
        self._tallies: dict[str, dict[tuple[str, ...], int]] = {"requests": {}, "decisions": {}, "errors": {}}
        self._lock = threading.Lock()
        self._durations: collections.deque[tuple[float, dict[str, str]]] = collections.deque()
        self.check_duration = meter.create_histogram(
            "guardrails_uq.check.duration", unit="s", description="Time of one check run"
        )
        for name, description in (
            ("requests", "Requests (first phases)"),
            ("decisions", "Decisions by action and rule"),
            ("errors", "Check and rule failures"),
        ):
            meter.create_observable_counter(
                f"guardrails_uq.{name}", callbacks=[functools.partial(self._observe, name)], description=description
            )

    def attributes(self, *key: str) -> dict[str, str]:
        """Metric attributes, built once per distinct key."""
        found = self._attributes.get(key)
        if found is None:
            kind, policy, phase, *rest = key
            found = {"policy": policy, "phase": phase}
            if kind == "decisions":
                found.update(action=rest[0], rule=rest[1])
            elif kind == "check":
                found.update(check=rest[0], outcome=rest[1])
            elif kind == "errors":
                found.update({"check": rest[0], "error.type": rest[1]})
            self._attributes[key] = found
        return found

    def _add(self, key: tuple[str, ...]) -> None:
        self.attributes(*key)
        tally = self._tallies[key[0]]
        with self._lock:
            tally[key] = tally.get(key, 0) + 1

    def count(self, policy: str, decision: Decision, *, first: bool = False) -> None:
        """Count a Decision of ``policy`` (``first``: the request's first phase, also a request)."""
        phase = decision.phase
        if first:
            self._add(("requests", policy, phase))
        self._add(("decisions", policy, phase, decision.action.value, decision.rule_label))
        for failure in decision.errors:
            self._add(("errors", policy, phase, failure.check, failure.type))

    def check_ran(self, policy: str, check: Check, outcome: str, seconds: float) -> None:
        """Queue one check's duration for the histogram."""
        pending = self._durations
        pending.append((seconds, self.attributes("check", policy, check.phase, check.name, outcome)))
        if len(pending) > self.max_pending:
            self._record(1)

    def _record(self, most: int | None = None) -> None:
        """Record queued durations into the histogram, oldest first (all of them, or ``most``)."""
        pending, record = self._durations, self.check_duration.record
        while most is None or most > 0:
            try:
                seconds, attributes = pending.popleft()
            except IndexError:
                return
            record(seconds, attributes)
            if most is not None:
                most -= 1

    def _observe(self, name: str, options: Any) -> list[Any]:
        """An observable counter's callback: flush the queued durations first (this runs inside the reader's
        collection, before it reads the histogram), then report the tallies."""
        self._record()
        with self._lock:
            totals = list(self._tallies[name].items())
        return [otel_metrics.Observation(value, self._attributes[key]) for key, value in totals]
