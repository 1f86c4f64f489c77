"""The Guard: builds checks from a policy, runs a phase's checks, applies the phase's rules, logs Decisions.

Phases, in order: ``input`` (:meth:`Guard.before`), ``retrieval`` (:meth:`Guard.retrieve`), ``output``
(:meth:`Guard.after`), and in agents ``tool`` (:meth:`Guard.tool`, before each tool the model called runs).
After a phase's checks run, its rules are evaluated in order and the first match decides. When none matches, an input or retrieval phase returns a provisional ``allow`` (``rule`` None:
carry on), and the output phase (or the last phase :meth:`Guard.check` runs) returns the policy's
``default``. A check that raises makes the phase decide ``on_error`` (fail closed by default) with the
error recorded in the Decision; with ``on_error: allow`` the rules still run on the signals that exist,
except after a :class:`~.errors.HostileInputError` (input built to exhaust a check, tool-call arguments that
are not a JSON object), which abstains whatever ``on_error`` says; so does a tool rule that fails on the
call's values (the model wrote them). Shadow rules never decide; a ``mode: shadow`` policy records what it would have decided,
failures included, in ``Decision.shadow`` and allows (README, "Shadow mode").

One Guard is safe to share between threads and asyncio tasks: it holds no per-call state, checks are
required to be thread-safe, and the audit log serialises its writes. The ``a*`` methods run the same code
in a worker thread so the event loop never blocks, with the checks of a phase that do not depend on each
other run at once (same Decision as sequential). A check's ``timeout_ms`` bounds its run on both paths
(:mod:`.checkrun`): on expiry its signals are missing and ``on_error`` decides, the timeout recorded.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .audit import AuditLog, open_audit
from .call import Call, Generation, Message, ScoredDocument, ToolCall
from .checkrun import CheckRunner, concurrently, rewritten
from .checks import Check, CheckDeps
from .decision import Action, CheckFailure, Decision, new_id
from .embeddings import as_embedder
from .errors import CheckError, HostileInputError, InputError
from .policy import CompiledPolicy, load_policy
from .policy.outcome import Outcome, match_phase, shadow_record
from .telemetry import GuardTelemetry, Telemetry
from .tools import approval_prompt, approved, tool_checks
from .types import PHASES, Evidence, Phase, SignalMap

_COERCE: dict[str, tuple[type, ...]] = {
    "number": (int, float),
    "integer": (int,),
    "bool": (bool,),
    "string": (str,),
    "list": (list, tuple),
}


class Guard:
    """Runs a policy's checks and rules around an app's model and retrieval calls."""

    def __init__(
        self,
        policy: CompiledPolicy,
        *,
        embedder: Any = None,
        audit: AuditLog | bool = True,
        checks: Sequence[Check] | None = None,
        escalate_to: Any = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        """Build every check the policy configures (or use ``checks``, for tests and custom wiring).

        ``embedder`` is shared by every check that embeds text (default: the packaged MiniLM, loaded on
        first use). ``audit=True`` opens the log the policy names; False disables logging; an AuditLog
        object is used as is. ``escalate_to`` (a model with ``generate(messages)``, or a callable
        ``messages -> Generation | str``) overrides the policy's escalation target. ``telemetry`` names the
        OpenTelemetry providers to record to (default: the app's global ones, once set; :mod:`.telemetry`).
        """
        self.policy = policy
        self._deps = CheckDeps(embedder=as_embedder(embedder))
        if checks is None:
            checks = [
                spec.build(policy.section(spec.name), policy.base_dir, self._deps)
                for spec in policy.configured_checks()
            ]
        self._checks: dict[Phase, tuple[Check, ...]] = {
            phase: tuple(c for c in checks if c.phase == phase) for phase in PHASES
        }
        injection = next((c for c in checks if c.name == "injection"), None)
        self._checks["tool"] = (*self._checks["tool"], *tool_checks(injection))
        self._telemetry = GuardTelemetry(policy, telemetry)
        every = [check for phase_checks in self._checks.values() for check in phase_checks]
        self._runner = CheckRunner.for_checks(every, _timeouts_ms(policy, every), self._validate_result)
        self._declared = {name: spec.type for name, spec in policy.catalogue.items() if spec.source == "app"}
        self._expected = {name: info.source for name, info in policy.catalogue.items() if info.source != "app"}
        self._escalate_to = escalate_to
        self._owns_escalation = False
        if escalate_to is None and policy.model.escalation is not None and policy.model.escalation.model is not None:
            from .models.openai_compat import OpenAIChatModel

            self._escalate_to = OpenAIChatModel.from_endpoint(policy.model.escalation.model)
            self._owns_escalation = True
        if audit is True:
            section = policy.model.audit
            self.audit: AuditLog | None = (
                open_audit(policy.resolve(section.path), fsync=section.fsync) if section else None
            )
        elif audit is False:
            self.audit = None
        else:
            self.audit = audit

    @classmethod
    def from_policy(
        cls, path: str | Path, *, embedder: Any = None, audit: AuditLog | bool = True, escalate_to: Any = None
    ) -> Guard:
        """Load the policy at ``path`` (PolicyError on any problem) and build its checks."""
        return cls(load_policy(path), embedder=embedder, audit=audit, escalate_to=escalate_to)

    @property
    def checks(self) -> dict[Phase, tuple[Check, ...]]:
        """The checks run in each phase."""
        return dict(self._checks)

    def with_checks(self, replacements: Mapping[str, Check]) -> Guard:
        """A Guard sharing this one's policy, audit log and escalation target, with the checks named in
        ``replacements`` replaced (same name, same phase): e.g. a stream's incremental views of its checks."""
        twin = copy.copy(self)
        twin._checks = {
            phase: tuple(replacements.get(c.name, c) for c in checks) for phase, checks in self._checks.items()
        }
        twin._owns_escalation = False  # closing the twin never closes the shared client
        return twin

    # -- phases -------------------------------------------------------------------------------------------

    def before(
        self,
        messages: Sequence[Message],
        *,
        signals: SignalMap | None = None,
        context: Decision | None = None,
        request_id: str | None = None,
        record: bool = True,
    ) -> Decision:
        """Input phase: guideline injection and input rules. ``decision.messages`` is the prompt to send.
        ``request_id`` names the request (default: the context's, else a fresh one). ``record=False``: not
        logged (the caller logs it with :meth:`record` if it keeps it, as for :meth:`after`)."""
        call = Call(messages=list(messages), signals=signals or {})
        return self._phase("input", call, context, final=False, record=record, request_id=request_id)

    def retrieve(
        self,
        query: str,
        documents: Sequence[ScoredDocument],
        *,
        signals: SignalMap | None = None,
        context: Decision | None = None,
        request_id: str | None = None,
    ) -> Decision:
        """Retrieval phase: conformal filtering and retrieval rules. ``decision.documents`` are the kept chunks."""
        call = Call(query=query, documents=list(documents), signals=signals or {})
        return self._phase("retrieval", call, context, final=False, request_id=request_id)

    def after(
        self,
        generation: Generation | str,
        *,
        messages: Sequence[Message] = (),
        documents: Sequence[ScoredDocument] | None = None,
        signals: SignalMap | None = None,
        context: Decision | None = None,
        record: bool = True,
        request_id: str | None = None,
        partial: bool = False,
    ) -> Decision:
        """Output phase: provenance, uncertainty and grounding checks, output rules, then the policy default.

        The evidence grounding reads is ``documents``, else the chunks the context's retrieval phase kept.
        ``record=False`` skips the audit log; ``partial=True`` marks a streamed prefix (checks may wait for a
        sentence to end; ``metadata["partial"]``)."""
        if isinstance(generation, str):
            generation = Generation(text=generation)
        if documents is None and context is not None:
            documents = context.documents
        call = Call(
            messages=list(messages),
            documents=list(documents) if documents is not None else None,
            generation=generation,
            signals=signals or {},
            metadata={"partial": True} if partial else {},
        )
        return self._phase("output", call, context, final=True, record=record, request_id=request_id)

    def tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | str,
        *,
        call_id: str | None = None,
        signals: SignalMap | None = None,
        context: Decision | None = None,
        request_id: str | None = None,
    ) -> Decision:
        """Tool phase, before the tool ``name`` runs: ``tool.name``, ``tool.arguments`` (decoded; JSON text is
        parsed; anything but a JSON object fails closed) and the injection check's reading of the arguments,
        beside the request's signals (``context``: the request's latest Decision; ``signals``: app signals).

        ``allow``: the tool may run (no rule matched: a provisional allow, ``final`` False). ``abstain``: it must
        not run; the model reads ``decision.message`` as the tool's result. ``escalate``: pass the Decision to
        :meth:`approve_tool`. A tool Decision is the verdict on this call only (``final`` is always False): it
        never ends the request, nor is it the request's verdict in the audit log; callers do not pass it as the
        context of the request's later phases."""
        call = Call(
            tool=ToolCall(
                name=name, arguments=arguments if isinstance(arguments, str) else dict(arguments), id=call_id
            ),
            signals=signals or {},
        )
        return self._phase("tool", call, context, final=False, request_id=request_id)

    @property
    def guards_tools(self) -> bool:
        """True when the policy has tool rules: integrations run :meth:`tool` before each tool call only then
        (without them the phase could decide nothing, and each call would log a Decision for nothing)."""
        return bool(self.policy.phases["tool"].rules)

    def approve_tool(self, decision: Decision, *, messages: Sequence[Message] = (), target: Any = None) -> Decision:
        """After a tool Decision escalated: ask the escalation target (``target``, else the Guard's: a larger
        model, or a callable standing for a human reviewer) to approve the call; the reply must be the
        word APPROVE alone (:func:`~.tools.approved`). Approved: allow; denied: abstain (``messages.abstain``); no
        target: the Decision stays escalate (``messages.escalate``: the call waits for review and does not
        run); a target that fails: ``on_error``. Recorded in ``evidence["escalation"]`` (target, approved,
        reply) and logged, under the request's id. InputError for a Decision that is not an escalated tool call."""
        if decision.phase != "tool" or decision.action is not Action.ESCALATE:
            raise InputError(
                f"approve_tool takes a tool-phase Decision that escalated, got {decision.action.value} at "
                f"{decision.phase!r}: pass the Decision Guard.tool returned when its action is escalate",
                source="decision",
            )
        started = time.perf_counter()
        target = target if target is not None else self._escalate_to
        name, arguments = decision.signals.get("tool.name"), decision.signals.get("tool.arguments")
        record: dict[str, object] = {
            "reason": decision.rule,
            "tool": name,
            "target": _target_name(target),
            "approved": None,
        }
        errors = list(decision.errors)
        texts = self.policy.model.messages
        action: Action = Action.ESCALATE
        message: str | None = decision.message or texts.escalate
        if target is None:
            record["note"] = "no escalation target is configured (escalation.model or escalate_to=): waiting for review"
        else:
            request = decision.metadata.get("request")
            prompt = approval_prompt(
                str(name), arguments, rule=decision.rule, request=str(request) if request else None, messages=messages
            )
            try:
                reply = _ask(target, prompt).text
            except Exception as exc:
                errors.append(CheckFailure(check="escalation", phase="tool", error=str(exc), type=type(exc).__name__))
                action = _on_error(self.policy.model.on_error, exc)
                message = _message_for(self.policy, action, True)
            else:
                record["approved"], record["answer"] = approved(reply), reply
                action, message = (Action.ALLOW, None) if record["approved"] else (Action.ABSTAIN, texts.abstain)
        result = decision.model_copy(
            update={
                "id": new_id(),
                "time": time.time(),
                "action": action,
                "final": False,  # the call's verdict, not the request's
                "message": message,
                "errors": errors,
                "evidence": {**decision.evidence, "escalation": record},
                "timings_ms": {**decision.timings_ms, "escalation": (time.perf_counter() - started) * 1e3},
            }
        )
        if self.audit is not None:
            self.audit.write(result)
        return result

    def check(self, call: Call) -> Decision:
        """Run every phase the call has data for (input: messages or query; retrieval: documents; output:
        generation; tool: a tool call), carrying signals forward; stop at the first phase whose rules decide,
        except that a call with a generation always reaches the output phase unless an earlier phase blocked it."""
        phases = self._phases_of(call)
        decision: Decision | None = None
        for index, phase in enumerate(phases):
            if decision is not None:
                call = rewritten(call, decision)  # the injected prompt and kept chunks replace the originals
            decision = self._phase(phase, call, decision, final=index == len(phases) - 1)
            # an early allow never ends the call when it carries a generation: its output phase must see it
            if decision.final and (decision.action is not Action.ALLOW or call.generation is None):
                break
        assert decision is not None  # _phases_of never returns an empty list
        return decision

    def escalate(
        self, messages: Sequence[Message], decision: Decision, *, original: str | None = None, target: Any = None
    ) -> Decision:
        """Run the escalation target on ``messages`` after ``decision`` escalated; the returned Decision
        carries the target's answer in ``answer`` and both answers and the reason in ``evidence["escalation"]``.
        With no target (none configured, none passed) the Decision stays escalate with the policy's
        ``messages.escalate`` and ``evidence["escalation"]["target"]`` None: the request waits for review.
        The target's answer passes the output phase like any other (``evidence["escalation"]["review"]``): a
        blocked answer makes the Decision abstain; one that escalates again is withheld (escalate, no
        ``answer``: human review). A target that fails yields the policy's on_error action, error recorded.
        ``target`` overrides the Guard's escalation target for this call."""
        started = time.perf_counter()
        target = target if target is not None else self._escalate_to
        record: dict[str, object] = {"reason": decision.rule, "original": original, "target": _target_name(target)}
        errors = list(decision.errors)
        answer: str | None = None
        failed = False
        review: Decision | None = None
        if target is None:
            record["note"] = "no escalation target is configured (escalation.model or escalate_to=)"
        else:
            try:
                generation = _ask(target, list(messages))
                answer = generation.text
                record["answer"] = answer
            except Exception as exc:
                failed = True
                answer = None
                errors.append(CheckFailure(check="escalation", phase="output", error=str(exc), type=type(exc).__name__))
            else:
                review = self._review(messages, generation, decision)
                record["review"] = {"action": review.action.value, "rule": review.rule_label, "inputs": review.inputs}
                if review.action is not Action.ALLOW:  # the larger model's answer did not pass either
                    answer = None
                    errors.extend(review.errors)
        if failed:
            action, message = self.policy.model.on_error, _message_for(self.policy, self.policy.model.on_error, True)
        elif review is not None and review.action is Action.ABSTAIN:
            record["note"] = "the escalated answer was blocked by the output phase"
            action, message = Action.ABSTAIN, review.message or self.policy.model.messages.abstain
            decision = decision.model_copy(update={"rule": review.rule})
        else:
            if review is not None and review.action is Action.ESCALATE:
                record["note"] = "the escalated answer escalated again: withheld for human review"
            action, message = Action.ESCALATE, decision.message or self.policy.model.messages.escalate
        result = decision.model_copy(
            update={
                "id": new_id(),
                "time": time.time(),
                "phase": "output",
                "action": action,
                "final": True,
                "answer": answer,
                "message": message,
                "errors": errors,
                "evidence": {**decision.evidence, "escalation": record},
                "shadow": None,  # the Decision that escalated holds it (logged once)
                "timings_ms": {**decision.timings_ms, "escalation": (time.perf_counter() - started) * 1e3},
            }
        )
        if self.audit is not None:
            self.audit.write(result)
        self._telemetry.count(result)
        return result

    def _review(self, messages: Sequence[Message], generation: Generation, decision: Decision) -> Decision:
        """The output phase on an escalation target's answer (not logged on its own: the escalation Decision
        records it), with the earlier phases' signals as context. Every answer a user reads passes it."""
        call = Call(messages=list(messages), generation=generation)
        context = decision.model_copy(update={"final": False})  # a context to read, not a verdict to repeat
        return self._phase("output", call, context, final=True, record=False)

    async def aescalate(self, messages: Sequence[Message], decision: Decision, **kwargs: Any) -> Decision:
        """:meth:`escalate` in a worker thread."""
        return await asyncio.to_thread(concurrently, self.escalate, messages, decision, **kwargs)

    async def atool(self, name: str, arguments: Mapping[str, Any] | str, **kwargs: Any) -> Decision:
        """:meth:`tool` in a worker thread."""
        return await asyncio.to_thread(self.tool, name, arguments, **kwargs)

    async def aapprove_tool(self, decision: Decision, **kwargs: Any) -> Decision:
        """:meth:`approve_tool` in a worker thread."""
        return await asyncio.to_thread(self.approve_tool, decision, **kwargs)

    async def abefore(self, messages: Sequence[Message], **kwargs: Any) -> Decision:
        """:meth:`before` in a worker thread (inline when the phase has no checks: rules take microseconds)."""
        if not self._checks["input"]:
            return self.before(messages, **kwargs)
        return await asyncio.to_thread(concurrently, self.before, messages, **kwargs)

    async def aretrieve(self, query: str, documents: Sequence[ScoredDocument], **kwargs: Any) -> Decision:
        """:meth:`retrieve` in a worker thread (inline when the phase has no checks)."""
        if not self._checks["retrieval"]:
            return self.retrieve(query, documents, **kwargs)
        return await asyncio.to_thread(concurrently, self.retrieve, query, documents, **kwargs)

    async def aafter(self, generation: Generation | str, **kwargs: Any) -> Decision:
        """:meth:`after` in a worker thread."""
        return await asyncio.to_thread(concurrently, self.after, generation, **kwargs)

    async def acheck(self, call: Call) -> Decision:
        """:meth:`check` in a worker thread."""
        return await asyncio.to_thread(concurrently, self.check, call)

    def close(self) -> None:
        """Close the audit log and the escalation client the Guard made from the policy (idempotent)."""
        if self.audit is not None:
            self.audit.close()
        if self._owns_escalation and hasattr(self._escalate_to, "close"):
            self._escalate_to.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        names = [c.name for phase in PHASES for c in self._checks[phase]]
        return f"Guard(policy={self.policy.name!r}, checks={names}, audit={self.audit!r})"

    # -- internals ----------------------------------------------------------------------------------------

    def _phases_of(self, call: Call) -> list[Phase]:
        phases: list[Phase] = []
        if call.messages or call.query is not None:
            phases.append("input")
        if call.documents is not None:
            phases.append("retrieval")
        if call.generation is not None:
            phases.append("output")
        if call.tool is not None:
            phases.append("tool")
        return phases or ["input"]

    def _app_signals(self, given: SignalMap) -> SignalMap:
        """The app's signals, checked against the policy's declarations; InputError naming every problem."""
        clean: SignalMap = {}
        problems: list[str] = []
        for name, value in given.items():
            kind = self._declared.get(name)
            if kind is None:
                known = ", ".join(sorted(self._declared)) or "none declared"
                problems.append(
                    f"signal {name!r} is not declared in the policy's 'signals' section (declared: {known}); "
                    "fix: declare it there or leave it out"
                )
                continue
            ok = isinstance(value, _COERCE[kind]) and (kind == "bool" or not isinstance(value, bool))
            if not ok and value is not None:
                problems.append(f"signal {name!r} must be a {kind}, got {type(value).__name__} {value!r}")
                continue
            clean[name] = float(value) if kind == "number" and isinstance(value, int) else value
        if problems:
            raise InputError("; ".join(problems), source="call.signals")
        return clean

    @property
    def embedder(self) -> Any:
        """The embedder every check of this Guard shares (integrations score tool results with it)."""
        return self._deps.embedder

    def failure(
        self,
        phase: Phase,
        where: str,
        error: BaseException | str,
        *,
        context: Decision | None = None,
        request_id: str | None = None,
        record: bool = True,
    ) -> Decision:
        """The ``on_error`` Decision for something an integration or the proxy could not check (``where`` names
        it; ``error`` says why), carrying the request id, signals and request text of ``context``; logged
        unless ``record`` is False. One function, so every caller fails closed the same way."""
        action = _on_error(self.policy.model.on_error, error)
        text = error if isinstance(error, str) else str(error)
        detail = getattr(error, "detail", "")
        decision = Decision(
            policy=self.policy.name,
            phase=phase,
            action=action,
            message=_message_for(self.policy, action, True),
            signals=dict(context.signals) if context is not None else {},
            errors=[
                CheckFailure(
                    check=where,
                    phase=phase,
                    error=f"{text}: {detail}" if detail else text,
                    type="InputError" if isinstance(error, str) else type(error).__name__,
                )
            ],
            metadata={"request": context.metadata["request"]} if context and "request" in context.metadata else {},
            request_id=request_id or (context.request_id if context is not None else new_id()),
        )
        if record:
            self.record(decision)
        return decision

    def record(self, decision: Decision) -> None:
        """Append a Decision to the audit log (for decisions made by integrations, e.g. a cut stream)."""
        if self.audit is not None:
            self.audit.write(decision)
        self._telemetry.count(decision)

    def _phase(
        self,
        phase: Phase,
        call: Call,
        context: Decision | None,
        *,
        final: bool,
        record: bool = True,
        request_id: str | None = None,
    ) -> Decision:
        """:meth:`_decide`, inside the phase's span when OpenTelemetry records (:mod:`.telemetry`)."""
        recorder = self._telemetry.recorder()
        if recorder is None:
            return self._decide(phase, call, context, final=final, record=record, request_id=request_id)
        with recorder.phase(phase) as span:
            decision = self._decide(phase, call, context, final=final, record=record, request_id=request_id)
            recorder.decided(span, decision, first=context is None, record=record)
        return decision

    def _decide(
        self,
        phase: Phase,
        call: Call,
        context: Decision | None,
        *,
        final: bool,
        record: bool = True,
        request_id: str | None = None,
    ) -> Decision:
        if request_id is None and context is not None:
            request_id = context.request_id
        if context is not None and context.final and context.action is not Action.ALLOW:
            return self._carried(phase, call, context, request_id, record)
        started = time.perf_counter()
        signals: SignalMap = dict(context.signals) if context is not None else {}
        signals.update(self._app_signals(call.signals))
        if phase == "output" and call.generation is not None:
            signals["output.kind"] = call.generation.kind
        evidence: dict[str, Evidence] = dict(context.evidence) if context is not None else {}
        timings: dict[str, float] = {}
        errors: list[CheckFailure] = []
        on_error = self.policy.model.on_error
        messages: list[Message] | None = None
        documents: list[ScoredDocument] | None = None
        for ran in self._runner.run(self._checks[phase], call, observer=self._telemetry.recorder()):
            check, result = ran.check, ran.signals
            if result is None:
                exc = ran.error
                assert exc is not None  # a run without signals carries its error
                errors.append(CheckFailure(check=check.name, phase=phase, error=str(exc), type=type(exc).__name__))
                on_error = _on_error(on_error, exc)
            else:
                signals.update(result.values)
                if result.evidence:
                    evidence[check.name] = result.evidence
                if result.messages is not None:
                    messages = result.messages
                if result.documents is not None:
                    documents = result.documents
                call = rewritten(call, result)
            timings[check.name] = ran.elapsed_ms
        if phase == "retrieval" and documents is None and call.documents is not None:
            documents = list(call.documents)  # no check filtered: every chunk is kept (the output's evidence)
        t0 = time.perf_counter()
        model = self.policy.model
        provisional = False
        action: Action
        rule: str | None
        message: str | None
        reads: SignalMap
        shadow: Outcome | None = None
        failed = bool(errors) and on_error is not Action.ALLOW
        if failed:
            action, rule, message, reads = on_error, None, _message_for(self.policy, on_error, True), {}
        else:
            outcome, shadow = match_phase(self.policy, phase, signals)
            if outcome is not None and outcome.error is not None:
                # recorded as (on_error), not under the rule's name: the rule did not decide, its failure did
                errors.append(
                    CheckFailure(
                        check="rules",
                        phase=phase,
                        error=f"rule {outcome.rule!r}: {outcome.error.problem}",
                        type="RuleEvaluationError",
                    )
                )
                action, rule, message, reads = outcome.action, None, outcome.message, {}
                if phase == "tool" and action is Action.ALLOW:  # the call's values (the model's) broke the rule
                    action, message = Action.ABSTAIN, _message_for(self.policy, Action.ABSTAIN, True)
            elif outcome is not None:
                action, rule, message, reads = outcome.action, outcome.rule, outcome.message, outcome.reads
            elif final:
                action, rule, message, reads = (
                    model.default,
                    None,
                    _message_for(self.policy, model.default, False),
                    {},
                )
            else:
                action, rule, message, reads = Action.ALLOW, None, None, {}
                provisional = True
        shadowed = shadow_record(self.policy, shadow, action, errors if failed else ())
        if self.policy.observe_only:  # a shadow policy enforces nothing (README, "Shadow mode")
            action, rule, message, reads, provisional = Action.ALLOW, None, None, {}, not final
        if action is Action.ESCALATE and message is None:
            message = model.messages.escalate  # what the user reads until (or unless) a target answers
        timings["rules"] = (time.perf_counter() - t0) * 1e3
        timings["total"] = (time.perf_counter() - started) * 1e3
        decision = Decision(
            policy=self.policy.name,
            phase=phase,
            action=action,
            final=not provisional and phase != "tool",  # a tool Decision decides one call, not the request
            rule=rule,
            message=message,
            inputs=reads,
            signals=signals,
            evidence=evidence,
            errors=errors,
            timings_ms=timings,
            messages=messages,
            documents=documents,
            generated=call.generation.text if call.generation is not None else None,
            metadata=self._metadata(call, context),
            request_id=request_id or new_id(),
            shadow=shadowed,
        )
        if record and self.audit is not None:
            self.audit.write(decision)
        return decision

    def _carried(self, phase: Phase, call: Call, context: Decision, request_id: str | None, record: bool) -> Decision:
        """One request, one verdict: after an earlier phase abstained or escalated, a later phase repeats that
        verdict without running its checks (an integration that carried on anyway still gets the earlier
        answer; what it generated is logged in ``generated``)."""
        decision = context.model_copy(
            update={
                "id": new_id(),
                "time": time.time(),
                "phase": phase,
                "request_id": request_id or context.request_id,
                "generated": call.generation.text if call.generation is not None else None,
                "messages": None,
                "documents": None,
                "timings_ms": {},
                "shadow": None,  # no rule ran here: the deciding phase's Decision holds its shadow
                "metadata": {**context.metadata, "decided_at": context.metadata.get("decided_at", context.phase)},
            }
        )
        if record and self.audit is not None:
            self.audit.write(decision)
        return decision

    @staticmethod
    def _metadata(call: Call, context: Decision | None) -> dict[str, object]:
        """The call's metadata plus ``request``: the user's input (carried from the earlier phase)."""
        metadata = dict(call.metadata)
        request = call.user_input or (context.metadata.get("request") if context is not None else None)
        if request:
            metadata.setdefault("request", request)
        return metadata

    def _validate_result(self, check: Check, values: SignalMap) -> None:
        missing = [n for n, src in self._expected.items() if src == check.name and n not in values]
        if missing:
            raise CheckError(check.name, f"did not produce declared signals {missing}")


def _timeouts_ms(policy: CompiledPolicy, checks: Sequence[Check]) -> dict[str, float]:
    """Each check's ``timeout_ms`` from its policy section (the check's ``section`` attribute, else its name; a
    check without a section or limit has none)."""
    limits = {c.name: getattr(policy.section(getattr(c, "section", c.name)), "timeout_ms", None) for c in checks}
    return {name: float(limit) for name, limit in limits.items() if limit is not None}


def _on_error(on_error: Action, error: BaseException | str) -> Action:
    """The action a failure leads to: the policy's ``on_error``, except that a :class:`HostileInputError` (input
    built to exhaust or escape a check, an attack signal) never allows: it abstains when ``on_error`` is allow."""
    if isinstance(error, HostileInputError) and on_error is Action.ALLOW:
        return Action.ABSTAIN
    return on_error


def _ask(target: Any, messages: list[Message]) -> Generation:
    """What an escalation target (``generate(messages)``, or a callable) answers to ``messages``, as a
    Generation; CheckError when it returns anything but text or a Generation."""
    produced = target.generate(messages) if hasattr(target, "generate") else target(messages)
    generation = Generation(text=produced) if isinstance(produced, str) else produced
    if not isinstance(generation, Generation):
        raise CheckError("escalation", f"the target returned {type(produced).__name__}, not text")
    return generation


def _target_name(target: Any) -> str | None:
    """How the audit log names an escalation target (None: no target)."""
    if target is None:
        return None
    return getattr(target, "name", None) or getattr(target, "__name__", None) or type(target).__name__


def _message_for(policy: CompiledPolicy, action: Action, failed: bool) -> str | None:
    """The user-facing text for a decision no rule made: on_error after a failure, or the default."""
    texts = policy.model.messages
    if action is Action.ABSTAIN:
        return texts.error if failed else texts.abstain
    if action is Action.ESCALATE:
        return texts.escalate
    return None
