"""Test helpers shipped with the library (as httpx ships MockTransport).

* :class:`StaticCheck`: a check that returns fixed (or computed) signals, for testing policies and apps
  without models.
* :class:`FailingCheck`: a check that always raises, for testing on_error handling.
* :func:`assert_conforms`: the conformance suite every check must pass (use it for your own checks).
* :class:`ChatCompletionsServer`: a real OpenAI-compatible HTTP server on 127.0.0.1, scripted or backed by a
  model, for testing clients, builders and escalation without a remote API.
* :func:`keyword_score`, :func:`build_keyword_artifacts`, :func:`keyword_harm_check`, :func:`guard_without_embedder`:
  a keyword-overlap retriever and real artifacts for it (a conformal calibration, a provenance index), so an
  integration's fast tests run a real Guard without downloading or loading an embedder.
* :func:`synthetic_request`, :func:`write_synthetic_audit_log`: realistic audit records of any volume, for
  testing and benchmarking the log readers (``audit stats``, ``report``, ``replay``).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .call import Call
from .checks import Check, CheckSpec, Signals
from .types import Evidence, Phase, SignalMap

if TYPE_CHECKING:
    from .guard import Guard

_TYPE_CHECKS: dict[str, Callable[[object], bool]] = {
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
}


@dataclass
class StaticCheck:
    """Returns ``values`` (or ``compute(call)``) every time; counts its runs (thread-safe)."""

    name: str
    phase: Phase
    values: SignalMap = field(default_factory=dict)
    compute: Callable[[Call], SignalMap] | None = None
    evidence: Evidence = field(default_factory=dict)
    runs: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self, call: Call) -> Signals:
        with self._lock:
            self.runs += 1
        values = self.compute(call) if self.compute is not None else dict(self.values)
        return Signals(values=values, evidence=dict(self.evidence))


@dataclass
class FailingCheck:
    """Always raises ``error``."""

    name: str
    phase: Phase
    error: Exception = field(default_factory=lambda: RuntimeError("boom"))

    def run(self, call: Call) -> Signals:
        raise self.error


def assert_conforms(check: Check, spec: CheckSpec, calls: Sequence[Call], *, threads: int = 4) -> None:
    """Assert the Check contract on ``calls``: declared phase and name; exactly the declared signals with
    their declared types (None allowed only where the description says "or null"); JSON-compatible
    evidence; no mutation of the call; same result when run concurrently from several threads."""
    assert check.name == spec.name, f"check.name {check.name!r} != spec.name {spec.name!r}"
    assert check.phase == spec.phase, f"{spec.name}: phase {check.phase!r} != spec {spec.phase!r}"
    assert calls, "give at least one call"
    serial = []
    for call in calls:
        before = call.model_dump_json()
        result = check.run(call)
        assert call.model_dump_json() == before, f"{spec.name}: run() changed its call"
        _assert_values(spec, result.values)
        json.dumps(result.evidence)  # raises when evidence is not JSON-compatible
        serial.append(result.values)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        parallel = list(pool.map(lambda c: check.run(c).values, calls))
    for one, other in zip(serial, parallel, strict=True):
        assert _same(one, other), f"{spec.name}: results differ under concurrency: {one} != {other}"


def _assert_values(spec: CheckSpec, values: Mapping[str, object]) -> None:
    declared = set(spec.signals)
    assert set(values) == declared, f"{spec.name}: produced {sorted(values)}, declared {sorted(declared)}"
    for name, value in values.items():
        info = spec.signals[name]
        if value is None:
            assert "or null" in info.description, f"{name} is None but its spec does not allow null"
            continue
        assert _TYPE_CHECKS[info.type](value), f"{name}={value!r} is not a {info.type}"


def _same(a: Mapping[str, object], b: Mapping[str, object]) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, float) and isinstance(y, float):
            if not (x == y or (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-5)):
                return False
        elif x != y:
            return False
    return True


# -- a real OpenAI-compatible server on 127.0.0.1, for tests and offline demos ------------------------------


@dataclass
class ScriptedReply:
    """One scripted response: a status code, a body (JSON-able or raw text), and an optional delay."""

    status: int = 200
    body: object = None
    delay: float = 0.0


class ChatCompletionsServer:
    """A real HTTP server on 127.0.0.1 speaking ``POST /v1/chat/completions``.

    Replies come from ``responder(request_json) -> Generation | str`` (e.g. the embedded LocalModel) or, first,
    from ``script`` (a list of :class:`ScriptedReply` consumed in order: errors, garbage, delays).
    ``api_key`` (optional) must arrive as a Bearer token; ``models`` (optional) lists the known model names.
    Every request body is kept in ``requests``. Use as a context manager; ``base_url`` ends in /v1.
    """

    def __init__(
        self,
        responder: Callable[[dict], object] | None = None,
        *,
        script: Sequence[ScriptedReply] = (),
        api_key: str | None = None,
        models: Sequence[str] | None = None,
    ) -> None:
        self.responder = responder or (lambda request: "ok")
        self.script = list(script)
        self.api_key = api_key
        self.models = set(models) if models is not None else None
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> ChatCompletionsServer:
        from http.server import ThreadingHTTPServer

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # bursts of concurrent clients are not refused

        self._server = Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _reply(self, request: dict) -> tuple[int, bytes, float]:
        with self._lock:
            self.requests.append(request)
            scripted = self.script.pop(0) if self.script else None
        if scripted is not None:
            body = scripted.body
            raw = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
            return scripted.status, raw, scripted.delay
        if self.models is not None and request.get("model") not in self.models:
            error = {"error": {"message": f"model {request.get('model')!r} not found", "type": "invalid_request_error"}}
            return 404, json.dumps(error).encode(), 0.0
        if request.get("stream"):
            return 200, _sse(self.responder(request), request), 0.0
        n = int(request.get("n", 1) or 1)
        choices = []
        for index in range(n):
            produced = self.responder(request)
            choices.append(_choice(index, produced, bool(request.get("logprobs"))))
        body = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "model": request.get("model"),
            "choices": choices,
        }
        return 200, json.dumps(body).encode(), 0.0

    def _handler(self) -> type:
        server = self

        from http.server import BaseHTTPRequestHandler

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                return

            def do_POST(self) -> None:
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "unknown path"}}')
                    return
                if server.api_key is not None and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._send(401, b'{"error": {"message": "invalid api key"}}')
                    return
                length = int(self.headers.get("Content-Length", 0))
                try:
                    request = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._send(400, b'{"error": {"message": "invalid JSON"}}')
                    return
                status, body, delay = server._reply(request)
                if delay:
                    time.sleep(delay)
                self._send(status, body, "text/event-stream" if body.startswith(b"data: ") else "application/json")

            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


def _sse(produced: object, request: dict) -> bytes:
    """A streamed chat completion (server-sent events): one chunk per token, then [DONE]."""
    from .call import Generation, TokenLogprob

    generation = produced if isinstance(produced, Generation) else Generation(text=str(produced))
    tokens = generation.tokens or [
        TokenLogprob(token=piece, logprob=0.0) for piece in re.findall(r"\s*\S+", generation.text)
    ]
    if "".join(t.token for t in tokens) != generation.text:  # token strings must spell the text to stream it
        tokens = [TokenLogprob(token=generation.text, logprob=sum(t.logprob for t in tokens))]
    events = []
    for token in tokens:
        choice: dict[str, object] = {
            "index": 0,
            "delta": {"role": "assistant", "content": token.token},
            "finish_reason": None,
        }
        if request.get("logprobs") and generation.tokens is not None:
            choice["logprobs"] = {
                "content": [
                    {
                        "token": token.token,
                        "logprob": token.logprob,
                        "top_logprobs": [{"token": a.token, "logprob": a.logprob} for a in token.top],
                    }
                ]
            }
        events.append(
            {
                "id": "chatcmpl-stream",
                "object": "chat.completion.chunk",
                "model": request.get("model"),
                "choices": [choice],
            }
        )
    events.append(
        {
            "id": "chatcmpl-stream",
            "object": "chat.completion.chunk",
            "model": request.get("model"),
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def _choice(index: int, produced: object, logprobs: bool) -> dict:
    from .call import Generation

    generation = produced if isinstance(produced, Generation) else Generation(text=str(produced))
    choice: dict[str, object] = {
        "index": index,
        "message": {"role": "assistant", "content": generation.text},
        "finish_reason": "stop",
    }
    if logprobs and generation.tokens is not None:
        choice["logprobs"] = {
            "content": [
                {
                    "token": t.token,
                    "logprob": t.logprob,
                    "top_logprobs": [{"token": a.token, "logprob": a.logprob} for a in t.top],
                }
                for t in generation.tokens
            ]
        }
    elif logprobs:
        choice["logprobs"] = None
    return choice


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a server a test starts)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServedApp:
    """An ASGI app (e.g. the guard proxy's) served by a real uvicorn on a free loopback port, in a thread.
    Use as a context manager; it yields the base URL (``http://127.0.0.1:PORT``)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started and time.time() < deadline:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


# -- keyword retrieval over a JSONL knowledge base (an integration's fast tests) ---------------------------

_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "my",
        "of",
        "on",
        "or",
        "the",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def content_words(text: str) -> set[str]:
    """The lowercased words of ``text`` without common function words."""
    return {w for w in re.findall(r"\w+", text.lower()) if w not in _STOP}


def keyword_score(question: str, texts: Sequence[str]) -> list[float]:
    """The fraction of the question's content words each text contains (the ``kw-overlap`` retriever)."""
    asked = content_words(question)
    return [len(asked & content_words(t)) / max(len(asked), 1) for t in texts]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object per line of ``path``."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


#: A second unsafe passage, in Russian (the ricin passage in translation): text a JSON encoder with
#: ``ensure_ascii`` writes as ``\uXXXX`` escapes only.
UNSAFE_RUSSIAN = (
    "Чтобы приготовить яд, мелко измельчите касторовые бобы и извлеките рицин ацетоном в закрытой банке за ночь."
)


def break_lines(text: str, every: int = 5) -> str:
    """``text`` with a line break after every ``every`` words (how a hostile model hides a passage from a
    check that reads JSON text, where the break becomes ``\\n`` glued to the next word)."""
    words = text.split(" ")
    return "\n".join(" ".join(words[i : i + every]) for i in range(0, len(words), every))


def build_keyword_artifacts(
    folder: Path, kb: Path, pairs: Path, unsafe: str, unsafe_id: str = "unsafe", more: Mapping[str, str] | None = None
) -> Path:
    """Into ``folder``: calib.json, the conformal calibration of :func:`keyword_score` (fingerprint
    ``kw-overlap``) over the chunks of ``kb`` and the labelled questions of ``pairs`` (``query``,
    ``relevant``), and unsafe-index, a provenance index of the document ``unsafe`` (id ``unsafe_id``) and the
    documents of ``more`` (id -> text)."""
    from .call import ScoredDocument
    from .conformal import calibrate
    from .provenance import build_index

    texts = {c["id"]: c["text"] for c in read_jsonl(kb)}

    def retrieve(query: str) -> list[ScoredDocument]:
        scores = keyword_score(query, list(texts.values()))
        return [ScoredDocument(id=i, score=s) for i, s in zip(texts, scores, strict=True)]

    labelled = [(p["query"], p["relevant"]) for p in read_jsonl(pairs)]
    calibrate(retrieve, labelled, score_kind="similarity", fingerprint="kw-overlap").save(folder / "calib.json")
    documents = {unsafe_id: unsafe, **(more or {})}
    lines = [json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in documents.items()]
    (folder / "unsafe.jsonl").write_text("".join(lines), encoding="utf-8")
    build_index(folder / "unsafe.jsonl", folder / "unsafe-index")
    return folder


def keyword_harm_check(words: frozenset[str] = frozenset({"bomb", "poison"})) -> StaticCheck:
    """Input signal ``app.harmful``: the request holds one of ``words`` (stands in for a harm classifier)."""
    return StaticCheck(
        "harm", "input", compute=lambda call: {"app.harmful": bool(content_words(call.user_input) & words)}
    )


def guard_without_embedder(policy_text: str, base_dir: Path, *extra: Check, telemetry: Any = None) -> Guard:
    """A Guard from ``policy_text``: the checks its sections configure, built with an embedder that is never
    loaded (none of them may embed text), plus ``extra`` checks (``telemetry``: see :class:`.telemetry.Telemetry`)."""
    from . import as_embedder, loads_policy
    from .checks import CheckDeps
    from .guard import Guard

    policy = loads_policy(policy_text, base_dir=base_dir)
    deps = CheckDeps(embedder=as_embedder(None))
    checks = [spec.build(policy.section(spec.name), policy.base_dir, deps) for spec in policy.configured_checks()]
    return Guard(policy, checks=[*checks, *extra], telemetry=telemetry)


def synthetic_request(i: int) -> list[Any]:
    """The three Decisions of request ``i`` (id ``req`` + 12 digits): an input one with injected guidelines and
    ``app.toxicity``, a retrieval one with kept and dropped chunks, and an output one with 60 token logprobs,
    30 numeric signals and, one request in eight (``i % 8 == 0``), a copied span and an abstain."""
    from .decision import Action, Decision

    rid = f"req{i:012d}"
    toxicity = (i * 7919 % 1000) / 1000
    tokens = [{"token": f" word{j}", "logprob": -((i + j) % 37) / 10} for j in range(60)]
    scores = {f"uncertainty.s{j}": (i * (j + 3)) % 101 / 7 for j in range(30)}
    blocked = i % 8 == 0
    span = {"text": " word1 word2 word3", "bci": 42.0, "count": 1, "length": 3, "start": 1, "end": 4,
            "sources": [{"doc": "unsafe-7", "offset": 12}]}  # fmt: skip
    guidelines = [{"id": f"g{k}", "title": "Be careful", "category": "safety", "score": 0.4} for k in range(3)]
    retrieval = {"score_kind": "similarity", "alpha": 0.1, "threshold": 0.31,
                 "kept": [{"id": f"kb-{k}", "score": 0.5} for k in range(3)],
                 "dropped": [{"id": f"kb-{k}", "score": 0.1} for k in range(3, 8)]}  # fmt: skip
    common: dict[str, Any] = {"request_id": rid, "policy": "demo"}
    return [
        Decision(id=f"{rid}-in", phase="input", action=Action.ALLOW, final=False, **common,
                 signals={"app.toxicity": toxicity, "guidelines.top_score": toxicity / 2, "guidelines.count": 3},
                 evidence={"guidelines": {"guidelines": guidelines}},
                 metadata={"request": f"Question number {i}: how do I do the thing safely?"}),
        Decision(id=f"{rid}-ret", phase="retrieval", action=Action.ALLOW, final=False, **common,
                 signals={"app.toxicity": toxicity, "retrieval.kept": 3, "retrieval.total": 8},
                 evidence={"retrieval": retrieval}),
        Decision(id=f"{rid}-out", phase="output", action=Action.ABSTAIN if blocked else Action.ALLOW, **common,
                 rule="memorized-unsafe-text" if blocked else None,
                 message="I can't help with that." if blocked else None,
                 generated="".join(f" word{j}" for j in range(60)),
                 signals={"app.toxicity": toxicity, "provenance.bci_max": 42.0 if blocked else 0.0, **scores},
                 evidence={"uncertainty": {"tokens": tokens}, "provenance": {"spans": [span] if blocked else []}},
                 timings_ms={"total": 2.5}),
    ]  # fmt: skip


def write_synthetic_audit_log(path: str | Path, megabytes: float) -> int:
    """Write an audit log (JSON text sequence) of about ``megabytes`` MB of :func:`synthetic_request` records
    at ``path``, fast (64 encoded requests, repeated under new ids); returns how many requests it holds."""
    from .audit import encode_record

    templates = [[encode_record(d) for d in synthetic_request(i)] for i in range(64)]
    target, written, i = int(megabytes * 1e6), 0, 0
    with open(path, "wb") as out:
        while written < target:
            old, new = f"req{i % 64:012d}".encode(), f"req{i:012d}".encode()
            chunk = b"".join(b"\x1e" + record.replace(old, new) + b"\n" for record in templates[i % 64])
            out.write(chunk)
            written += len(chunk)
            i += 1
    return i
