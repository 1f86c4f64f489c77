"""Load test of the guard proxy on 127.0.0.1: 2,000 requests, 50 concurrent, with 1 and 2 workers.

The upstream (the library's local OpenAI-compatible test server) and the proxy (`guardrails-uq serve`, uvicorn,
`--workers` 1 and 2) run in their own processes; the proxy runs a
policy with the provenance (TraceShield) and uncertainty checks. Baseline in the same process: the same
load sent straight to the upstream. Reports throughput, median and p99 latency of both, the added latency,
the Guard's own time per request, and errors (which must be 0).

    python bench/serve.py [--requests 2000] [--concurrency 50] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine

from guardrails_uq import Generation, TokenLogprob, TopLogprob
from guardrails_uq.provenance import build_index

POLICY = """
version: 1
name: bench-proxy
provenance: {index: unsafe-index, min_span: 8}
uncertainty: {score: mean_nll}
rules:
  - {name: memorized-unsafe-text, at: output, when: "provenance.bci_max > 20.0", action: abstain}
  - {name: unsure, at: output, when: "uncertainty.available && uncertainty.mean_nll > 3.0", action: abstain}
"""
ANSWER = "Open Settings, choose Export, pick PDF and press Save; the file lands in your Downloads folder."


def reply(request: dict) -> Generation:
    words = ANSWER.split(" ")
    tokens = [
        TokenLogprob(
            token=w + (" " if i < len(words) - 1 else ""),
            logprob=-0.2,
            top=[TopLogprob(token=w, logprob=-0.2), TopLogprob(token="x", logprob=-2.0)],
        )
        for i, w in enumerate(words)
    ]
    return Generation(text=ANSWER, tokens=tokens)


async def load(url: str, requests: int, concurrency: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    kinds: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    body = {"model": "m", "messages": [{"role": "user", "content": "How do I export a notebook as PDF?"}]}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            try:
                response = await client.post(url, json=body)
                if response.status_code != 200:
                    errors += 1
                    kind = f"{response.status_code} {response.text[:120]}"
                    kinds[kind] = kinds.get(kind, 0) + 1
            except httpx.HTTPError as exc:
                errors += 1
                kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    if kinds:
        print(f"errors from {url}: {kinds}", file=sys.stderr)
    return latencies, errors, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    (folder / "unsafe.jsonl").write_text(
        "".join(
            json.dumps({"id": str(i), "text": f"unsafe document {i} about dangerous things number {i * 7}"}) + "\n"
            for i in range(2000)
        )
    )
    build_index(folder / "unsafe.jsonl", folder / "unsafe-index")
    (folder / "policy.yaml").write_text(POLICY)
    upstream_code = (
        f"import sys, time; sys.path.insert(0, {str(Path(__file__).parent)!r}); from serve import reply; "
        "from guardrails_uq.testing import ChatCompletionsServer; "
        "server = ChatCompletionsServer(reply).__enter__(); print(server.base_url, flush=True); sys.stdin.read()"
    )
    upstream = subprocess.Popen(
        [sys.executable, "-c", upstream_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    upstream_url = upstream.stdout.readline().strip()
    try:
        direct, direct_errors, direct_seconds = asyncio.run(
            load(f"{upstream_url}/chat/completions", args.requests, args.concurrency)
        )
        runs = {workers: run_proxy(folder, upstream_url, workers, args) for workers in args.workers}
    finally:
        upstream.stdin.close()
        upstream.terminate()
        upstream.wait(timeout=10)

    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    print(f"machine: {machine()}; {args.requests} requests, {args.concurrency} concurrent, loopback")
    print(f"{'':<26} {'req/s':>8} {'p50':>9} {'p99':>9} {'errors':>7} {'vs direct':>10}")
    print(
        f"{'direct to upstream':<26} {args.requests / direct_seconds:>8.0f} {statistics.median(direct) * 1e3:>7.1f}ms "
        f"{p(direct, 0.99) * 1e3:>7.1f}ms {direct_errors:>7} {1.0:>10.2f}"
    )
    for workers, (proxied, errors, seconds, guard_ms) in runs.items():
        print(
            f"{f'proxy, {workers} worker(s)':<26} {args.requests / seconds:>8.0f} {statistics.median(proxied) * 1e3:>7.1f}ms "
            f"{p(proxied, 0.99) * 1e3:>7.1f}ms {errors:>7} {direct_seconds / seconds:>10.2f}"
        )
        print(
            f"  added latency: median {(statistics.median(proxied) - statistics.median(direct)) * 1e3:.1f} ms; "
            f"Guard time per request (mean, one worker's view) {guard_ms:.2f} ms"
        )


def run_proxy(
    folder: Path, upstream_url: str, workers: int, args: argparse.Namespace
) -> tuple[list[float], int, float, float]:
    """Start `guardrails-uq serve --workers N`, load it, stop it: (latencies, errors, seconds, Guard ms/request)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "guardrails_uq", "serve", "--policy", str(folder / "policy.yaml"), "--upstream", upstream_url,
         "--port", str(port), "--rate", "1000000", "--burst", "1000000", "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        time.sleep(1.0 if workers > 1 else 0.0)  # let every worker finish starting
        proxied, errors, seconds = asyncio.run(
            load(f"http://127.0.0.1:{port}/v1/chat/completions", args.requests, args.concurrency)
        )
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        proxy.terminate()
        proxy.wait(timeout=20)

    def metric(name: str) -> float:
        return float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith(name)))

    return (
        proxied,
        errors,
        seconds,
        metric("guardrails_guard_seconds_sum") / max(metric("guardrails_guard_seconds_count"), 1) * 1e3,
    )


if __name__ == "__main__":
    main()
