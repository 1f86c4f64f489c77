"""The vector index of a guideline library: FAISS inner product over normalised "title: text" embeddings.

Exact (``IndexFlatIP``) up to ``EXACT_LIMIT`` guidelines; above it, an inverted-file index
(``IndexIVFFlat``, nlist = 4 * sqrt(n), nprobe = 32), which trades a little recall for sub-millisecond
search at millions of guidelines (bench/guidelines.py measures both). The index is saved beside the library
(``<library>.index/``) with the library's content hash and the embedder's name, reused while both match,
rebuilt otherwise; a file lock makes concurrent builders safe (one builds, the others wait and reuse).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from filelock import FileLock

from ..embeddings import Embedder
from .library import Guideline, GuidelineLibrary

EXACT_LIMIT = 50_000
FORMAT_VERSION = 1


def build_faiss(vectors: np.ndarray) -> faiss.Index:
    """Exact inner-product index, or IVF above EXACT_LIMIT vectors."""
    n, dim = vectors.shape
    index: Any
    if n <= EXACT_LIMIT:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = int(4 * math.sqrt(n))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors[np.random.default_rng(0).choice(n, min(n, nlist * 64), replace=False)]
        index.train(sample)
        index.nprobe = 32
    index.add(vectors)
    return index


@dataclass(frozen=True)
class Retrieved:
    """A guideline chosen for a request, with its similarity to the request."""

    guideline: Guideline
    score: float


class GuidelineIndex:
    """Embeddings + FAISS index of a library. Thread-safe for search."""

    def __init__(self, library: GuidelineLibrary, embedder: Embedder, vectors: np.ndarray, index: faiss.Index) -> None:
        self.library = library
        self.embedder = embedder
        self.vectors = vectors
        self.index = index

    @classmethod
    def build(cls, library: GuidelineLibrary, embedder: Embedder) -> GuidelineIndex:
        vectors = embedder.embed([g.document for g in library])
        return cls(library, embedder, vectors, build_faiss(vectors))

    @classmethod
    def open(cls, library: GuidelineLibrary, embedder: Embedder, folder: Path | None = None) -> GuidelineIndex:
        """Reuse the saved index beside the library when its hash and embedder match; else build and save."""
        if library.path is None and folder is None:
            return cls.build(library, embedder)
        folder = folder or library.path.with_name(library.path.name + ".index")  # type: ignore[union-attr]
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            cached = cls._read(folder, library, embedder)
            if cached is not None:
                return cached
            built = cls.build(library, embedder)
            built._write(folder)
            return built

    @classmethod
    def _read(cls, folder: Path, library: GuidelineLibrary, embedder: Embedder) -> GuidelineIndex | None:
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if (meta.get("format"), meta.get("library_hash"), meta.get("embedder")) != (
                FORMAT_VERSION,
                library.content_hash,
                embedder.name,
            ):
                return None
            vectors = np.load(folder / "vectors.npy")
            index = faiss.read_index(str(folder / "index.faiss"))
        except (OSError, ValueError, RuntimeError):
            return None  # damaged: rebuild
        if vectors.shape[0] != len(library) or index.ntotal != len(library):
            return None
        if isinstance(index, faiss.IndexIVF):
            index.nprobe = 32
        return cls(library, embedder, vectors, index)

    def _write(self, folder: Path) -> None:
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / "vectors.npy", self.vectors)
        faiss.write_index(self.index, str(tmp / "index.faiss"))
        meta = {
            "format": FORMAT_VERSION,
            "library_hash": self.library.content_hash,
            "embedder": self.embedder.name,
            "count": len(self.library),
        }
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)

    def search(
        self,
        query: str | np.ndarray,
        *,
        top_k: int = 6,
        min_score: float = 0.0,
        dedup: float = 0.9,
        candidates: int | None = None,
    ) -> list[Retrieved]:
        """Guide-Align retrieval: the top candidates, greedy near-duplicate removal (a candidate is kept only
        if its similarity to every kept guideline is below ``dedup``), at most ``top_k`` with score >=
        ``min_score``."""
        vector = (
            self.embedder.embed([query])
            if isinstance(query, str)
            else np.asarray(query, dtype=np.float32).reshape(1, -1)
        )
        pool = min(candidates or max(4 * top_k, 20), len(self.library))
        scores, positions = self.index.search(vector, pool)
        kept: list[int] = []
        chosen: list[Retrieved] = []
        for score, position in zip(scores[0], positions[0], strict=True):
            if position < 0 or score < min_score or len(chosen) >= top_k:
                break
            if kept and float((self.vectors[kept] @ self.vectors[position]).max()) >= dedup:
                continue
            kept.append(int(position))
            chosen.append(Retrieved(self.library.guidelines[position], float(score)))
        return chosen
