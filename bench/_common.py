"""Shared bench helpers: repeatable timing with medians, and a machine line."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], *, repeat: int = 7, number: int | None = None) -> float:
    """Median over ``repeat`` rounds of the mean time of ``number`` calls (auto-sized to ~0.2 s a round)."""
    fn()  # warm up
    if number is None:
        number, elapsed = 1, 0.0
        while True:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            elapsed = time.perf_counter() - t0
            if elapsed > 0.2 or number >= 1_000_000:
                break
            number *= 4
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - t0) / number)
    return statistics.median(rounds)


def percentile_seconds(fn: Callable[[], object], *, calls: int = 300) -> tuple[float, float]:
    """(median, p99) of single-call latencies."""
    fn()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.99 * len(samples)))]


def machine() -> str:
    return (
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, {platform.machine()}"
    )


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs"
