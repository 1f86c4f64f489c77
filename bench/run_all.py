"""Run every bench/ script and write BENCHMARKS.md from their output (`make bench`).

Nothing in BENCHMARKS.md is typed by hand: each section is the verbatim output of one script, run here.
``python bench/run_all.py NAME.py ...`` reruns only those scripts and replaces their sections; the others and
the header are kept, and the header gains a line naming what was rerun and when.
"""

from __future__ import annotations

import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _sections(text: str) -> dict[str, str]:
    """The sections of an existing BENCHMARKS.md by script name."""
    parts = text.split("\n## ")[1:]
    return {part.split("\n", 1)[0].strip(): "## " + part.rstrip("\n") + "\n" for part in parts}


def main() -> int:
    every = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != "run_all.py")
    only = set(sys.argv[1:])
    unknown = only - {p.name for p in every}
    if unknown:
        print(f"no such bench script: {', '.join(sorted(unknown))} (have: {', '.join(p.name for p in every)})")
        return 2
    target = HERE.parent / "BENCHMARKS.md"
    kept = _sections(target.read_text(encoding="utf-8")) if only and target.exists() else {}
    scripts = [p for p in every if not only or p.name in only]
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
    fresh = {script.name: section for script, section in zip(scripts, sections, strict=True)}
    ordered = [fresh.get(p.name) or kept.get(p.name) for p in every]
    if only and target.exists():
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        head = target.read_text(encoding="utf-8").split("\n## ", 1)[0].rstrip("\n") + "\n"
        head += f"Rerun on {stamp} (same machine kind, same command): {', '.join(sorted(only))}.\n\n"
    target.write_text(head + "\n".join(s for s in ordered if s), encoding="utf-8")
    print(f"wrote BENCHMARKS.md ({len(scripts)} scripts, {len(failed)} failed)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
