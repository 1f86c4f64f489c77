"""The guarded exchange: input phase, upstream call, output phase for every choice or stream chunk.

Every path that returns model text runs the output phase on exactly that text first: each choice of a
completion gets its own Decision (a blocked one is replaced by the policy's message, with its tool calls
dropped); a stream is held back by a :class:`~guardrails_uq.streaming.StreamGate` and only one choice may
stream. Whatever cannot be checked (the input check raising, an upstream error, a malformed body, choice,
chunk or logprob) becomes an on_error Decision that is recorded in the audit log, counted, and returned.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Histogram

from ..call import Message
from ..decision import Action, Decision
from ..errors import InputError
from ..guard import Guard
from ..streaming import StreamGate
from ..uncertainty.samples import requested_samples, upstream_n
from . import documents, wire
from .config import ServeConfig

#: A stream payload the gate holds for checking but never releases (tool-call fragments, decoded calls).
_HELD = object()


class _ToolCallBuffer:
    """Streamed tool-call fragments, joined per call index into complete, canonical calls."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}
        self._ids = wire.CallIds()

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, fragments: list[dict[str, Any]]) -> None:
        for fragment in fragments:
            call = self._calls.get(fragment["index"])
            if call is None:  # the proxy's id, from the upstream's (a key only) on the call's first fragment
                call = {"id": self._ids(fragment.get("id")), "type": "function", "name": "", "arguments": ""}
                self._calls[fragment["index"]] = call
            call["name"] += fragment["function"].get("name", "")
            call["arguments"] += fragment["function"].get("arguments", "")

    def complete(self) -> list[dict[str, Any]]:
        """The calls as a client receives them in one delta (arguments canonical, as checked)."""
        return [
            {"index": index, "id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": wire.canonical_arguments(c["arguments"])}}
            for index, c in sorted(self._calls.items())
        ]  # fmt: skip


class UpstreamFailure(Exception):
    """The upstream could not answer: the HTTP status to return, the metrics label, a message for the
    client, and ``detail`` (what the upstream said) for the audit log only: upstream text is never echoed."""

    def __init__(self, status: int, kind: str, message: str, detail: str = "") -> None:
        self.status = status
        self.kind = kind
        self.detail = detail
        super().__init__(message)

    def __str__(self) -> str:
        return self.args[0]


#: Request fields forwarded to the upstream; anything else a client sends is dropped (unknown fields could
#: carry text to the model that the input phase never read).
FORWARDED = frozenset(
    {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "n",
     "stream", "stream_options", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "tools",
     "tool_choice", "parallel_tool_calls", "response_format", "user"}
)  # fmt: skip


@dataclass
class ProxyMetrics:
    """Prometheus instruments of one proxy app."""

    registry: CollectorRegistry
    decisions: Counter
    upstream_errors: Counter
    latency: Histogram
    overhead: Histogram

    @classmethod
    def create(cls) -> ProxyMetrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            decisions=Counter(
                "guardrails_decisions_total", "Final decisions", ["policy", "action", "rule"], registry=registry
            ),
            upstream_errors=Counter(
                "guardrails_upstream_errors_total", "Upstream failures", ["kind"], registry=registry
            ),
            latency=Histogram("guardrails_request_seconds", "Request latency", ["stream"], registry=registry),
            overhead=Histogram(
                "guardrails_guard_seconds",
                "Time spent in the Guard per request",
                registry=registry,
                buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            ),
        )

    def count(self, decision: Decision) -> None:
        self.decisions.labels(decision.policy, decision.action.value, decision.rule_label).inc()


class Exchange:
    """Runs one client request through the Guard and the upstream. Shared by all requests of an app."""

    def __init__(self, config: ServeConfig, client: Callable[[], httpx.AsyncClient], metrics: ProxyMetrics) -> None:
        import os

        self.config = config
        self.client = client
        self.metrics = metrics
        self.url = httpx.URL(f"{config.upstream.rstrip('/')}/chat/completions")  # parsed once, not per call
        key = os.environ.get(config.upstream_api_key_env) if config.upstream_api_key_env else None
        self.upstream_headers = {"Authorization": f"Bearer {key}"} if key else {}

    # -- decisions the proxy makes itself ---------------------------------------------------------------------

    def failed(
        self,
        guard: Guard,
        phase: str,
        where: str,
        exc: BaseException,
        request: str | None,
        *,
        count: bool = True,
        request_id: str | None = None,
    ) -> Decision:
        """The on_error Decision for what the proxy could not check or serve (recorded; counted unless
        ``count`` is False, for callers that count it themselves)."""
        decision = guard.failure(phase, where, exc, request_id=request_id, record=False)  # type: ignore[arg-type]
        if request:
            decision.metadata["request"] = request
        guard.record(decision)
        if count:
            self.metrics.count(decision)
        return decision

    def refused(self, guard: Guard, exc: Exception, request_text: str | None = None) -> Decision:
        """Record a request refused as malformed (the response is a 4xx; the log still has it)."""
        return self.failed(guard, "input", "request", exc, request_text)

    # -- the exchange ---------------------------------------------------------------------------------------

    async def respond(self, guard: Guard, request: wire.ChatRequest, release: Callable[[], None]) -> Response:
        """The response to a validated request. ``release`` ends the Guard lease once the response is done
        (at once for JSON, at the end of the stream for streams)."""
        started = time.perf_counter()
        user = next((m.content for m in reversed(request.messages) if m.role == "user"), None)
        try:
            before = await guard.abefore(request.messages)
        except Exception as exc:  # could not check: on_error, never forwarded
            return self._answer_alone(request, self.failed(guard, "input", "input", exc, user), release)
        extra = wire.instructions_text(request.body)
        if extra and not (before.final and before.action is not Action.ALLOW):
            try:  # tool descriptions and schemas reach the model too: the input phase reads them as well
                more = await guard.abefore([Message(role="user", content=extra)], request_id=before.request_id)
            except Exception as exc:
                return self._answer_alone(request, self.failed(guard, "input", "input", exc, user), release)
            if more.final and more.action is not Action.ALLOW:
                before = more
        spent = time.perf_counter() - started
        if before.final and before.action is not Action.ALLOW:
            self.metrics.count(before)
            self.metrics.overhead.observe(spent)
            return self._answer_alone(request, before, release)
        prompt = before.messages if before.messages is not None else request.messages
        retrieval = await self._retrieval(guard, request, prompt, before, user)
        if isinstance(retrieval, Response):  # blocked (or not checkable): never forwarded
            release()
            return retrieval
        if retrieval is not None:
            before, prompt = retrieval  # the output phase reads the kept documents (grounding's evidence)
        forward = {
            **{k: v for k, v in request.body.items() if k in FORWARDED},
            "messages": wire.upstream_messages(prompt),  # what the input phase read, tool calls and results paired
            "logprobs": True,
            "top_logprobs": request.top_logprobs or self.config.top_logprobs,
        }
        samples = requested_samples(guard.policy)
        if samples:  # uncertainty.samples: extra choices from the same call, checked as samples, never shown
            forward["n"] = upstream_n(request.n, samples)
            # a stream gets its samples too: one whole (not streamed) call, decided exactly as a JSON request,
            # then sent as a stream; nothing is shown before the decision (``policy check`` says so)
            forward.pop("stream", None)
            forward.pop("stream_options", None)
        if request.stream and not samples:
            events = self._stream(guard, request, forward, prompt, before, spent, release)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"X-Guardrails-Input": before.action.value}
            )
        try:
            return await self._complete(guard, request, forward, prompt, before, spent, started, user)
        finally:
            release()

    async def _retrieval(
        self, guard: Guard, request: wire.ChatRequest, prompt: list[Message], before: Decision, user: str | None
    ) -> tuple[Decision, list[Message]] | Response | None:
        """The retrieval phase on the client's documents and the tool messages (:mod:`.documents`): None when
        there are neither; the policy's answer when the phase blocks or fails (the lease is then released);
        else the retrieval Decision and the prompt to forward (kept documents in, dropped tool results out)."""
        query = user or ""
        try:
            found = await asyncio.to_thread(
                documents.retrieval_documents, guard, request.extension, request.messages, query
            )
            if found is None:
                return None
            decided = await guard.aretrieve(query, found, context=before)
        except Exception as exc:  # could not check: on_error, never forwarded
            decision = self.failed(guard, "retrieval", "retrieval", exc, user, request_id=before.request_id)
            return self._answer_alone(request, decision, lambda: None)
        if decided.final and decided.action is not Action.ALLOW:
            self.metrics.count(decided)
            return self._answer_alone(request, decided, lambda: None)
        client_ids = {d.id for d in request.extension.documents or ()}
        tools = documents.tool_ids(request.messages)
        forwarded = documents.prompt_with_documents(prompt, decided, client_ids, tools)
        kept = [d for d in decided.documents or () if d.id in client_ids]
        if kept:  # the documents reach the model as a prompt message: the input phase reads them as well
            try:
                text = documents.render_documents(kept)
                more = await guard.abefore([Message(role="user", content=text)], request_id=before.request_id)
            except Exception as exc:
                decision = self.failed(guard, "input", "documents", exc, user, request_id=before.request_id)
                return self._answer_alone(request, decision, lambda: None)
            if more.final and more.action is not Action.ALLOW:
                self.metrics.count(more)
                return self._answer_alone(request, more, lambda: None)
        return decided, forwarded

    def _answer_alone(self, request: wire.ChatRequest, decision: Decision, release: Callable[[], None]) -> Response:
        """The guard's own answer (the policy message), in the form the client asked for."""
        release()
        text = decision.message or ""
        headers = wire.headers(decision)
        if request.stream:

            async def events() -> AsyncIterator[bytes]:
                for event in wire.blocked_stream(text, request.model, decision):
                    yield event

            return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
        choices = [wire.choice_json(i, text) for i in range(request.n)]
        return wire.json_response(wire.completion_json(choices, request.model, decision), extra_headers=headers)

    async def _post(self, forward: dict[str, Any]) -> Any:
        try:
            try:
                status, content = await self._post_once(forward)
            except (httpx.ConnectError, httpx.RemoteProtocolError):  # a stale pooled connection: one retry
                self.metrics.upstream_errors.labels("retried").inc()
                status, content = await self._post_once(forward)
        except httpx.TimeoutException:
            raise UpstreamFailure(504, "timeout", "upstream timed out") from None
        except httpx.TransportError as exc:
            raise UpstreamFailure(502, "connection", "upstream connection failed", detail=str(exc)) from None
        if status >= 400:
            raise UpstreamFailure(
                502, f"status_{status}", f"upstream returned {status}", detail=content[:500].decode("utf-8", "replace")
            )
        try:
            return json.loads(content)
        except (ValueError, RecursionError) as exc:
            raise UpstreamFailure(
                502, "malformed", "upstream returned a body that is not JSON", detail=str(exc)
            ) from None

    async def _post_once(self, forward: dict[str, Any]) -> tuple[int, bytes]:
        """(status, body) of one upstream call; the body is refused beyond ``max_upstream_bytes``."""
        limit = self.config.max_upstream_bytes
        async with self.client().stream("POST", self.url, json=forward, headers=self.upstream_headers) as response:
            parts, size = [], 0
            async for part in response.aiter_bytes():
                size += len(part)
                if size > limit:
                    raise UpstreamFailure(502, "too_large", f"upstream body larger than {limit} bytes")
                parts.append(part)
            return response.status_code, b"".join(parts)

    async def _complete(
        self,
        guard: Guard,
        request: wire.ChatRequest,
        forward: dict[str, Any],
        prompt: list[Message],
        before: Decision,
        spent: float,
        started: float,
        user: str | None,
    ) -> Response:
        try:
            answer = await self._post(forward)
            choices = wire.parse_choices(answer)
        except Exception as exc:  # an upstream failure, or a body the parser could not read: fail closed
            status, kind = (exc.status, exc.kind) if isinstance(exc, UpstreamFailure) else (502, "malformed")
            self.metrics.upstream_errors.labels(kind).inc()
            decision = self.failed(guard, "output", "upstream", exc, user, request_id=before.request_id)
            if request.stream:
                return self._answer_alone(request, decision, lambda: None)
            message = str(exc) if isinstance(exc, UpstreamFailure) else "upstream returned a malformed body"
            return wire.error_response(status, message, "upstream_error", decision)
        t0 = time.perf_counter()
        several = len(choices[: request.n]) > 1
        samples = [c.checked_text for c in choices[request.n :] if not isinstance(c, InputError)]
        out, decisions = [], []
        for index, choice in enumerate(choices[: request.n]):  # extra choices are never shown
            body, decision = await self._decide_choice(guard, index, choice, prompt, before, request, user, samples)
            if several:
                body["guardrails"] = wire.decision_json(decision)
            out.append(body)
            decisions.append(decision)
        self.metrics.overhead.observe(spent + time.perf_counter() - t0)
        for decision in decisions:
            self.metrics.count(decision)
        verdict = next((d for d in decisions if d.action is not Action.ALLOW), decisions[0])
        self.metrics.latency.labels(str(request.stream).lower()).observe(time.perf_counter() - started)
        if request.stream:  # decided whole (with samples): sent as a stream only now
            events = wire.decided_stream(out[0], request.model, verdict)

            async def stream() -> AsyncIterator[bytes]:
                for event in events:
                    yield event

            return StreamingResponse(stream(), media_type="text/event-stream", headers=wire.headers(verdict))
        body = wire.completion_json(out, request.model, verdict, answer)
        return wire.json_response(body, extra_headers=wire.headers(verdict))

    async def _decide_choice(
        self,
        guard: Guard,
        index: int,
        choice: wire.ChoiceOutput | InputError,
        prompt: list[Message],
        before: Decision,
        request: wire.ChatRequest,
        user: str | None,
        samples: list[str] | None = None,
    ) -> tuple[dict[str, Any], Decision]:
        """The output phase (and escalation) for one choice, and the choice the client will see."""
        if isinstance(choice, InputError):
            self.metrics.upstream_errors.labels("malformed").inc()
            decision = self.failed(
                guard, "output", f"choices[{index}]", choice, user, count=False, request_id=before.request_id
            )
            return wire.choice_json(index, decision.message or ""), decision
        calls, held = choice.tool_calls, None
        notes: list[str] = []
        try:
            generation = choice.generation()
            if samples:
                generation = generation.model_copy(update={"samples": samples})
            decision = await guard.aafter(generation, messages=prompt, context=before)
            if decision.action is Action.ESCALATE:
                decision = await guard.aescalate(prompt, decision, original=choice.checked_text)
            elif decision.action is Action.ALLOW and calls:
                calls, notes, held = await self._tool_phase(guard, calls, prompt, decision)
        except Exception as exc:
            decision = self.failed(guard, "output", "output", exc, user, count=False, request_id=before.request_id)
        if decision.action is Action.ALLOW and notes:  # held tool calls: their policy messages stand instead
            content = "\n\n".join(t for t in [choice.content, *notes] if t)
            return wire.choice_json(
                index, content, tool_calls=calls, finish_reason="tool_calls" if calls else "stop"
            ), held or decision
        if decision.action is Action.ALLOW:
            return wire.choice_json(
                index,
                choice.content,
                tool_calls=choice.tool_calls,
                finish_reason=choice.finish_reason or "stop",
                logprobs=choice.tokens if request.wants_logprobs else None,
            ), decision
        if decision.action is Action.ESCALATE and decision.answer is not None:
            return wire.choice_json(index, decision.answer), decision
        return wire.choice_json(index, decision.message or ""), decision

    async def _tool_phase(
        self, guard: Guard, calls: list[dict[str, Any]], prompt: list[Message], context: Decision
    ) -> tuple[list[dict[str, Any]], list[str], Decision | None]:
        """The tool phase on each call of an allowed choice, when the policy has tool rules (an escalated call
        goes to the escalation target for approval): the calls the client may receive, the policy messages
        that stand for the others, and the first Decision that held a call back (None: all passed)."""
        if not guard.guards_tools:
            return calls, [], None
        kept: list[dict[str, Any]] = []
        notes: list[str] = []
        held: Decision | None = None
        for call in calls:
            function = call["function"]
            decision = await guard.atool(function["name"], function["arguments"], call_id=call["id"], context=context)
            if decision.action is Action.ESCALATE:
                decision = await guard.aapprove_tool(decision, messages=prompt)
            if decision.action is Action.ALLOW:
                kept.append(call)
                continue
            notes.append(decision.message or "")
            held = held or decision
        return kept, notes, held

    async def _chunks(self, forward: dict[str, Any]) -> AsyncIterator[wire.ChunkDelta]:
        """The upstream stream's chunks, parsed; UpstreamFailure beyond ``max_upstream_bytes`` in total or
        ``stream_timeout`` seconds, InputError for anything malformed."""
        limit, deadline = self.config.max_upstream_bytes, time.monotonic() + self.config.stream_timeout
        size = 0
        async with self.client().stream("POST", self.url, json=forward, headers=self.upstream_headers) as resp:
            if resp.status_code >= 400:
                raise UpstreamFailure(502, f"status_{resp.status_code}", f"upstream returned {resp.status_code}")
            async for line in resp.aiter_lines():
                size += len(line) + 1
                if size > limit:
                    raise UpstreamFailure(502, "too_large", f"upstream stream larger than {limit} bytes")
                if time.monotonic() > deadline:
                    raise UpstreamFailure(504, "timeout", f"upstream stream longer than {self.config.stream_timeout} s")
                if not line.startswith("data:"):
                    continue  # SSE comments, event names, keep-alive blank lines
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                delta = wire.parse_chunk(json.loads(data))
                if not delta.empty:
                    yield delta

    async def _stream(
        self,
        guard: Guard,
        request: wire.ChatRequest,
        forward: dict[str, Any],
        prompt: list[Message],
        before: Decision,
        spent: float,
        release: Callable[[], None],
    ) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        gate = StreamGate(
            guard,
            prompt,
            context=before,
            window=self.config.stream_window,
            mode=self.config.stream_mode,  # type: ignore[arg-type]
        )
        stream_id = f"guardrails-{before.id}"
        model = request.model
        request_text = before.metadata.get("request")
        user = request_text if isinstance(request_text, str) else None
        decided = False

        def closing(text: str, decision: Decision) -> list[bytes]:
            delta = {"content": text} if text else {}
            return [wire.sse(wire.chunk_json(stream_id, model, delta, finish_reason="stop", decision=decision)),
                    wire.SSE_DONE]  # fmt: skip

        calls = _ToolCallBuffer()
        try:
            try:
                async for delta in self._chunks(forward):
                    if delta.tool_calls:  # held until the end: arguments can only be decoded once complete
                        calls.add(delta.tool_calls)
                    fields: dict[str, Any] = {}
                    if delta.role is not None:
                        fields["role"] = "assistant"
                    if delta.content:
                        fields["content"] = delta.content
                    if not fields and not delta.piece:
                        continue
                    payload = (
                        wire.chunk_json(
                            stream_id, model, fields, logprobs=delta.tokens if request.wants_logprobs else None
                        )
                        if fields
                        else _HELD
                    )
                    # checking runs off the event loop: a long stream never stalls other requests
                    for released in await asyncio.to_thread(gate.push, delta.piece, payload, delta.tokens):
                        if released is not _HELD:
                            yield wire.sse(released)
                    if gate.cut is not None:
                        break
                if gate.cut is None and calls:  # the decoded tool calls are part of the answer checked
                    gate.kind, gate.content = "tool_call", gate.text or None
                    text = "\n" + "\n".join(wire.tool_text(c) for c in calls.complete())
                    await asyncio.to_thread(gate.push, text, _HELD, None)
            except Exception as exc:  # an upstream failure or anything unreadable in the stream: fail closed
                kind = exc.kind if isinstance(exc, UpstreamFailure) else "stream"
                self.metrics.upstream_errors.labels(kind).inc()
                decision = self.failed(guard, "output", "upstream", exc, user, request_id=before.request_id)
                decided = True
                for event in closing(decision.message or "", decision):
                    yield event
                return
            t0 = time.perf_counter()
            kept = calls.complete()
            notes: list[str] = []
            try:
                released, decision = await asyncio.to_thread(gate.finish)
                if decision.action is Action.ESCALATE:
                    decision = await guard.aescalate(prompt, decision, original=gate.text)
                elif decision.action is Action.ALLOW and kept:
                    kept, notes, held = await self._tool_phase(guard, kept, prompt, decision)
                    decision = held or decision
            except Exception as exc:
                released, decision = (
                    [],
                    self.failed(
                        guard,
                        "output",
                        "output",
                        exc,
                        user,
                        count=False,
                        request_id=before.request_id,
                    ),
                )
            decided = True
            self.metrics.overhead.observe(spent + time.perf_counter() - t0)
            self.metrics.count(decision)
            for chunk in released:
                if chunk is not _HELD:
                    yield wire.sse(chunk)
            if decision.action is Action.ALLOW or notes:  # held tool calls: their policy messages instead
                if kept:
                    yield wire.sse(wire.chunk_json(stream_id, model, {"tool_calls": kept}))
                shown = any(chunk is not _HELD for chunk in released)
                note = "\n\n".join(notes)
                for event in closing(("\n\n" if note and gate.text.strip() and shown else "") + note, decision):
                    yield event
            else:
                text = decision.answer if decision.answer is not None else (decision.message or "")
                shown = any(chunk is not _HELD for chunk in released)
                for event in closing(("\n\n" if gate.text and shown else "") + text, decision):
                    yield event
            self.metrics.latency.labels("true").observe(time.perf_counter() - started)
        except (GeneratorExit, asyncio.CancelledError):
            if not decided:  # the client went away mid-stream: keep a record of what was streamed
                guard.record(
                    Decision(
                        policy=guard.policy.name,
                        phase="output",
                        action=Action.ALLOW,
                        final=False,
                        generated=gate.text,
                        metadata={"client_disconnected": True, "request": user},
                        request_id=before.request_id,
                    )
                )
            raise
        finally:
            release()
