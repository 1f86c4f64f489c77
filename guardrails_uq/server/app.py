"""The proxy app: routes, the request pipeline (auth and limits, parsing, the guarded exchange), access log.

client ──▶ auth, rate, body size ──▶ parse ──▶ input phase ──(blocked: policy message, never forwarded)
                                                  │ allowed (guidelines injected, logprobs requested)
                                                  ▼
                                             upstream model ──▶ output phase, every choice / chunk
                                                                 ──▶ allow | abstain | escalate
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily

from ..guard import Guard
from ..models.openai_compat import cookieless_jar
from ..telemetry import configure_otlp
from . import wire
from .config import ServeConfig
from .exchange import Exchange, ProxyMetrics
from .limits import RateLimiter, RequestRefused, client_key, read_body
from .tenants import POLICY_HEADER, PolicyRefused, Tenants

access_log = logging.getLogger("guardrails_uq.access")

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class AccessLog:
    """ASGI middleware: one log line per request with method, path, status and time, never the query string
    (clients put keys there; ``?api_key=`` is refused, and must not be written to a log either)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:  # fmt: skip
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client") or ("-", 0)
            access_log.info(
                '%s - "%s %s" %d %.1fms', client[0], scope["method"], scope["path"], status[0],
                (time.perf_counter() - started) * 1e3,
            )  # fmt: skip


def create_app(
    config: ServeConfig, *, guard: Guard | None = None, upstream: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The proxy as a FastAPI app (``guard`` fixes the Guard of a single policy, for tests; otherwise each
    policy follows its file). ``upstream`` replaces the network transport to the upstream (an in-process model,
    for benchmarks and tests). Every policy loads here: an error names the policy file or the key file's line."""
    if guard is not None and config.policies is not None:
        raise ValueError("a fixed guard serves one policy: use ServeConfig(policy=...), not policies=")
    tenants = Tenants.load(
        config.policy, config.policies, config.grants(), guard=guard, interval=config.reload_interval
    )
    if config.otel:
        configure_otlp(where="serve --otel")
    limiter = RateLimiter(config.rate_per_second, config.burst)
    metrics = ProxyMetrics.create()
    metrics.registry.register(ReloadCounts(tenants))
    clients: dict[str, httpx.AsyncClient] = {}

    def client() -> httpx.AsyncClient:
        if "upstream" not in clients:
            clients["upstream"] = httpx.AsyncClient(
                timeout=config.timeout,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                transport=upstream,
                # one client serves every caller: a cookie the upstream sets for one must never reach the next
                cookies=cookieless_jar(),
            )
        return clients["upstream"]

    exchange = Exchange(config, client, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tenants.start()
        try:
            yield
        finally:
            if "upstream" in clients:
                await clients["upstream"].aclose()
            tenants.close()

    app = FastAPI(title="guardrails-uq proxy", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(AccessLog)  # type: ignore[arg-type]
    app.state.tenants = tenants

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Reload counts per policy (``policy``: the name, when one policy is served)."""
        policies = tenants.health()
        health: dict[str, Any] = {"status": "ok", "reload_errors": sum(p["reload_errors"] for p in policies.values())}
        if tenants.single:
            health["policy"] = next(iter(tenants)).current().policy.name
        health["policies"] = policies
        return health

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry).decode(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        try:
            key = client_key(request, config.api_keys)
            if not limiter.allow(key):
                raise RequestRefused(429, "rate limit exceeded", "rate_limit_error")
            holder = tenants.select(key, requested_policies(request))
            raw = await read_body(request, config.max_body_bytes)
        except PolicyRefused as exc:  # a policy the key may not use: a logged Decision, nothing forwarded
            decision = tenants.record_refusal(key, exc)
            metrics.count(decision)
            return wire.error_response(exc.status, str(exc), exc.kind, decision, code=exc.code)
        except RequestRefused as exc:  # before the Guard: not a decision about content
            return wire.error_response(exc.status, str(exc), exc.kind)
        stack = contextlib.ExitStack()
        guard = stack.enter_context(holder.lease())
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                stack.close()

        try:
            parsed = wire.parse_request(raw, max_choices=config.max_choices)
        except RequestRefused as exc:  # a malformed request still leaves a Decision in the log
            decision = exchange.refused(guard, exc)
            release()
            return wire.error_response(exc.status, str(exc), exc.kind, decision)
        try:
            return await exchange.respond(guard, parsed, release)
        except BaseException:
            release()
            raise

    return app


def requested_policies(request: Request) -> list[str]:
    """Every value of the policy header, as the client's bytes spell it (UTF-8; HTTP strips the blanks around)."""
    return [value.encode("latin-1").decode("utf-8", "replace") for value in request.headers.getlist(POLICY_HEADER)]


class ReloadCounts:
    """Prometheus collector: reloads and refused reloads per policy (read from the holders at scrape time)."""

    def __init__(self, tenants: Tenants) -> None:
        self.tenants = tenants

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "guardrails_policy_reloads", "Policy file reloads by outcome", labels=["policy", "outcome"]
        )
        for name, counts in self.tenants.health().items():
            family.add_metric([name, "loaded"], counts["reloads"])
            family.add_metric([name, "refused"], counts["reload_errors"])
        yield family


#: Environment variable that hands the settings to worker processes (``--workers`` > 1).
CONFIG_ENV = "GUARDRAILS_UQ_SERVE_CONFIG"


def freeze_loaded() -> None:
    """In a server process whose app is built: leave everything loaded so far (modules, the app, its Guard and
    indexes) out of the garbage collector's full passes (:func:`gc.freeze`).

    An answer with token logprobs (the proxy asks for 5 alternatives a token) becomes thousands of small objects,
    which trigger a full pass every dozen requests or so; each pass rescanned the whole loaded process, about a
    third of the time of a 256-token request (bench/serve.py, in-process part). Frozen objects are still freed
    by reference counting (a reloaded policy's old Guard holds no reference cycles); only cycles among them
    would never be collected."""
    gc.collect()
    gc.freeze()


def app_from_env() -> FastAPI:
    """The app of one worker process, from the settings :func:`serve` put in ``CONFIG_ENV``."""
    import json
    import os

    app = create_app(ServeConfig.from_json(json.loads(os.environ[CONFIG_ENV])))
    freeze_loaded()
    return app


def serve(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8080, workers: int = 1) -> None:
    """Run the proxy with uvicorn (blocking). uvicorn's own access log is off: it writes query strings.

    ``workers`` > 1 runs that many processes on the port, each with its own Guard (they append to the same
    audit log safely: records are single appends); rate limits then apply per worker."""
    import json
    import os

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    log_config = {**LOGGING_CONFIG, "loggers": {**LOGGING_CONFIG["loggers"]}}
    log_config["loggers"]["guardrails_uq"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "info", "access_log": False,
                               "log_config": log_config}  # fmt: skip
    if workers <= 1:
        app = create_app(config)
        freeze_loaded()
        uvicorn.run(app, **options)
        return
    # fail fast: every policy and the key file are checked here, before any worker starts
    Tenants.load(config.policy, config.policies, config.grants(), interval=config.reload_interval).close()
    os.environ[CONFIG_ENV] = json.dumps(config.to_json())
    uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, **options)
