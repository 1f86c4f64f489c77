"""Audit log at scale: peak memory and time of `audit stats`, `report` and `replay` on a generated log.

Writes a log of realistic records (``guardrails_uq.testing.synthetic_request``: each request an input Decision
with injected guidelines, a retrieval one with kept and dropped chunks, an output one with 60 token logprobs
and 30 numeric signals; one request in eight abstains on a copied span), about ``--mb`` MB (default 400), then
runs each command in a fresh child
process and reads the child's own peak RSS (VmHWM, never ``ru_maxrss``). Target: every command under 300 MB
whatever the log size (they stream; the report keeps a bounded sample of request cards).

    python bench/audit_scale.py [--mb 400] [--log existing.jsonl]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import child_python, fmt_mb, machine, reported_peak_mb

from guardrails_uq.testing import write_synthetic_audit_log

POLICY = """version: 1
name: stricter
signals: {app.toxicity: number}
rules:
  - {name: toxic, at: input, when: "app.toxicity > 0.5", action: abstain}
default: allow
"""


def run(args: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stderr tail) of ``guardrails-uq ARGS`` in a fresh child process."""
    code = (
        f"import sys; from guardrails_uq.cli import main; rc = main({args!r}); sys.stdout.flush(); assert rc == 0, rc"
    )
    started = time.perf_counter()
    result = subprocess.run(child_python(code), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{result.stderr[-2000:]}")
    progress = [line for line in result.stderr.splitlines() if not line.startswith("bench-peak")]
    return seconds, reported_peak_mb(result.stderr), (progress[-1] if progress else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=400.0)
    parser.add_argument("--log", type=Path, default=None, help="use this log instead of generating one")
    parser.add_argument("--only", default="stats,report,replay")
    options = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log = options.log
        if log is None:
            log = folder / "audit.jsonl"
            started = time.perf_counter()
            requests = write_synthetic_audit_log(log, options.mb)
            size = log.stat().st_size
            print(f"log: {size / 1e6:,.0f} MB, {requests:,} requests, {3 * requests:,} decisions "
                  f"(written in {time.perf_counter() - started:.1f} s)")  # fmt: skip
        (folder / "policy.yaml").write_text(POLICY)
        commands = {
            "stats": ["audit", "stats", str(log), "--json"],
            "report": ["report", str(log), "-o", str(folder / "report.html")],
            "replay": ["replay", str(log), "--policy", str(folder / "policy.yaml"), "--json"],
        }
        print(f"{'command':<8} {'seconds':>8} {'peak RSS':>10}  last progress line")
        for name in options.only.split(","):
            seconds, peak, last = run(commands[name])
            print(f"{name:<8} {seconds:>8.1f} {fmt_mb(peak):>10}  {last[:70]}", flush=True)
        if (folder / "report.html").exists():
            print(f"report.html: {(folder / 'report.html').stat().st_size / 1e6:,.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
