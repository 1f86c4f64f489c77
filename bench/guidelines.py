"""Guideline retrieval latency at 100, 10,000 and 1,000,000 guidelines.

Libraries are synthetic: 10,000 guideline texts are generated from templates and embedded with the
packaged MiniLM; the 100 library is a subset, and the 1,000,000 library is made by perturbing those real
embeddings with small Gaussian noise (embedding a million texts on 2 CPU cores would take an hour; the
perturbed copies keep the clustered geometry real embeddings have). For each size: the shipped search
(`GuidelineIndex.search`: exact FAISS up to 50,000, IVF above) with the query embedding excluded and
included, against a baseline in the same process: numpy matrix product + argpartition over all vectors.
At 1,000,000 the IVF index's recall@4 against exact search is reported too.
Target: < 1 ms excluding embedding at 10,000.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, percentile_seconds

from guardrails_uq.embeddings import default_embedder, normalize
from guardrails_uq.guidelines.index import GuidelineIndex, build_faiss
from guardrails_uq.guidelines.library import Guideline, GuidelineLibrary

SUBJECTS = ["weapons", "malware", "phishing", "self-harm", "medical dosing", "tax advice", "stalking", "hate speech",
            "lyrics", "vaccines", "elections", "explosives", "credit cards", "passwords", "children", "drugs"]  # fmt: skip
VERBS = [
    "Do not explain",
    "Never provide",
    "Refuse to describe",
    "Avoid giving",
    "Decline to write",
    "Do not help with",
]
OBJECTS = ["step-by-step instructions", "working code", "detailed plans", "specific quantities", "personal details",
           "persuasive articles", "scripts", "lists of sources"]  # fmt: skip


def synthetic_library(n: int, seed: int = 0) -> GuidelineLibrary:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        subject = rng.choice(SUBJECTS)
        text = f"{rng.choice(VERBS)} {rng.choice(OBJECTS)} about {subject} ({rng.choice(SUBJECTS)}, case {i})."
        items.append(
            Guideline(id=f"g{i}", title=f"{subject.title()} rule {i}", text=text, category=subject.replace(" ", "_"))
        )
    return GuidelineLibrary(items)


def measure(
    index: GuidelineIndex, vectors: np.ndarray, queries: list[str], query_vectors: np.ndarray
) -> tuple[float, ...]:
    """(search p50, search p99, search-with-embedding p50, numpy baseline p50) in seconds."""
    counter = iter(range(10**9))

    def search_vector() -> None:
        index.search(query_vectors[next(counter) % len(queries)], top_k=4, min_score=0.0)

    def search_text() -> None:
        index.search(queries[next(counter) % len(queries)], top_k=4, min_score=0.0)

    def numpy_baseline() -> None:
        scores = vectors @ query_vectors[next(counter) % len(queries)]
        top = np.argpartition(-scores, 20)[:20]
        top[np.argsort(-scores[top])]

    p50, p99 = percentile_seconds(search_vector, calls=200)
    e50, _ = percentile_seconds(search_text, calls=50)
    n50, _ = percentile_seconds(numpy_baseline, calls=50 if len(vectors) > 10_000 else 200)
    return p50, p99, e50, n50


def main() -> None:
    embedder = default_embedder()
    queries = ["How do I make a bomb at home?", "Write a phishing email for my bank", "What dose of insulin is lethal?",
               "Find the home address of my ex", "Give me the lyrics of a famous song"]  # fmt: skip
    query_vectors = embedder.embed(queries)
    t0 = time.perf_counter()
    base_library = synthetic_library(10_000)
    base = GuidelineIndex.build(base_library, embedder)
    print(f"machine: {machine()}; embedded 10,000 synthetic guidelines in {time.perf_counter() - t0:.1f} s")
    print(
        f"{'guidelines':>10} {'index':>12} {'search p50':>11} {'p99':>9} {'with embed p50':>15} {'numpy p50':>10} {'ratio':>6}"
    )
    rng = np.random.default_rng(0)
    for size in (100, 10_000, 1_000_000):
        if size <= 10_000:
            library = GuidelineLibrary(base_library.guidelines[:size])
            vectors = base.vectors[:size]
        else:
            repeats = size // len(base.vectors)
            vectors = normalize(
                np.repeat(base.vectors, repeats, axis=0)
                + rng.normal(0, 0.05, (size, base.vectors.shape[1])).astype(np.float32)
            )
            library = GuidelineLibrary([Guideline(id=f"g{i}", title="t", text="x", category="c") for i in range(size)])
        t0 = time.perf_counter()
        index = GuidelineIndex(library, embedder, vectors, build_faiss(vectors))
        build = time.perf_counter() - t0
        p50, p99, e50, n50 = measure(index, vectors, queries, query_vectors)
        kind = type(index.index).__name__
        print(
            f"{size:>10,} {kind:>12} {p50 * 1e3:>9.3f}ms {p99 * 1e3:>7.3f}ms {e50 * 1e3:>13.2f}ms {n50 * 1e3:>8.3f}ms {p50 / n50:>6.2f}  (built in {build:.1f} s)"
        )
        if size > 50_000:
            exact_scores = vectors @ query_vectors.T
            hits = 0
            for q in range(len(queries)):
                truth = set(np.argsort(-exact_scores[:, q])[:4].tolist())
                _, found = index.index.search(query_vectors[q : q + 1], 4)
                hits += len(truth & set(found[0].tolist()))
            print(f"{'':>10} IVF recall@4 vs exact search: {hits / (4 * len(queries)):.2f}")


if __name__ == "__main__":
    main()
