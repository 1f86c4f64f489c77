"""Tenants: what serving a policy per tenant costs a request (``serve --policies DIR``).

Two numbers. (1) ``Tenants.select``, the per-request choice of a policy from the key and the
``X-Guardrails-Policy`` header, for a key with one policy (no header) and for a ``*`` key naming the last of
N policies, at N = 2 and N = 100: it should not grow with N. (2) A whole request through the proxy app
in process (httpx ASGI transport, an in-process upstream, rule-only policies so the proxy's own work
dominates): one ``--policy`` vs the same policy as one of 100 in a folder, chosen by the header, their
requests interleaved (the machine is shared: both see the same load); p50 of each and the ratio.

    python bench/tenants.py [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _common import fmt_us, machine, median_seconds

from guardrails_uq.server import KeyGrant, ServeConfig, Tenants, create_app
from guardrails_uq.server.app import freeze_loaded

POLICY = "version: 1\nname: {name}\nrules: []\n"
ANSWER = {"id": "u", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Open Settings."},
                                  "finish_reason": "stop"}]}  # fmt: skip


def folder(root: Path, n: int) -> Path:
    path = root / f"policies-{n}"
    path.mkdir()
    for i in range(n):
        (path / f"t{i:03d}.yaml").write_text(POLICY.format(name=f"t{i:03d}"))
    return path


def select_costs(root: Path) -> list[str]:
    lines = []
    for n in (2, 100):
        last = f"t{n - 1:03d}"
        grants = {"k-one": KeyGrant((last,), "keys:1"), "k-all": KeyGrant(("*",), "keys:2")}
        tenants = Tenants.load(None, folder(root, n), grants)
        try:
            one = median_seconds(lambda: tenants.select("k-one", []))  # noqa: B023 (used at once)
            named = median_seconds(lambda: tenants.select("k-all", [last]))  # noqa: B023
        finally:
            tenants.close()
        lines.append(f"| {n} | {fmt_us(one)} | {fmt_us(named)} |")
    return lines


async def p50s(setups: list[tuple[ServeConfig, dict[str, str]]], requests: int) -> list[float]:
    """p50 latency of each (config, headers) app, their requests interleaved so that all see the same load."""
    apps = [create_app(config, upstream=httpx.MockTransport(lambda r: httpx.Response(200, json=ANSWER)))
            for config, _ in setups]  # fmt: skip
    freeze_loaded()  # as `serve` does once the app is built
    body = {"model": "m", "messages": [{"role": "user", "content": "How do I export?"}]}
    samples: list[list[float]] = [[] for _ in setups]
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for app in apps:
            await stack.enter_async_context(app.router.lifespan_context(app))
            clients.append(await stack.enter_async_context(httpx.AsyncClient(transport=httpx.ASGITransport(app=app))))
        for i in range(requests + 20):
            for k, (client, (_, headers)) in enumerate(zip(clients, setups, strict=True)):
                t0 = time.perf_counter()
                response = await client.post("http://proxy/v1/chat/completions", json=body, headers=headers)
                if i >= 20:  # warm-up
                    samples[k].append(time.perf_counter() - t0)
                assert response.status_code == 200, response.text
    return [statistics.median(s) for s in samples]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"Machine: {machine()}\n")
        print("`Tenants.select` (median):\n\n| policies served | one-policy key, no header | `*` key naming the last |")
        print("|---|---|---|")
        print("\n".join(select_costs(root)))
        single = root / "single.yaml"
        single.write_text(POLICY.format(name="t099"))
        many = root / "policies-100"
        keys = {"k": KeyGrant(("*",), "keys:1")}
        limits = {"upstream": "http://up/v1", "rate_per_second": 1e9, "burst": 10**9}
        one, tenant = asyncio.run(
            p50s(
                [
                    (ServeConfig(policy=single, **limits), {}),  # type: ignore[arg-type]
                    (ServeConfig(policies=many, api_keys=keys, **limits),  # type: ignore[arg-type]
                     {"Authorization": "Bearer k", "X-Guardrails-Policy": "t099"}),
                ],
                args.requests,
            )
        )  # fmt: skip
        print(f"\nA whole request in process, p50 over {args.requests}: `--policy` {fmt_us(one)}, one of 100 by "
              f"header {fmt_us(tenant)} (ratio {tenant / one:.2f}).")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
