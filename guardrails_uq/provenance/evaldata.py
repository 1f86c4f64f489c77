"""Provenance evaluation and calibration data built from the texts available offline.

Corpus (indexed): AdvBench behaviours (pyrit) and HarmBench behaviours with their context strings.
Copied answers: a quote of 8 to 30 tokens from a corpus document, wrapped the way a model would wrap it
(a lead-in, a changed first letter, trailing remarks). Clean answers: benign text the corpus never saw
(Lee news corpus sentences, chatterbot-corpus answers) and hard negatives: unsafe behaviours reworded
(words reordered in small groups and synonyms swapped) so that no long span survives verbatim.

The demo's cached artifacts: :func:`ensure_unsafe_index` builds the index and its calibrated threshold
(:func:`ensure_calibration`, benign text from :func:`demo_benign_texts`); :func:`generated_answers` caches
SmolLM2's answers to benign requests phrased like AdvBench's (held-out benign text for the benchmark).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .. import datasets
from ..jsonl import read_jsonl

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


#: The demo's calibration target: at most 1% of benign answers flagged.
DEMO_TARGET_FPR = 0.01
_KNOWLEDGE_BASE = Path(__file__).resolve().parents[2] / "examples" / "data" / "nimbus_kb.jsonl"


def calibration_path(index_folder: str | Path) -> Path:
    """Where :func:`ensure_unsafe_index` keeps the calibration of the index in ``index_folder``:
    ``<folder>.calibration.json`` beside it."""
    folder = Path(index_folder)
    return folder.with_name(folder.name + ".calibration.json")


def demo_benign_texts() -> list[str]:
    """Benign text the demo must not flag: its knowledge base (in a source checkout), chatterbot-corpus
    answers, synthetic assistant-style answers (how-to steps, writing tasks, markdown tables) that reuse
    the unsafe corpus's request templates, and benign requests phrased in those templates ("Give detailed
    step-by-step instructions for how to bake sourdough bread"), which an answer may repeat. The score
    discounts only what benign text shares with the corpus: 21% of those requests, repeated in an answer,
    were flagged when they were not part of it."""
    from .synthetic import assistant_answers, assistant_requests

    texts = []
    if _KNOWLEDGE_BASE.exists():
        texts += [record["text"] for _, record in read_jsonl(_KNOWLEDGE_BASE)]
    texts += [pair["answer"] for pair in datasets.chatterbot()]
    return texts + assistant_answers(600, seed=0) + [request for _, request in assistant_requests()]


def ensure_unsafe_index(folder: str | Path) -> Path:
    """Build the provenance index of the offline unsafe texts into ``folder`` unless a usable one is there
    (downloads the pinned pyrit and HarmBench wheels on first use; see :func:`ensure_index`), and its
    calibration at :func:`calibration_path` (target :data:`DEMO_TARGET_FPR` on :func:`demo_benign_texts`;
    see :func:`ensure_calibration`). Returns ``folder``."""
    ensure_index(folder, unsafe_documents)
    ensure_calibration(folder, demo_benign_texts, calibration_path(folder), target_fpr=DEMO_TARGET_FPR)
    return Path(folder)


def ensure_calibration(
    index_folder: str | Path,
    texts: Callable[[], Sequence[str]],
    path: str | Path,
    *,
    target_fpr: float,
    min_span: int = 8,
) -> Path:
    """A cached calibration: keep the artifact at ``path`` when it loads, was made with the index in
    ``index_folder`` and the same target, min_span and benign ``texts()``; otherwise fit and write it.

    So rebuilding the index (a new fingerprint) or changing the benign texts recalibrates; an artifact
    that is damaged or edited is replaced, not reported: ``path`` is a cache. Concurrent callers wait for
    one fit (a file lock)."""
    from filelock import FileLock

    from ..artifacts import digest
    from ..errors import ArtifactError
    from .calibration import ProvenanceCalibration
    from .index import CorpusIndex

    path = Path(path)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        index = CorpusIndex.load(index_folder)
        benign = list(texts())
        try:
            cached = ProvenanceCalibration.load(path, index=index)
            if (cached.target_fpr, cached.min_span, cached.benign_digest_) == (target_fpr, min_span, digest(benign)):
                return path
        except ArtifactError:
            pass  # missing, stale, damaged or made with another index: recalibrate
        ProvenanceCalibration(target_fpr=target_fpr, min_span=min_span).fit(index, benign).save(path)
    return path


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


#: Tokens per generated answer: enough for the lead-in sentence, where an answer echoes its request.
GENERATED_TOKENS = 32


def generated_answers(limit: int | None = None, *, generate: bool = True) -> list[dict[str, str]]:
    """Answers of the embedded SmolLM2 (greedy, :data:`GENERATED_TOKENS` tokens) to the benign requests of
    :func:`.synthetic.assistant_requests`: ``{"kind", "prompt", "text"}`` records, cached under the
    guardrails-uq cache. Answers missing from the cache are generated when ``generate`` (about 4 s each
    on an idle 2-core CPU), up to ``limit`` answers in all; otherwise only cached ones are returned."""
    from filelock import FileLock

    from .synthetic import assistant_requests

    requests = assistant_requests()[:limit] if limit is not None else assistant_requests()
    path = datasets.cache_dir() / "provenance" / "smollm2-answers.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        cached = {r["prompt"]: r for _, r in read_jsonl(path, allow_empty=True)} if path.exists() else {}
        missing = [(kind, prompt) for kind, prompt in requests if prompt not in cached]
        if missing and generate:
            from ..models.local import default_model

            model = default_model()
            with open(path, "a", encoding="utf-8") as handle:
                for kind, prompt in missing:
                    answer = model.generate([{"role": "user", "content": prompt}], max_tokens=GENERATED_TOKENS)
                    cached[prompt] = {"kind": kind, "prompt": prompt, "text": answer.text}
                    handle.write(json.dumps(cached[prompt]) + "\n")
                    handle.flush()
    return [cached[prompt] for _, prompt in requests if prompt in cached]
