"""Load test of the guard proxy on 127.0.0.1: 2,000 requests, 50 concurrent, with 1 and 2 workers; then the cost of
one proxied request in one process.

The upstream (the library's local OpenAI-compatible test server) and the proxy (`guardrails-uq serve`, uvicorn,
`--workers` 1 and 2) run in their own processes; the proxy runs a
policy with the provenance (TraceShield) and uncertainty checks. Baseline in the same process: the same
load sent straight to the upstream. Reports throughput, median and p99 latency of both, the added latency,
the Guard's own time per request, errors (which must be 0; their kinds are listed when there are any: a
`ReadError` from a connection reset is a keep-alive race, the server closing an idle connection as the client
reuses it) and the peak RSS of every process of each configuration (read from /proc before it stops).
The load generator and both servers share the machine's cores.

In-process part (a subprocess of its own, no sockets): the proxy app through httpx.ASGITransport with the
upstream on an httpx.MockTransport, one request at a time, against the same requests sent straight to the
mock upstream in the same process: median per request, the proxy's added time, the share spent in garbage
collection, for the load test's answer (16 tokens, 2 alternatives each) and a long one (256 tokens, 5
alternatives each: what the proxy asks an upstream for by default); the long one also before the app's
objects are frozen out of the garbage collector's full passes (`guardrails-uq serve` freezes them at start).

    python bench/serve.py [--requests 2000] [--concurrency 50] [--workers 1 2] [--in-process-only]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import child_pids, fmt_mb, machine, peak_rss_mb

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
BODY = {"model": "m", "messages": [{"role": "user", "content": "How do I export a notebook as PDF?"}]}


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


def long_reply(request: dict) -> Generation:
    """256 tokens, 5 alternatives each (the proxy's default top_logprobs), no copied span, confident."""
    tokens = [
        TokenLogprob(
            token=f"word{i % 50} ",
            logprob=-0.1 - 0.001 * (i % 7),
            top=[TopLogprob(token=f"word{i % 50}{j}", logprob=-0.1 - j) for j in range(5)],
        )
        for i in range(256)
    ]
    return Generation(text="".join(t.token for t in tokens), tokens=tokens)


def error_kind(exc: BaseException) -> str:
    """The exception's type and, where it differs, the root cause's (e.g. ReadError (ConnectionResetError))."""
    root = exc
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    return type(exc).__name__ if type(root) is type(exc) else f"{type(exc).__name__} ({type(root).__name__})"


async def load(url: str, requests: int, concurrency: int) -> tuple[list[float], dict[str, int], float]:
    """(latencies, error kinds with counts, seconds) of ``requests`` POSTs, ``concurrency`` at a time."""
    latencies: list[float] = []
    kinds: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            try:
                response = await client.post(url, json=BODY)
                if response.status_code != 200:
                    kind = f"HTTP {response.status_code} {response.text[:120]}"
                    kinds[kind] = kinds.get(kind, 0) + 1
            except httpx.HTTPError as exc:
                kinds[error_kind(exc)] = kinds.get(error_kind(exc), 0) + 1
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, kinds, time.perf_counter() - started


def prepare(folder: Path) -> None:
    (folder / "unsafe.jsonl").write_text(
        "".join(
            json.dumps({"id": str(i), "text": f"unsafe document {i} about dangerous things number {i * 7}"}) + "\n"
            for i in range(2000)
        )
    )
    build_index(folder / "unsafe.jsonl", folder / "unsafe-index")
    (folder / "policy.yaml").write_text(POLICY)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--in-process-only", action="store_true")
    parser.add_argument("--in-process-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process_child:
        print(json.dumps(in_process(args.in_process_child)))
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    prepare(folder)
    print(f"machine: {machine()}")
    if not args.in_process_only:
        load_test(folder, args)
    in_process_table(folder)


def load_test(folder: Path, args: argparse.Namespace) -> None:
    upstream_code = (
        f"import sys, time; sys.path.insert(0, {str(Path(__file__).parent)!r}); from serve import reply; "
        "from guardrails_uq.testing import ChatCompletionsServer; "
        "server = ChatCompletionsServer(reply).__enter__(); print(server.base_url, flush=True); sys.stdin.read()"
    )
    upstream = subprocess.Popen(
        [sys.executable, "-c", upstream_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert upstream.stdout is not None and upstream.stdin is not None
    upstream_url = upstream.stdout.readline().strip()
    try:
        direct, direct_errors, direct_seconds = asyncio.run(
            load(f"{upstream_url}/chat/completions", args.requests, args.concurrency)
        )
        loadgen_peak = peak_rss_mb()
        runs = {workers: run_proxy(folder, upstream_url, workers, args) for workers in args.workers}
        upstream_peak = peak_rss_mb(upstream.pid)
    finally:
        upstream.stdin.close()
        upstream.terminate()
        upstream.wait(timeout=10)

    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def errors(kinds: dict[str, int]) -> str:
        return "" if not kinds else "  errors: " + ", ".join(f"{kind} x{n}" for kind, n in sorted(kinds.items()))

    print(f"load test: {args.requests} requests, {args.concurrency} concurrent, loopback")
    print(f"{'':<26} {'req/s':>8} {'p50':>9} {'p99':>9} {'errors':>7} {'vs direct':>10}")
    print(
        f"{'direct to upstream':<26} {args.requests / direct_seconds:>8.0f} {statistics.median(direct) * 1e3:>7.1f}ms "
        f"{p(direct, 0.99) * 1e3:>7.1f}ms {sum(direct_errors.values()):>7} {1.0:>10.2f}{errors(direct_errors)}"
    )
    for workers, (proxied, kinds, seconds, guard_ms, peaks) in runs.items():
        print(
            f"{f'proxy, {workers} worker(s)':<26} {args.requests / seconds:>8.0f} {statistics.median(proxied) * 1e3:>7.1f}ms "
            f"{p(proxied, 0.99) * 1e3:>7.1f}ms {sum(kinds.values()):>7} {direct_seconds / seconds:>10.2f}{errors(kinds)}"
        )
        print(
            f"  added latency: median {(statistics.median(proxied) - statistics.median(direct)) * 1e3:.1f} ms; "
            f"Guard time per request (mean, one worker's view) {guard_ms:.2f} ms"
        )
        print(f"  peak RSS: {peaks}")
    print(
        f"peak RSS: upstream process {fmt_mb(upstream_peak)} (served every configuration); "
        f"load generator (this process) {fmt_mb(loadgen_peak)}"
    )


def run_proxy(
    folder: Path, upstream_url: str, workers: int, args: argparse.Namespace
) -> tuple[list[float], dict[str, int], float, float, str]:
    """Start `guardrails-uq serve --workers N`, load it, stop it: (latencies, error kinds, seconds, Guard
    ms/request, the peak RSS of its processes)."""
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
        proxied, kinds, seconds = asyncio.run(
            load(f"http://127.0.0.1:{port}/v1/chat/completions", args.requests, args.concurrency)
        )
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        if workers > 1:  # uvicorn's supervisor, its workers and multiprocessing's resource tracker
            children = {pid: peak_rss_mb(pid) for pid in child_pids(proxy.pid)}
            spawned = [mb for pid, mb in children.items() if _spawned_worker(pid)]
            supervisor = peak_rss_mb(proxy.pid)
            peaks = (
                f"workers {' + '.join(fmt_mb(mb) for mb in spawned)}, supervisor {fmt_mb(supervisor)}, "
                f"other {fmt_mb(sum(children.values()) - sum(spawned))}; {fmt_mb(supervisor + sum(children.values()))} in all"
            )
        else:
            peaks = f"{fmt_mb(peak_rss_mb(proxy.pid))} (one process)"
    finally:
        proxy.terminate()
        proxy.wait(timeout=20)

    def metric(name: str) -> float:
        return float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith(name)))

    guard_ms = metric("guardrails_guard_seconds_sum") / max(metric("guardrails_guard_seconds_count"), 1) * 1e3
    return proxied, kinds, seconds, guard_ms, peaks


def _spawned_worker(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# -- one request at a time, in one process --------------------------------------------------------------------


def in_process(folder: Path, rounds: int = 7) -> dict[str, Any]:
    """Runs in a subprocess: per answer size, (direct, proxied) median seconds per request, GC share, peak RSS."""
    from guardrails_uq.server.app import create_app, freeze_loaded
    from guardrails_uq.server.config import ServeConfig
    from guardrails_uq.testing import _choice

    bodies: dict[tuple[str, bool], bytes] = {}
    for name, produce in (("short", reply), ("long", long_reply)):
        for logprobs in (False, True):
            choice = _choice(0, produce({}), logprobs)
            usage = {"prompt_tokens": 12, "completion_tokens": 256, "total_tokens": 268}
            bodies[name, logprobs] = json.dumps({"id": "u", "object": "chat.completion", "model": "m",
                                                 "choices": [choice], "usage": usage}).encode()  # fmt: skip
    answer = ["short"]

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bodies[answer[0], bool(json.loads(request.content).get("logprobs"))])

    config = ServeConfig(policy=folder / "policy.yaml", upstream="http://upstream/v1", rate_per_second=1e9, burst=10**9)
    app = create_app(config, upstream=httpx.MockTransport(upstream))
    collecting = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collecting[0] = time.perf_counter()
        else:
            collecting[1] += time.perf_counter() - collecting[0]

    async def per_request(client: httpx.AsyncClient, url: str, number: int) -> tuple[float, float]:
        """(median seconds per request over ``rounds`` rounds of ``number``, GC seconds per request)."""
        for _ in range(max(number // 4, 5)):  # warm up
            assert (await client.post(url, json=BODY)).status_code == 200
        means, collecting[1] = [], 0.0
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(number):
                await client.post(url, json=BODY)
            means.append((time.perf_counter() - t0) / number)
        return statistics.median(means), collecting[1] / (rounds * number)

    async def measure() -> dict[str, Any]:
        out: dict[str, Any] = {}
        gc.callbacks.append(on_gc)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.MockTransport(upstream)) as direct,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as proxy,
        ):
            answer[0] = "long"  # first: the process as it was before freeze_loaded()
            out["long, unfrozen"] = {"proxied": await per_request(proxy, "http://proxy/v1/chat/completions", 40)}
            freeze_loaded()  # as `guardrails-uq serve` does once its app is built
            for name, number in (("short", 200), ("long", 40)):
                answer[0] = name
                out[name] = {
                    "direct": await per_request(direct, "http://upstream/v1/chat/completions", number),
                    "proxied": await per_request(proxy, "http://proxy/v1/chat/completions", number),
                }
        return out

    result = asyncio.run(measure())
    result["peak_mb"] = peak_rss_mb()
    return result


def in_process_table(folder: Path) -> None:
    done = subprocess.run(
        [sys.executable, __file__, "--in-process-child", str(folder)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the in-process run failed:\n{done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    print("\nin one process, one request at a time (httpx.ASGITransport; upstream on httpx.MockTransport):")
    print(f"{'answer':<34} {'direct':>9} {'proxied':>9} {'added':>9} {'ratio':>6} {'of which GC':>12}")
    rows = (("short", "short", "16 tokens x 2 alternatives"), ("long", "long", "256 tokens x 5 alternatives"),
            ("long", "long, unfrozen", "  the same, before gc.freeze()"))  # fmt: skip
    for base, name, label in rows:
        (direct, _), (proxied, collecting) = out[base]["direct"], out[name]["proxied"]
        print(
            f"{label:<34} {direct * 1e6:>7.0f}µs {proxied * 1e6:>7.0f}µs {(proxied - direct) * 1e6:>7.0f}µs "
            f"{proxied / direct:>6.1f} {collecting * 1e6:>10.0f}µs"
        )
    print(f"peak RSS of that process (both answers, direct and proxied): {fmt_mb(out['peak_mb'])}")


if __name__ == "__main__":
    main()
