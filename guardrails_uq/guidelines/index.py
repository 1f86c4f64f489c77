"""The vector index of a guideline library: FAISS inner product over normalised "title: text" embeddings.

Exact (``IndexFlatIP``) up to ``EXACT_LIMIT`` guidelines; above it, an inverted-file index
(``IndexIVFFlat``, nlist = 4 * sqrt(n), nprobe = 32), which trades a little recall for sub-millisecond
search at millions of guidelines (bench/guidelines.py measures both). The index is saved beside the library
(``<library>.index/``) with the library's content hash, the embedder's name and the SHA-256 of each file
(``meta.json``), reused while the library and embedder match, rebuilt when they do not (the library was
edited, another embedder, an older format); a file lock makes concurrent builders safe (one builds, the others
wait and reuse). A saved index whose files differ from their checksums (damaged or edited) is refused with an
ArtifactError, never used and never silently replaced: :meth:`GuidelineIndex.saved` is the one verification,
run by the Guard when it opens the index and by ``policy check``.
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

from ..artifacts import file_sha256
from ..embeddings import Embedder
from ..errors import ArtifactError
from .library import Guideline, GuidelineLibrary

EXACT_LIMIT = 50_000
FORMAT_VERSION = 2  # 2: meta.json holds each file's SHA-256
_FILES = ("vectors.npy", "index.faiss")


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

    @staticmethod
    def folder_of(library: GuidelineLibrary) -> Path | None:
        """Where the index of ``library`` is saved: ``<library>.index/`` beside it (None for an in-memory one)."""
        return None if library.path is None else library.path.with_name(library.path.name + ".index")

    @classmethod
    def open(cls, library: GuidelineLibrary, embedder: Embedder, folder: Path | None = None) -> GuidelineIndex:
        """Reuse the saved index beside the library when its hash and embedder match; else build and save.
        ArtifactError when the saved index is damaged or edited (:meth:`saved`)."""
        folder = folder or cls.folder_of(library)
        if folder is None:
            return cls.build(library, embedder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            cached = cls.saved(folder, library, embedder)
            if cached is not None:
                return cached
            built = cls.build(library, embedder)
            built._write(folder)
            return built

    @classmethod
    def saved(cls, folder: Path, library: GuidelineLibrary, embedder: Embedder) -> GuidelineIndex | None:
        """The index saved in ``folder`` for ``library`` and ``embedder``, its files verified against the
        checksums in ``meta.json``; None when there is none to reuse (not built, made for another library or
        embedder, older format: :meth:`open` rebuilds it). ArtifactError naming the file and the fix when a
        file differs from its checksum or cannot be read (damaged or edited: refused, never used)."""
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            return None
        fix = f"delete {folder} (the Guard rebuilds it from the library when it starts)"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(meta_path, f"guideline index metadata is damaged: {exc}", fix=fix) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            return None  # another format: rebuilt
        if (meta.get("library_hash"), meta.get("embedder")) != (library.content_hash, embedder.name):
            return None  # the library was edited or another embedder is used: rebuilt
        checksums = meta.get("sha256")
        for name in _FILES:
            path = folder / name
            expected = checksums.get(name) if isinstance(checksums, dict) else None
            try:
                found = file_sha256(path)
            except OSError as exc:
                raise ArtifactError(path, f"guideline index file unreadable: {exc.strerror or exc}", fix=fix) from None
            if found != expected:
                raise ArtifactError(path, "guideline index file is damaged or was edited (checksum mismatch)", fix=fix)
        try:
            vectors = np.load(folder / "vectors.npy")
            index = faiss.read_index(str(folder / "index.faiss"))
        except (OSError, ValueError, RuntimeError) as exc:
            raise ArtifactError(folder, f"guideline index cannot be read: {exc}", fix=fix) from None
        if vectors.shape[0] != len(library) or index.ntotal != len(library):
            raise ArtifactError(folder, "guideline index does not hold one vector per guideline", fix=fix)
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
            "sha256": {name: file_sha256(tmp / name) for name in _FILES},
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
