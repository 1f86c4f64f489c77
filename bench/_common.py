"""Shared bench helpers: repeatable timing with medians, peak memory (RSS) of a process, and a machine line."""

from __future__ import annotations

import atexit
import math
import os
import platform
import statistics
import sys
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


# -- footprint: peak resident set size ------------------------------------------------------------------------
# Read from /proc/<pid>/status (VmHWM), never from resource.getrusage(...).ru_maxrss: Linux carries ru_maxrss
# across fork and exec, so a child would report its parent's (the bench's) peak when that is larger.


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident set size (VmHWM) in MB of this process, or of the running process ``pid``; NaN without /proc."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return math.nan


def reset_peak_rss() -> None:
    """Start this process's peak RSS afresh from its current RSS, so that :func:`peak_rss_mb` after a configuration
    is that configuration's peak (with what the process already held) when several run in one process."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # 5: reset VmHWM only (Linux >= 4.0)
    except OSError:
        pass


def child_pids(pid: int) -> list[int]:
    """The running child processes of ``pid`` (e.g. a server's workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except OSError:
        return []


_PEAK_MARK = "bench-peak-rss-mb"


def child_python(code: str) -> list[str]:
    """argv of a fresh Python running ``code`` that reports its own peak RSS on stderr when it exits normally
    (read it with :func:`reported_peak_mb`)."""
    here = os.path.dirname(os.path.abspath(__file__))
    prologue = (
        f"import sys; sys.path.insert(0, {here!r}); from _common import report_peak_at_exit; report_peak_at_exit()"
    )
    return [sys.executable, "-c", f"{prologue}\n{code}"]


def report_peak_at_exit() -> None:
    """In a child process: write ``bench-peak-rss-mb <MB>`` on stderr at exit (see :func:`reported_peak_mb`)."""
    atexit.register(lambda: print(f"{_PEAK_MARK} {peak_rss_mb():.1f}", file=sys.stderr, flush=True))


def reported_peak_mb(stderr: str) -> float:
    """The peak RSS a child reported with :func:`report_peak_at_exit` (NaN when it did not)."""
    lines = [line for line in stderr.splitlines() if line.startswith(_PEAK_MARK)]
    return float(lines[-1].split()[1]) if lines else math.nan


def fmt_mb(mb: float) -> str:
    return f"{mb:,.0f} MB"
