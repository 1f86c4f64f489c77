"""A suffix-array index of a corpus, over token ids, in memory-mappable shards.

Layout of an index folder::

    manifest.json          format, tokenizer, counts, per-file sizes and SHA-256 checksums
    vocab.txt              one token per line; line i holds id i+1 (id 0 separates documents)
    counts.npy             int64 unigram counts by id (the BCI's distribution)
    shard-00000/
        tokens.npy         int32 token ids of the shard's documents, each followed by 0
        sa.npy             int32/int64 suffix array of tokens.npy (pydivsufsort)
        doc_starts.npy     int64 offset of each document's first token
        doc_ids.json       the documents' ids
        shard.json         written last: the shard is complete (resume starts after the last one)

Building holds at most one shard's tokens in memory. Loading memory-maps every array and checks every
file against the manifest (sizes always; SHA-256 too unless ``verify="size"``), so a damaged index is
refused instead of giving a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydivsufsort

from ..errors import ArtifactError, InputError
from .corpus import parse_line, read_line_blocks
from .tokenize import TOKEN_PATTERN, TOKENIZER_NAME

FORMAT_VERSION = 1
DEFAULT_SHARD_TOKENS = 250_000_000  # ~1 GB of English text; building needs ~16 bytes per token
_PARALLEL_BYTES = 16_000_000
_SHARD_FILES = ("tokens.npy", "sa.npy", "doc_starts.npy", "doc_ids.json")


class Vocabulary(dict[str, int]):
    """token -> id, assigning the next id (from 1) to a token seen for the first time."""

    def __missing__(self, token: str) -> int:
        value = len(self) + 1
        self[token] = value
        return value


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _describe(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


@dataclass
class BuildReport:
    """What a build did: documents and tokens indexed, shards written or reused, bytes read, seconds."""

    documents: int
    tokens: int
    shards: int
    resumed_shards: int
    bytes_read: int
    seconds: float


def _progress(total_bytes: int, enabled: bool) -> Callable[[int, int], None]:
    started = time.perf_counter()

    def report(done: int, docs: int) -> None:
        if not enabled:
            return
        elapsed = max(time.perf_counter() - started, 1e-9)
        fraction = done / total_bytes if total_bytes else 1.0
        bar = "#" * int(fraction * 30)
        sys.stderr.write(
            f"\r[{bar:<30}] {fraction:6.1%} {docs:,} docs {done / 1e6 / elapsed:6.1f} MB/s"
            + ("\n" if done >= total_bytes else "")
        )
        sys.stderr.flush()

    return report


def tokenize_block(source: str, lines: list[tuple[int, bytes]]) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Parse and tokenize one block of corpus lines with a block-local vocabulary.

    Returns (doc ids, local vocabulary words, local token ids with a 0 after each document, document
    lengths including the 0). Runs in worker processes: the caller maps local ids to global ones.
    """
    local = Vocabulary()
    lookup = local.__getitem__
    doc_ids: list[str] = []
    pieces: list[np.ndarray] = []
    for number, raw in lines:
        doc_id, text = parse_line(raw, source, number)
        doc_ids.append(doc_id)
        ids = np.fromiter(map(lookup, TOKEN_PATTERN.findall(text.lower())), dtype=np.int32)
        pieces.append(np.append(ids, np.int32(0)))
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    words = sorted(local, key=local.__getitem__)
    return doc_ids, words, np.concatenate(pieces) if pieces else np.zeros(0, np.int32), lengths


def build_index(
    corpus: str | Path,
    out_dir: str | Path,
    *,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    progress: bool = False,
    workers: int | None = None,
) -> BuildReport:
    """Index ``corpus`` (JSONL or JSONL.gz) into ``out_dir``; resumes after the last complete shard.

    Parsing and tokenizing run in ``workers`` processes (default: the CPU count for corpora over 16 MB, else 0: in this process),
    in blocks of a few MB, while this process maps block vocabularies to the global one and builds the
    suffix array of each full shard. Memory is bounded by the shard size plus the blocks in flight.
    """
    started = time.perf_counter()
    corpus, out = Path(corpus), Path(out_dir)
    if shard_tokens < 1:
        raise InputError("shard size must be a positive number of tokens", source="shard_tokens")
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # an index being (re)built is not loadable

    completed = _completed_shards(out)
    vocab = Vocabulary()
    if completed:
        words = (out / "vocab.txt").read_text(encoding="utf-8").split("\n")[: completed[-1]["vocab_size"]]
        vocab.update((word, i + 1) for i, word in enumerate(words))
    skip = sum(int(s["documents"]) for s in completed)
    for stale in sorted(out.glob("shard-*")):
        if int(stale.name.split("-")[1]) >= len(completed):
            for file in stale.iterdir():
                file.unlink()
            stale.rmdir()

    report = _progress(corpus.stat().st_size if corpus.exists() else 0, progress)
    shard = _ShardBuffer(out, len(completed), shard_tokens, vocab)
    documents = skip
    bytes_read = 0
    for (doc_ids, words, local_ids, lengths), consumed in _tokenized_blocks(corpus, skip, workers):
        table = np.empty(len(words) + 1, dtype=np.int32)
        table[0] = 0
        table[1:] = np.fromiter(map(vocab.__getitem__, words), dtype=np.int32, count=len(words))
        completed.extend(shard.add(doc_ids, table[local_ids], lengths))
        documents += len(doc_ids)
        bytes_read = consumed
        report(bytes_read, documents)
    completed.extend(shard.flush())
    if not completed:
        raise InputError("the corpus has no documents (every line is blank)", source=str(corpus))
    _write_manifest(out, completed, vocab)
    report(corpus.stat().st_size, documents)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    return BuildReport(
        documents=documents,
        tokens=int(manifest["tokens"]),
        shards=len(completed),
        resumed_shards=sum(1 for s in completed if s.get("resumed")),
        bytes_read=bytes_read,
        seconds=time.perf_counter() - started,
    )


def _tokenized_blocks(corpus: Path, skip: int, workers: int | None):
    """Tokenized blocks in corpus order, from a process pool (bounded number in flight)."""
    if workers is None:  # a process pool pays off only on large corpora
        workers = (os.cpu_count() or 1) if corpus.stat().st_size > _PARALLEL_BYTES else 0
    blocks = read_line_blocks(corpus, skip=skip)
    if workers <= 0:
        for _, lines, consumed in blocks:
            yield tokenize_block(str(corpus), lines), consumed
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: deque = deque()
        for _, lines, consumed in blocks:
            pending.append((pool.submit(tokenize_block, str(corpus), lines), consumed))
            if len(pending) > 2 * workers:
                future, done = pending.popleft()
                yield future.result(), done
        while pending:
            future, done = pending.popleft()
            yield future.result(), done


class _ShardBuffer:
    """Accumulates documents until a shard is full, then writes it."""

    def __init__(self, out: Path, next_index: int, shard_tokens: int, vocab: Vocabulary) -> None:
        self.out, self.index, self.limit, self.vocab = out, next_index, shard_tokens, vocab
        self.ids: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.doc_ids: list[str] = []
        self.size = 0

    def add(self, doc_ids: list[str], ids: np.ndarray, lengths: np.ndarray) -> list[dict[str, Any]]:
        """Buffer a block's documents; write a shard each time the buffer reaches the limit (a shard closes
        after the document that crosses it, so shard boundaries do not depend on block boundaries)."""
        written = []
        ends = np.cumsum(lengths)
        begin_doc = begin_token = 0
        while begin_doc < len(doc_ids):
            need = self.limit - self.size + begin_token
            stop = min(int(np.searchsorted(ends, need, side="left")) + 1, len(doc_ids))
            end_token = int(ends[stop - 1])
            self.ids.append(ids[begin_token:end_token])
            self.lengths.append(lengths[begin_doc:stop])
            self.doc_ids.extend(doc_ids[begin_doc:stop])
            self.size += end_token - begin_token
            begin_doc, begin_token = stop, end_token
            if self.size >= self.limit:
                written.extend(self.flush())
        return written

    def flush(self) -> list[dict[str, Any]]:
        if not self.doc_ids:
            return []
        entry = _write_shard(
            self.out, self.index, np.concatenate(self.ids), np.concatenate(self.lengths), self.doc_ids, self.vocab
        )
        self.index += 1
        self.ids, self.lengths, self.doc_ids, self.size = [], [], [], 0
        return [entry]


def _completed_shards(out: Path) -> list[dict[str, Any]]:
    shards = []
    index = 0
    while (out / f"shard-{index:05d}" / "shard.json").exists():
        entry = json.loads((out / f"shard-{index:05d}" / "shard.json").read_text(encoding="utf-8"))
        entry["resumed"] = True
        shards.append(entry)
        index += 1
    return shards


def _write_shard(
    out: Path, index: int, tokens: np.ndarray, lengths: np.ndarray, doc_ids: list[str], vocab: Vocabulary
) -> dict[str, Any]:
    folder = out / f"shard-{index:05d}"
    folder.mkdir(exist_ok=True)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    sa = pydivsufsort.divsufsort(tokens)
    _save_array(folder / "tokens.npy", tokens)
    _save_array(folder / "sa.npy", sa)
    _save_array(folder / "doc_starts.npy", starts)
    _atomic_write(folder / "doc_ids.json", json.dumps(doc_ids).encode("utf-8"))
    words = sorted(vocab, key=vocab.__getitem__)
    _atomic_write(out / "vocab.txt", "\n".join(words).encode("utf-8"))
    entry: dict[str, Any] = {
        "name": folder.name,
        "documents": len(doc_ids),
        "tokens": len(tokens),
        "vocab_size": len(vocab),
        "files": {name: _describe(folder / name) for name in _SHARD_FILES},
    }
    _atomic_write(folder / "shard.json", json.dumps(entry, indent=1).encode("utf-8"))
    return entry


def _write_manifest(out: Path, shards: list[dict[str, Any]], vocab: Vocabulary) -> None:
    counts = np.zeros(len(vocab) + 1, dtype=np.int64)
    for shard in shards:
        tokens = np.load(out / str(shard["name"]) / "tokens.npy", mmap_mode="r")
        counts += np.bincount(tokens, minlength=len(counts))[: len(counts)]
    counts[0] = 0  # separators are not tokens
    _save_array(out / "counts.npy", counts)
    words = sorted(vocab, key=vocab.__getitem__)
    _atomic_write(out / "vocab.txt", "\n".join(words).encode("utf-8"))
    from .. import __version__

    manifest = {
        "format": FORMAT_VERSION,
        "kind": "guardrails-uq/provenance-index",
        "library_version": __version__,
        "tokenizer": TOKENIZER_NAME,
        "documents": sum(int(s["documents"]) for s in shards),
        "tokens": int(counts.sum()),
        "vocab_size": len(vocab),
        "shards": [{k: v for k, v in s.items() if k != "resumed"} for s in shards],
        "files": {"vocab.txt": _describe(out / "vocab.txt"), "counts.npy": _describe(out / "counts.npy")},
        "created": time.time(),
    }
    _atomic_write(out / "manifest.json", json.dumps(manifest, indent=1).encode("utf-8"))


@dataclass(frozen=True)
class Shard:
    """One memory-mapped shard."""

    name: str
    tokens: np.ndarray
    sa: np.ndarray
    doc_starts: np.ndarray
    doc_ids: list[str]


class CorpusIndex:
    """A loaded (memory-mapped) provenance index. Thread-safe: read-only after load."""

    def __init__(self, path: Path, manifest: dict, vocab: dict[str, int], counts: np.ndarray, shards: list[Shard]):
        self.path = path
        self.manifest = manifest
        self.vocab = vocab
        self.counts = counts
        self.total = int(manifest["tokens"])
        self.shards = shards

    @classmethod
    def load(cls, path: str | Path, *, verify: Literal["full", "size"] = "full") -> CorpusIndex:
        """Load the index at ``path``. ArtifactError when it is missing, incomplete, of another format or
        tokenizer, or when any file's size (and, with verify="full", SHA-256) differs from the manifest."""
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.exists():
            hint = "the build did not finish; re-run it to resume" if path.is_dir() else "build it first"
            raise ArtifactError(
                path, "not a provenance index (no manifest.json)", fix=f"{hint}: guardrails-uq provenance index"
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(manifest_path, f"manifest is damaged: {exc}", fix="rebuild the index") from None
        if manifest.get("kind") != "guardrails-uq/provenance-index" or manifest.get("format") != FORMAT_VERSION:
            raise ArtifactError(
                path, f"unsupported index format {manifest.get('format')!r}", fix="rebuild it with this version"
            )
        if manifest.get("tokenizer") != TOKENIZER_NAME:
            raise ArtifactError(path, f"index tokenizer {manifest.get('tokenizer')!r} is not {TOKENIZER_NAME!r}")
        expected = {Path(name): info for name, info in manifest["files"].items()}
        for shard in manifest["shards"]:
            for name, info in shard["files"].items():
                expected[Path(shard["name"]) / name] = info
        for relative, info in expected.items():
            _verify_file(path / relative, info, verify)
        words = (path / "vocab.txt").read_text(encoding="utf-8").split("\n") if manifest["vocab_size"] else []
        vocab = {word: i + 1 for i, word in enumerate(words)}
        counts = np.load(path / "counts.npy")
        shards = []
        for entry in manifest["shards"]:
            folder = path / entry["name"]
            shards.append(
                Shard(
                    name=entry["name"],
                    # plain ndarray views of the maps: same pages, without np.memmap's slow __getitem__
                    tokens=np.load(folder / "tokens.npy", mmap_mode="r").view(np.ndarray),
                    sa=np.load(folder / "sa.npy", mmap_mode="r").view(np.ndarray),
                    doc_starts=np.load(folder / "doc_starts.npy"),
                    doc_ids=json.loads((folder / "doc_ids.json").read_text(encoding="utf-8")),
                )
            )
        return cls(path, manifest, vocab, counts, shards)

    def ids(self, tokens: list[str]) -> np.ndarray:
        """Token ids (-1 for tokens the corpus never saw: they can never be part of a match)."""
        get = self.vocab.get
        return np.fromiter((get(t, -1) for t in tokens), dtype=np.int32, count=len(tokens))

    @property
    def fingerprint(self) -> str:
        """Identifies this index's content (the manifest's checksums)."""
        return hashlib.sha256(json.dumps(self.manifest["files"], sort_keys=True).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"CorpusIndex({str(self.path)!r}, documents={self.manifest['documents']}, tokens={self.total}, "
            f"shards={len(self.shards)})"
        )


def _verify_file(path: Path, info: dict, verify: str) -> None:
    if not path.exists():
        raise ArtifactError(path, "index file is missing", fix="rebuild the index")
    size = path.stat().st_size
    if size != info["bytes"]:
        raise ArtifactError(
            path, f"index file is damaged: {size} bytes, manifest says {info['bytes']}", fix="rebuild the index"
        )
    if verify == "full" and _sha256(path) != info["sha256"]:
        raise ArtifactError(path, "index file is damaged: checksum mismatch", fix="rebuild the index")
