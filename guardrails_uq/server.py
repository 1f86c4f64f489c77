"""``guardrails-uq serve``: an OpenAI-compatible chat-completions proxy that applies a policy.

    client ──▶ /v1/chat/completions ──▶ input phase ──(blocked: policy message, never forwarded)
                                          │ allowed (guidelines injected, logprobs requested)
                                          ▼
                                     upstream model ──▶ output phase ──▶ allow | abstain | escalate
                                                            (streaming: held back, cut on a violation)

Every response carries the Decision: a ``guardrails`` field in the body (in the last chunk when streaming)
and ``X-Guardrails-Action`` / ``X-Guardrails-Decision`` headers. ``/healthz`` reports the policy;
``/metrics`` serves Prometheus counters (decisions by action and rule, upstream errors) and latency
histograms. Client API keys, body size and per-key request rate are limited. A request the proxy failed
to check is answered with the on_error action (abstain by default) and never forwarded. The policy file is
re-read when it changes; a new version replaces the old one only once it has loaded completely, so a
broken edit keeps the old policy serving (and is logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from .call import Generation, Message
from .decision import Action, CheckFailure, Decision
from .guard import Guard
from .models.logprobs import from_openai_chat
from .streaming import StreamGate

log = logging.getLogger("guardrails_uq.server")


@dataclass
class ServeConfig:
    """Proxy settings. ``api_keys`` None: no client authentication (loopback use only)."""

    policy: Path
    upstream: str
    upstream_api_key_env: str | None = None
    api_keys: set[str] | None = None
    max_body_bytes: int = 1_000_000
    rate_per_second: float = 50.0
    burst: int = 100
    timeout: float = 30.0
    top_logprobs: int = 5
    stream_window: int = 16
    reload_interval: float = 1.0


class PolicyHolder:
    """The current Guard; swaps in a new one when the policy file changes and loads cleanly."""

    def __init__(self, path: Path, guard: Guard | None = None, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self._guard = guard or Guard.from_policy(path)
        self._fixed = guard is not None
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self.reload_errors = 0

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            stat = self.path.stat()
            return stat.st_mtime, stat.st_size
        except OSError:
            return None

    def current(self) -> Guard:
        if self._fixed or time.monotonic() - self._checked < self.interval:
            return self._guard
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                try:
                    fresh = Guard.from_policy(self.path)
                except Exception as exc:  # a half-written or broken policy: keep serving the old one
                    self.reload_errors += 1
                    log.warning("policy %s changed but did not load; keeping the old one: %s", self.path, exc)
                else:
                    self._guard = fresh
                    log.info("policy %s reloaded", self.path)
                self._stamp = stamp
        return self._guard


@dataclass
class _Bucket:
    tokens: float
    stamp: float = field(default_factory=time.monotonic)


class RateLimiter:
    """Token bucket per client key."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        with self._lock:
            bucket = self._buckets.setdefault(key, _Bucket(tokens=float(self.burst)))
            now = time.monotonic()
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens < 1:
                return False
            bucket.tokens -= 1
            return True


def _error(status: int, message: str, kind: str, decision: Decision | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"message": message, "type": kind}}
    headers = {}
    if decision is not None:
        body["guardrails"] = decision.model_dump(mode="json")
        headers = {"X-Guardrails-Action": decision.action.value, "X-Guardrails-Decision": decision.id}
    return JSONResponse(body, status_code=status, headers=headers)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _messages(body: dict[str, Any]) -> list[Message]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ValueError("'messages' must be a non-empty list")
    roles = {"system", "user", "assistant", "tool", "developer"}
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in roles:
            raise ValueError(f"messages[{i}] needs a role of {sorted(roles)}")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append(Message.model_validate({"role": role, "content": _text(m.get("content"))}))
    return out


def _completion(text: str, model: str | None, decision: Decision) -> dict[str, Any]:
    return {
        "id": f"guardrails-{decision.id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or "guardrails",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "guardrails": decision.model_dump(mode="json"),
    }


def _headers(decision: Decision) -> dict[str, str]:
    return {"X-Guardrails-Action": decision.action.value, "X-Guardrails-Decision": decision.id}


def create_app(config: ServeConfig, *, guard: Guard | None = None) -> FastAPI:
    """The proxy as a FastAPI app (``guard`` fixes the Guard, for tests; otherwise it follows the file)."""
    holder = PolicyHolder(config.policy, guard, config.reload_interval)
    limiter = RateLimiter(config.rate_per_second, config.burst)
    registry = CollectorRegistry()
    decisions = Counter("guardrails_decisions_total", "Final decisions", ["action", "rule"], registry=registry)
    upstream_errors = Counter("guardrails_upstream_errors_total", "Upstream failures", ["kind"], registry=registry)
    latency = Histogram("guardrails_request_seconds", "Request latency", ["stream"], registry=registry)
    overhead = Histogram(
        "guardrails_guard_seconds",
        "Time spent in the Guard per request",
        registry=registry,
        buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
    )
    upstream_key = os.environ.get(config.upstream_api_key_env) if config.upstream_api_key_env else None
    upstream_headers = {"Authorization": f"Bearer {upstream_key}"} if upstream_key else {}
    state: dict[str, httpx.AsyncClient] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if "client" in state:
            await state["client"].aclose()

    app = FastAPI(title="guardrails-uq proxy", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.holder = holder

    def client() -> httpx.AsyncClient:
        if "client" not in state:
            state["client"] = httpx.AsyncClient(
                timeout=config.timeout, limits=httpx.Limits(max_connections=200, max_keepalive_connections=50)
            )
        return state["client"]

    def count(decision: Decision) -> None:
        decisions.labels(decision.action.value, decision.rule_label).inc()

    def failed(guard: Guard, phase: str, where: str, exc: Exception) -> Decision:
        """A Decision for a request the proxy could not check or serve (recorded; the on_error action)."""
        action = guard.policy.model.on_error
        decision = Decision(
            policy=guard.policy.name,
            phase=phase,  # type: ignore[arg-type]
            action=action,
            message=guard.policy.model.messages.error if action is not Action.ALLOW else None,
            errors=[CheckFailure(check=where, phase=phase, error=str(exc), type=type(exc).__name__)],  # type: ignore[arg-type]
        )
        guard.record(decision)
        count(decision)
        return decision

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        guard = holder.current()
        return {"status": "ok", "policy": guard.policy.name, "reload_errors": holder.reload_errors}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        started = time.perf_counter()
        key = "anonymous"
        if config.api_keys is not None:
            auth = request.headers.get("authorization", "")
            key = auth.removeprefix("Bearer ").strip()
            if not auth.startswith("Bearer ") or key not in config.api_keys:
                return _error(401, "invalid or missing API key", "authentication_error")
        if not limiter.allow(key):
            return _error(429, "rate limit exceeded", "rate_limit_error")
        declared = int(request.headers.get("content-length") or 0)
        if declared > config.max_body_bytes:
            return _error(413, f"body larger than {config.max_body_bytes} bytes", "invalid_request_error")
        raw = await request.body()
        if len(raw) > config.max_body_bytes:
            return _error(413, f"body larger than {config.max_body_bytes} bytes", "invalid_request_error")
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            messages = _messages(body)
        except ValueError as exc:
            return _error(400, f"invalid request: {exc}", "invalid_request_error")
        guard = holder.current()
        spent = 0.0
        t0 = time.perf_counter()
        try:
            before = await guard.abefore(messages)
        except Exception as exc:  # could not check: on_error, never forwarded
            decision = failed(guard, "input", "input", exc)
            return JSONResponse(
                _completion(decision.message or "", body.get("model"), decision), headers=_headers(decision)
            )
        spent += time.perf_counter() - t0
        if before.final and before.action is not Action.ALLOW:
            count(before)
            overhead.observe(spent)
            return JSONResponse(_completion(before.message or "", body.get("model"), before), headers=_headers(before))
        prompt = before.messages if before.messages is not None else messages
        wants_logprobs = bool(body.get("logprobs"))
        forward = {
            **body,
            "messages": [m.model_dump() for m in prompt],
            "logprobs": True,
            "top_logprobs": body.get("top_logprobs") or config.top_logprobs,
        }
        url = f"{config.upstream.rstrip('/')}/chat/completions"
        if body.get("stream"):
            generator = _stream(guard, url, forward, prompt, before, wants_logprobs, spent)
            return StreamingResponse(
                generator, media_type="text/event-stream", headers={"X-Guardrails-Input": before.action.value}
            )
        try:
            try:
                response = await client().post(url, json=forward, headers=upstream_headers)
            except (httpx.ConnectError, httpx.RemoteProtocolError):  # a stale pooled connection: one retry
                upstream_errors.labels("retried").inc()
                response = await client().post(url, json=forward, headers=upstream_headers)
            if response.status_code >= 400:
                upstream_errors.labels(f"status_{response.status_code}").inc()
                return _error(502, f"upstream returned {response.status_code}: {response.text[:200]}", "upstream_error")
            answer = response.json()
            choice = answer["choices"][0]
            generation = Generation(
                text=_text(choice["message"]["content"]), tokens=from_openai_chat(choice.get("logprobs"))
            )
        except httpx.TimeoutException:
            upstream_errors.labels("timeout").inc()
            return _error(504, "upstream timed out", "upstream_error")
        except httpx.TransportError as exc:
            upstream_errors.labels("connection").inc()
            return _error(502, f"upstream connection failed: {exc}", "upstream_error")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            upstream_errors.labels("malformed").inc()
            return _error(502, f"upstream returned a malformed body: {exc}", "upstream_error")
        t0 = time.perf_counter()
        try:
            after = await guard.aafter(generation, messages=prompt, context=before)
            if after.action is Action.ESCALATE:
                after = await guard.aescalate(prompt, after, original=generation.text)
        except Exception as exc:
            after = failed(guard, "output", "output", exc)
        spent += time.perf_counter() - t0
        overhead.observe(spent)
        count(after)
        if after.action is Action.ALLOW:
            content = generation.text
        elif after.action is Action.ESCALATE and after.answer is not None:
            content = after.answer
        else:
            content = after.message or ""
        choice["message"]["content"] = content
        if not wants_logprobs or after.action is not Action.ALLOW:
            choice.pop("logprobs", None)
        answer["guardrails"] = after.model_dump(mode="json")
        latency.labels("false").observe(time.perf_counter() - started)
        return JSONResponse(answer, headers=_headers(after))

    async def _stream(
        guard: Guard,
        url: str,
        forward: dict[str, Any],
        prompt: list[Message],
        before: Decision,
        wants_logprobs: bool,
        spent: float,
    ) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        gate = StreamGate(guard, prompt, context=before, window=config.stream_window)
        model = forward.get("model")

        def event(payload: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        def final_chunk(text: str, decision: Decision) -> bytes:
            return event(
                {
                    "id": f"guardrails-{decision.id}",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": "stop"}],
                    "guardrails": decision.model_dump(mode="json"),
                }
            )

        decided = False
        try:
            try:
                async with client().stream("POST", url, json=forward, headers=upstream_headers) as response:
                    if response.status_code >= 400:
                        raise RuntimeError(f"upstream returned {response.status_code}")
                    async for line in response.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        choice = (chunk.get("choices") or [{}])[0]
                        piece = _text((choice.get("delta") or {}).get("content"))
                        tokens = from_openai_chat(choice.get("logprobs"))
                        if not wants_logprobs:
                            choice.pop("logprobs", None)
                        if choice.get("finish_reason"):
                            choice["finish_reason"] = None  # the proxy sends the closing chunk
                        for released in gate.push(piece, chunk, tokens):
                            yield event(released)
                        if gate.cut is not None:
                            break
            except (httpx.TransportError, RuntimeError, ValueError, KeyError) as exc:
                upstream_errors.labels("stream").inc()
                decision = failed(guard, "output", "upstream", exc)
                decided = True
                yield final_chunk(decision.message or "", decision)
                yield b"data: [DONE]\n\n"
                return
            t0 = time.perf_counter()
            released, decision = await asyncio.to_thread(gate.finish)
            if decision.action is Action.ESCALATE:
                decision = await guard.aescalate(prompt, decision, original=gate.text)
            decided = True
            overhead.observe(spent + time.perf_counter() - t0)
            count(decision)
            for chunk in released:
                yield event(chunk)
            if decision.action is Action.ALLOW:
                yield final_chunk("", decision)
            else:
                text = decision.answer if decision.answer is not None else (decision.message or "")
                yield final_chunk(("\n\n" if gate.text and released else "") + text, decision)
            yield b"data: [DONE]\n\n"
            latency.labels("true").observe(time.perf_counter() - started)
        except (GeneratorExit, asyncio.CancelledError):
            if not decided:  # the client went away mid-stream: keep a record of what was streamed
                record = Decision(
                    policy=guard.policy.name,
                    phase="output",
                    action=Action.ALLOW,
                    final=False,
                    generated=gate.text,
                    metadata={"client_disconnected": True, "request": before.metadata.get("request")},
                )
                guard.record(record)
            raise

    return app


def serve(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the proxy with uvicorn (blocking)."""
    import uvicorn

    uvicorn.run(create_app(config), host=host, port=port, log_level="info")
