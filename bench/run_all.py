"""Run every bench/ script and write BENCHMARKS.md from their output (`make bench`).

Nothing in BENCHMARKS.md is typed by hand: each section is the verbatim output of one script, run here.
"""

from __future__ import annotations

import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != "run_all.py")
    sections = []
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        print(result.stdout, flush=True)
        if result.returncode != 0:
            failed.append(script.name)
            print(result.stderr[-3000:], file=sys.stderr)
        doc = (script.read_text(encoding="utf-8").split('"""')[1].strip().splitlines() or [""])[0]
        body = (
            result.stdout.strip()
            if result.returncode == 0
            else f"FAILED (exit {result.returncode})\n{result.stderr[-1500:]}"
        )
        sections.append(f"## {script.name}\n\n{doc}\n\n```\n{body}\n```\n\n({elapsed:.0f} s)\n")
    head = (
        "# Benchmarks\n\nWritten by `make bench` (bench/run_all.py) on "
        f"{datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}: {platform.node() or 'this machine'}, "
        f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}. Every number below is the "
        "output of the script named in its section; medians over repeated runs, ratios against a baseline measured in the "
        "same process.\n\n"
    )
    (HERE.parent / "BENCHMARKS.md").write_text(head + "\n".join(sections), encoding="utf-8")
    print(f"wrote BENCHMARKS.md ({len(scripts)} scripts, {len(failed)} failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
