"""Building a guideline library from prompts (Guide-Align stage 1), with any OpenAI-compatible LLM.

For each prompt the LLM says whether it is risky and, if so, writes general guidelines that would make
the answer safe. Results are appended to a state file as they arrive, so an interrupted build resumes
where it stopped (prompts already done are skipped). The guidelines are then de-duplicated by
embedding similarity (greedy: one is kept only if it is below ``dedup`` similar to every kept one; a
duplicate's source prompts are merged into the kept one) and written as a library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..embeddings import Embedder
from ..errors import InputError, ModelError
from ..jsonl import read_jsonl
from .library import Guideline, GuidelineLibrary

INSTRUCTION = """You review requests sent to an AI assistant, to write safety guidelines.
Request: {prompt!r}
Reply with one JSON object and nothing else:
{{"risky": true or false, "category": one of {categories}, "guidelines": [{{"title": "...", "text": "..."}}]}}
When the request is risky, write one or two short, general guidelines (not specific to this request) that
tell the assistant how to respond safely. When it is not risky, use an empty list."""

DEFAULT_CATEGORIES = (
    "chemical_biological", "weapons", "cybercrime", "violence", "self_harm", "hate", "harassment", "fraud",
    "privacy", "illegal_activity", "extremism", "child_safety", "sexual_content", "misinformation",
    "manipulation", "medical_advice", "legal_advice", "financial_advice", "copyright", "quality",
)  # fmt: skip
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


@dataclass
class BuildSummary:
    """Prompts seen, skipped (already in the state), risky, unparseable replies; guidelines before and after
    de-duplication."""

    prompts: int
    resumed: int
    risky: int
    unparseable: int
    candidates: int
    kept: int


def read_prompts(path: str | Path) -> list[tuple[str, str]]:
    """(id, prompt) pairs from JSONL lines ``{"id"?: ..., "prompt": ...}`` (id defaults to the line number)."""
    prompts = []
    seen: set[str] = set()
    for number, record in read_jsonl(path):
        if not isinstance(record.get("prompt"), str):
            raise InputError('each line needs a string "prompt"', source=str(path), line=number)
        key = str(record.get("id", f"line-{number}"))
        if key in seen:
            raise InputError(f"duplicate prompt id {key!r}", source=str(path), line=number)
        seen.add(key)
        prompts.append((key, record["prompt"]))
    return prompts


def parse_reply(text: str, categories: Sequence[str]) -> dict[str, Any] | None:
    """The reply's JSON object, normalised; None when it cannot be read."""
    match = _JSON_OBJECT.search(text)
    if not match:
        return None
    try:
        data = json.loads(match.group())
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("risky"), bool):
        return None
    category = str(data.get("category") or "")
    if category not in categories:
        category = "quality" if not data["risky"] else (category or "other")
    guidelines = []
    for item in data.get("guidelines") or []:
        if isinstance(item, dict) and str(item.get("title", "")).strip() and str(item.get("text", "")).strip():
            guidelines.append({"title": str(item["title"]).strip(), "text": str(item["text"]).strip()})
    return {"risky": data["risky"], "category": category, "guidelines": guidelines if data["risky"] else []}


def _load_state(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                done[record["id"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a torn last line from an interrupted run: that prompt is simply redone
    return done


def build_library(
    prompts: Sequence[tuple[str, str]],
    ask: Callable[[str], str],
    embedder: Embedder,
    output: str | Path,
    *,
    state: str | Path | None = None,
    dedup: float = 0.85,
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    progress: Callable[[int, int], None] | None = None,
) -> BuildSummary:
    """Ask the LLM about every prompt not yet in ``state``, then de-duplicate and write the library."""
    output = Path(output)
    state_path = Path(state) if state else output.with_name(output.name + ".state.jsonl")
    done = _load_state(state_path)
    resumed = sum(1 for key, _ in prompts if key in done)
    with open(state_path, "a", encoding="utf-8") as log:
        for index, (key, prompt) in enumerate(prompts, start=1):
            if key in done:
                continue
            reply = ask(INSTRUCTION.format(prompt=prompt, categories=list(categories)))  # ModelError propagates
            parsed = parse_reply(reply, categories)
            record = {
                "id": key,
                "ok": parsed is not None,
                **(parsed or {"risky": False, "category": "", "guidelines": []}),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            done[key] = record
            if progress:
                progress(index, len(prompts))
    records = [done[key] for key, _ in prompts if key in done]
    candidates = [(g, r["category"], r["id"]) for r in records for g in r.get("guidelines", [])]
    kept = deduplicate(candidates, embedder, dedup)
    if kept:
        GuidelineLibrary(kept, categories=sorted({g.category for g in kept})).save(output)
    return BuildSummary(
        prompts=len(prompts),
        resumed=resumed,
        risky=sum(1 for r in records if r.get("risky")),
        unparseable=sum(1 for r in records if not r.get("ok")),
        candidates=len(candidates),
        kept=len(kept),
    )


def deduplicate(
    candidates: Sequence[tuple[dict[str, str], str, str]], embedder: Embedder, threshold: float
) -> list[Guideline]:
    """Greedy de-duplication by cosine similarity; each kept guideline lists every prompt that produced it."""
    if not candidates:
        return []
    vectors = embedder.embed([f"{g['title']}: {g['text']}" for g, _, _ in candidates])
    kept: list[int] = []
    sources: dict[int, list[str]] = {}
    for i in range(len(candidates)):
        if kept:
            sims = vectors[kept] @ vectors[i]
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                sources[kept[best]].append(candidates[i][2])
                continue
        kept.append(i)
        sources[i] = [candidates[i][2]]
    counters: dict[str, int] = {}
    out = []
    for i in kept:
        g, category, _ = candidates[i]
        counters[category] = counters.get(category, 0) + 1
        out.append(
            Guideline(
                id=f"{category}-{counters[category]}",
                title=g["title"],
                text=g["text"],
                category=category,
                sources=sorted(set(sources[i])),
            )
        )
    return out


__all__ = ["BuildSummary", "ModelError", "build_library", "deduplicate", "parse_reply", "read_prompts"]
