"""``guardrails-uq demo``: run the project's end-to-end demo (``examples/demo.py``).

The demo drives a LangChain RAG app and a LlamaIndex query engine, so its code lives with the examples
(framework imports stay out of this package); this command finds it in the source tree and runs it.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from .errors import GuardrailsError

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "demo.py"


def run(argv: list[str]) -> int:
    if not SCRIPT.exists():
        raise GuardrailsError(
            f"the demo script {SCRIPT} is not here: the demo runs from a source checkout (git clone, then `make demo`)"
        )
    saved = sys.argv
    sys.argv = [str(SCRIPT), *argv]
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        sys.argv = saved
    return 0


def register_cli(commands: argparse._SubParsersAction, groups: dict) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("demo", help="run the end-to-end demo (LangChain and LlamaIndex apps, SmolLM2)")
    parser.add_argument("--out", default="out/demo", help="folder for the audit log and the HTML report")
    parser.add_argument("--limit", type=int, default=0, help="run only the first N requests")
    parser.set_defaults(handler=lambda args: run(["--out", args.out, "--limit", str(args.limit)]))
