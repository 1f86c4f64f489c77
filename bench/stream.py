"""Cost of guarding one long stream in ``cut`` mode: 2k / 8k / 16k-token answers through the proxy app.

The proxy app runs in this process (httpx.ASGITransport); the upstream is an httpx.MockTransport that returns
the whole SSE stream at once (one chunk per token, 5 alternatives each: what the proxy asks for by default),
so the time measured is the proxy's own. The policy has the provenance (TraceShield) and uncertainty checks,
window 16 (the default). While the stream runs, ``/healthz`` is polled on the same event loop every 20 ms;
its latency is counted from when the poll was due, so its worst value is how long the loop was blocked. Reports, per length: seconds for the stream, microseconds
per token (flat when the cost grows linearly with the length), checks run on the prefix, and the median and
worst ``/healthz`` latency.

``--before`` also runs, in the same process, the way streams were checked before (every output check on the
whole prefix at every decision, on the event loop), for the lengths given to ``--before-tokens``.

    python bench/stream.py [--tokens 2000 8000 16000] [--before] [--before-tokens 2000 8000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine
from serve import prepare

_TEXT = (
    "open settings choose export pick the file and press save then check your downloads folder for a copy "
    "of the report which lists every item you selected along with its date size owner and current status"
)
WORDS = _TEXT.split()


def sse_body(n: int, seed: int = 7) -> bytes:
    """A benign n-token answer as an upstream SSE stream with logprobs (5 alternatives a token)."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        word = rng.choice(WORDS) + ("." if i % 15 == 14 else "")
        token = (" " if i else "") + word
        logprob = -0.05 - 0.3 * rng.random()
        top = [{"token": token, "logprob": logprob}] + [
            {"token": f" {rng.choice(WORDS)}", "logprob": logprob - 1.0 - j} for j in range(4)
        ]
        choice = {"index": 0, "delta": {"content": token}, "finish_reason": None,
                  "logprobs": {"content": [{"token": token, "logprob": logprob, "top_logprobs": top}]}}  # fmt: skip
        if i == 0:
            choice["delta"]["role"] = "assistant"
        events.append({"id": "u", "object": "chat.completion.chunk", "model": "m", "choices": [choice]})
    events.append({"id": "u", "object": "chat.completion.chunk", "model": "m",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})  # fmt: skip
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


async def one_stream(app: object, body: bytes) -> dict[str, float]:
    """Seconds for the stream, and /healthz latencies (s) sampled while it ran."""
    request = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "How do I export?"}]}
    health: list[float] = []
    done = asyncio.Event()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=3600) as client:  # type: ignore[arg-type]

        async def poll() -> None:
            while not done.is_set():
                due = time.perf_counter() + 0.02
                await asyncio.sleep(0.02)  # a blocked event loop wakes this late: the lag counts as latency
                assert (await client.get("http://proxy/healthz")).status_code == 200
                health.append(time.perf_counter() - due)

        poller = asyncio.create_task(poll())
        t0 = time.perf_counter()
        response = await client.post("http://proxy/v1/chat/completions", json=request)
        seconds = time.perf_counter() - t0
        done.set()
        await poller
    last = json.loads([line for line in response.text.splitlines() if line.startswith("data: {")][-1][6:])
    assert last["guardrails"]["action"] == "allow", last
    return {"seconds": seconds, "health_p50": statistics.median(health), "health_max": max(health)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[2000, 8000, 16000])
    parser.add_argument("--before", action="store_true", help="also measure the old way of checking streams")
    parser.add_argument("--before-tokens", type=int, nargs="+", default=[2000, 8000])
    args = parser.parse_args()
    from guardrails_uq.server.app import create_app, freeze_loaded
    from guardrails_uq.server.config import ServeConfig

    folder = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    prepare(folder)
    bodies = {n: sse_body(n) for n in {*args.tokens, *args.before_tokens}}
    current = [0]

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bodies[current[0]], headers={"content-type": "text/event-stream"})

    config = ServeConfig(
        policy=folder / "policy.yaml", upstream="http://upstream/v1", rate_per_second=1e9, burst=10**9,
        max_upstream_bytes=256_000_000,
        stream_timeout=3600.0,
    )  # fmt: skip
    app = create_app(config, upstream=httpx.MockTransport(upstream))
    freeze_loaded()  # as `guardrails-uq serve` does once its app is built
    print(f"machine: {machine()}")
    print(f"{'checked':<7} {'tokens':>7} {'stream':>9} {'per token':>10} {'/healthz p50':>13} {'/healthz max':>13}")

    async def run() -> None:
        async with app.router.lifespan_context(app):
            runs = [("now", n) for n in args.tokens] + [("before", n) for n in args.before_tokens if args.before]
            for label, n in runs:
                current[0] = n
                with old_way() if label == "before" else contextlib.nullcontext():
                    out = await one_stream(app, bodies[n])
                print(
                    f"{label:<7} {n:>7} {out['seconds']:>8.2f}s {out['seconds'] / n * 1e6:>8.0f}µs "
                    f"{out['health_p50'] * 1e3:>11.1f}ms {out['health_max'] * 1e3:>11.1f}ms",
                    flush=True,
                )

    asyncio.run(run())


@contextlib.contextmanager
def old_way() -> Iterator[None]:
    """Streams checked as before: every output check on the whole prefix at each decision (the gate without its
    incremental views), on the event loop (no thread hand-off)."""
    from unittest import mock

    from guardrails_uq import streaming
    from guardrails_uq.server import exchange

    class FullPrefixGate(streaming.StreamGate):
        def __init__(self, guard: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(guard, *args, **kwargs)
            self._prefix_guard, self._all_incremental = guard, False

    async def inline(fn: Any, *args: Any) -> Any:
        return fn(*args)

    with (
        mock.patch.object(exchange, "StreamGate", FullPrefixGate),
        mock.patch.object(exchange.asyncio, "to_thread", inline),
    ):
        yield


if __name__ == "__main__":
    main()
