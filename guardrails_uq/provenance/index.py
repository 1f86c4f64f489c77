"""A suffix-array index of a corpus, over token ids, in memory-mappable shards.

Layout of an index folder::

    manifest.json          format, tokenizer, text normalisation, counts, per-file sizes and SHA-256
                           checksums, and ``manifest_sha256`` over every other field of the manifest
    vocab.txt              one token per line; line i holds id i+1 (id 0 separates documents)
    counts.npy             int64 unigram counts by id (the BCI's distribution)
    shard-00000/
        tokens.npy         int32 token ids of the shard's documents, each followed by 0
        sa.npy             int32 suffix array of tokens.npy (SA-IS, :mod:`.suffix`)
        doc_starts.npy     int64 offset of each document's first token
        doc_ids.json       the documents' ids
        shard.json         written last: the shard is complete (resume starts after the last one)

Building holds at most one shard's tokens and suffix array in memory (about 8.6 bytes per token at 1 GB of
text; the suffix array is SA-IS over int32 ids, :mod:`.suffix`). Documents are normalised
(:mod:`guardrails_uq.textnorm`) before tokenizing, exactly as answers are at lookup.

Loading refuses, with an :class:`ArtifactError` naming the path or field and the fix, anything but a
complete index of this format, tokenizer and normalisation: a missing folder, a file instead of a folder,
a manifest that is not a JSON object, lacks a field or has one of the wrong type, a manifest edited by hand
(``manifest_sha256`` covers every field that changes a result: counts, vocabulary size, shards, checksums),
counts that disagree with each other (total tokens == sum of the unigram counts, vocabulary size == lines
of vocab.txt, ...), and any file whose size (and, unless ``verify="size"``, SHA-256) differs from the
manifest. So a damaged or edited index is refused instead of giving a wrong answer, and the BCI computed
from a loaded index is never negative.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..artifacts import digest, file_sha256
from ..errors import ArtifactError, InputError
from .corpus import parse_line, read_line_blocks
from .suffix import MAX_TOKENS, suffix_array
from .tokenize import NORMALIZATION, TOKENIZER_NAME, normalize, token_line

#: 2: text normalisation (NFKC, no format/control characters, collapsed whitespace, confusables) and
#: ``manifest_sha256``; format-1 indexes are refused and must be rebuilt.
FORMAT_VERSION = 2
KIND = "guardrails-uq/provenance-index"
CHECKSUM_FIELD = "manifest_sha256"
DEFAULT_SHARD_TOKENS = 250_000_000  # ~1 GB of English text; building needs ~9 bytes per token
_PARALLEL_BYTES = 16_000_000
_SHARD_FILES = ("tokens.npy", "sa.npy", "doc_starts.npy", "doc_ids.json")
_TOP_FILES = ("vocab.txt", "counts.npy")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHARD_NAME = re.compile(r"shard-\d{5}")


def _producer() -> dict[str, Any]:
    """What makes token ids comparable: recorded in the manifest and in each shard (resume checks it)."""
    return {
        "format": FORMAT_VERSION,
        "tokenizer": TOKENIZER_NAME,
        "normalization": NORMALIZATION,
        "unicode_version": unicodedata.unidata_version,
    }


def build_command(path: str | Path) -> str:
    """The command that (re)builds the index at ``path`` (it resumes an unfinished build)."""
    return f"guardrails-uq provenance index --corpus CORPUS.jsonl -o {path}"


def rebuild_fix(path: str | Path) -> str:
    """The fix of an index that cannot be used: rebuild it."""
    return f"rebuild it: {build_command(path)}"


class Vocabulary(dict[str, int]):
    """token -> id, assigning the next id (from 1) to a token seen for the first time."""

    def __missing__(self, token: str) -> int:
        value = len(self) + 1
        self[token] = value
        return value


_sha256 = file_sha256


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
    lengths including the 0). Text is normalised first, as answers are at lookup. Runs in worker
    processes: the caller maps local ids to global ones (one vectorised gather per block).
    """
    doc_ids: list[str] = []
    token_lines: list[bytes] = []
    for number, raw in lines:
        doc_id, text = parse_line(raw, source, number)
        doc_ids.append(doc_id)
        token_lines.append(token_line(normalize(text)))
    words, ids = _local_ids(b" " + b" \x01 ".join(token_lines) + b" \x01 ")
    ends = np.flatnonzero(ids == 0)
    lengths = np.diff(ends, prepend=-1).astype(np.int64)
    return doc_ids, [w.decode("utf-8") for w in words], ids, lengths


_PACKED = 8  # tokens of up to 8 bytes are keyed by their bytes packed in a uint64 (exact: no byte is 0)
_END_KEY = int.from_bytes(b"\x01".ljust(_PACKED, b"\0"), "big")


def _local_ids(blob: bytes) -> tuple[list[bytes], np.ndarray]:
    """Block-local vocabulary and ids of the space-separated tokens in ``blob``; the token b"\\x01" (ends a
    document) gets id 0, the others 1.. in the vocabulary's order.

    Short tokens (most of them) are deduplicated by sorting their packed bytes with NumPy, the rest with a
    dict: no Python object per token, about 2x faster than a dict lookup per token."""
    chars = np.frombuffer(blob + bytes(_PACKED), dtype=np.uint8)
    edges = np.flatnonzero(np.diff((chars[: len(blob)] != 0x20).view(np.int8)))  # blob starts/ends with a space
    starts, ends = edges[0::2] + 1, edges[1::2] + 1
    sizes = ends - starts
    short = np.flatnonzero(sizes <= _PACKED)
    windows = np.lib.stride_tricks.sliding_window_view(chars, _PACKED)[starts[short]]
    shift = ((_PACKED - sizes[short]) * 8).astype(np.uint64)
    keys = (np.ascontiguousarray(windows).view(">u8").ravel().astype(np.uint64) >> shift) << shift
    ordered = np.sort(keys)  # sort + searchsorted: 2x faster than np.unique(return_inverse=True)'s argsort
    unique = ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])]
    inverse = np.searchsorted(unique, keys)
    end = int(np.searchsorted(unique, _END_KEY))  # always present: every block ends a document
    renumber = np.arange(len(unique), dtype=np.int64) + (np.arange(len(unique)) < end)
    renumber[end] = 0
    ids = np.empty(len(starts), dtype=np.int32)
    ids[short] = renumber[inverse.ravel()]
    words: list[bytes] = np.delete(unique, end).astype(">u8").view("S8").tolist()  # NumPy drops the 0 padding
    longs = np.flatnonzero(sizes > _PACKED)
    if len(longs):
        table: dict[bytes, int] = {}
        long_ids = []
        for a, b in zip(starts[longs].tolist(), ends[longs].tolist(), strict=True):
            word = blob[a:b]
            if word not in table:
                words.append(word)
                table[word] = len(words)
            long_ids.append(table[word])
        ids[longs] = long_ids
    return words, ids


def build_index(
    corpus: str | Path,
    out_dir: str | Path,
    *,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    progress: bool = False,
    workers: int | None = None,
) -> BuildReport:
    """Index ``corpus`` (JSONL or JSONL.gz) into ``out_dir``; resumes after the last complete shard.

    A shard is reused only when it was made with this format, tokenizer and normalisation and its files
    and the vocabulary it used still match their checksums; later shards are rebuilt. So re-running a
    build is always the fix for an index that ``CorpusIndex.load`` refuses (older format, damaged file).

    Parsing and tokenizing run in ``workers`` processes (default: the CPU count for corpora over 16 MB, else 0: in this process),
    in blocks of a few MB, while this process maps block vocabularies to the global one and builds the
    suffix array of each full shard. Memory is bounded by the shard size (4 bytes per token for the ids, 4 for
    the suffix array) plus the blocks in flight; bench/provenance.py measures it.
    """
    started = time.perf_counter()
    corpus, out = Path(corpus), Path(out_dir)
    if not 1 <= shard_tokens <= MAX_TOKENS // 2:
        raise InputError(
            f"shard size must be between 1 and {MAX_TOKENS // 2} tokens (a shard's suffix array is int32)",
            source="shard_tokens",
        )
    if not corpus.is_file():
        raise InputError("corpus file not found", source=str(corpus))
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # an index being (re)built is not loadable

    # which corpus the shards are made of: a shard is reused only for the same bytes (an edited corpus,
    # same name or not, is indexed afresh; reading it costs ~2 s per GB)
    source = {"corpus_sha256": _sha256(corpus)}
    completed, words = _resumable(out, source)
    vocab = Vocabulary()
    vocab.update((word, i + 1) for i, word in enumerate(words))
    skip = sum(int(s["documents"]) for s in completed)
    for stale in sorted(out.glob("shard-*")):
        if _SHARD_NAME.fullmatch(stale.name) and int(stale.name[6:]) >= len(completed):
            shutil.rmtree(stale)

    report = _progress(corpus.stat().st_size if corpus.exists() else 0, progress)
    # a token takes >= 2 bytes of JSONL (a character and a separator): the most a shard's buffer can need
    expected = (corpus.stat().st_size if corpus.exists() else 0) * (8 if corpus.suffix == ".gz" else 1) // 2 + (1 << 20)
    shard = _ShardBuffer(out, len(completed), shard_tokens, vocab, expected, source)
    counts = _counts_on_disk(out, completed, len(vocab) + 1)  # of the resumed shards; new ones are added below
    documents = skip
    bytes_read = 0
    for (doc_ids, words, local_ids, lengths), consumed in _tokenized_blocks(corpus, skip, workers):
        table = np.empty(len(words) + 1, dtype=np.int32)
        table[0] = 0
        table[1:] = np.fromiter(map(vocab.__getitem__, words), dtype=np.int32, count=len(words))
        if len(vocab) >= len(counts):
            counts = np.concatenate([counts, np.zeros(max(len(vocab) + 1, 2 * len(counts)) - len(counts), np.int64)])
        counts[table] += np.bincount(local_ids, minlength=len(table))  # table's entries are distinct
        completed.extend(shard.add(doc_ids, table[local_ids], lengths))
        documents += len(doc_ids)
        bytes_read = consumed
        report(bytes_read, documents)
    completed.extend(shard.flush())
    if not completed:
        raise InputError("the corpus has no documents (every line is blank)", source=str(corpus))
    write_manifest(out, completed, sorted(vocab, key=vocab.__getitem__), counts[: len(vocab) + 1])
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
    """Accumulates documents until a shard is full, then writes it.

    Tokens are copied into one buffer reserved up front (pages become resident only as they are written),
    not kept as a list of per-block arrays: freed block arrays stay in the allocator's heap, so
    concatenating them used to keep ~1 GB more resident per GB of text while the suffix array was sorted."""

    def __init__(
        self, out: Path, next_index: int, shard_tokens: int, vocab: Vocabulary, expected: int, source: dict[str, Any]
    ) -> None:
        self.out, self.index, self.limit, self.vocab, self.source = out, next_index, shard_tokens, vocab, source
        self.capacity = max(1, min(shard_tokens + (1 << 20), expected))
        self.tokens = np.empty(0, dtype=np.int32)
        self.lengths: list[np.ndarray] = []
        self.doc_ids: list[str] = []
        self.size = 0

    def _append(self, ids: np.ndarray) -> None:
        if self.size + len(ids) > len(self.tokens):
            grown = np.empty(max(self.capacity, self.size + len(ids), 2 * len(self.tokens)), dtype=np.int32)
            grown[: self.size] = self.tokens[: self.size]
            self.tokens = grown
        self.tokens[self.size : self.size + len(ids)] = ids
        self.size += len(ids)

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
            self._append(ids[begin_token:end_token])
            self.lengths.append(lengths[begin_doc:stop])
            self.doc_ids.extend(doc_ids[begin_doc:stop])
            begin_doc, begin_token = stop, end_token
            if self.size >= self.limit:
                written.extend(self.flush())
        return written

    def flush(self) -> list[dict[str, Any]]:
        if not self.doc_ids:
            return []
        tokens, lengths, doc_ids = self.tokens[: self.size], np.concatenate(self.lengths), self.doc_ids
        self.tokens, self.lengths, self.doc_ids, self.size = np.empty(0, dtype=np.int32), [], [], 0
        entry = _write_shard(self.out, self.index, tokens, lengths, doc_ids, self.vocab, self.source)
        self.index += 1
        return [entry]


def _resumable(out: Path, source: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The leading shards a build of the corpus ``source`` describes can reuse, and their vocabulary."""
    completed = _completed_shards(out, source)
    while completed:
        words = _vocab_prefix(out, completed[-1])
        if words is not None:
            return completed, words
        completed.pop()
    return [], []


def _completed_shards(out: Path, source: dict[str, Any]) -> list[dict[str, Any]]:
    """The leading shards that are complete, made from the same corpus bytes (``source``) with this format,
    tokenizer and normalisation (shards of an older build or another corpus are rebuilt, never mixed in)
    and intact (every file matches shard.json)."""
    shards: list[dict[str, Any]] = []
    producer = _producer()
    while True:
        folder = out / f"shard-{len(shards):05d}"
        try:
            entry = json.loads((folder / "shard.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, unreadable or half-written: build from here
            return shards
        if not isinstance(entry, dict) or any(entry.get(k) != v for k, v in producer.items()):
            return shards
        if entry.get("source") != source or not _intact(folder, entry.get("files")):
            return shards
        entry["resumed"] = True
        shards.append(entry)


def _intact(folder: Path, files: Any) -> bool:
    """True when ``files`` describes every shard file and each matches its size and SHA-256."""
    if not isinstance(files, dict) or set(files) != set(_SHARD_FILES):
        return False
    for name, info in files.items():
        path = folder / name
        if not isinstance(info, dict) or not path.is_file() or path.stat().st_size != info.get("bytes"):
            return False
        if _sha256(path) != info.get("sha256"):
            return False
    return True


def _vocab_prefix(out: Path, entry: dict[str, Any]) -> list[str] | None:
    """The first ``vocab_size`` words of vocab.txt when they are the ones ``entry``'s shard was built with."""
    size = entry.get("vocab_size")
    try:
        text = (out / "vocab.txt").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    words = text.split("\n")[:size] if isinstance(size, int) and size > 0 else []
    if len(words) != size or hashlib.sha256("\n".join(words).encode()).hexdigest() != entry.get("vocab_sha256"):
        return None
    return words


def _write_shard(
    out: Path,
    index: int,
    tokens: np.ndarray,
    lengths: np.ndarray,
    doc_ids: list[str],
    vocab: Vocabulary,
    source: dict[str, Any],
) -> dict[str, Any]:
    """Write shard ``index`` of a local build, with vocab.txt as it stands (the shard's ids refer to it)."""
    words = sorted(vocab, key=vocab.__getitem__)
    _atomic_write(out / "vocab.txt", "\n".join(words).encode("utf-8"))
    return write_shard(
        out / f"shard-{index:05d}",
        tokens,
        lengths,
        doc_ids,
        vocab_size=len(vocab),
        vocab_sha256=_sha256(out / "vocab.txt"),
        source=source,
    )


def write_shard(
    folder: Path,
    tokens: np.ndarray,
    lengths: np.ndarray,
    doc_ids: list[str],
    *,
    vocab_size: int,
    vocab_sha256: str,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one shard: ``tokens`` (int32 ids in [0, vocab_size], a 0 after each document), ``lengths`` (each
    document's token count including its 0), ``doc_ids``; its suffix array; shard.json last. Returns the
    shard's manifest entry. ``vocab_sha256`` is the SHA-256 of vocab.txt's first ``vocab_size`` lines, the
    words the ids refer to (a resumed build checks it); ``source``, recorded in the entry, what the shard was
    made from (a resumed build reuses it only for the same). Peak memory: the tokens plus 4 bytes per token."""
    folder.mkdir(parents=True, exist_ok=True)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    sa = suffix_array(tokens, vocab_size + 1)
    _save_array(folder / "tokens.npy", tokens)
    _save_array(folder / "sa.npy", sa)
    del sa
    _save_array(folder / "doc_starts.npy", starts)
    _atomic_write(folder / "doc_ids.json", json.dumps(doc_ids).encode("utf-8"))
    entry: dict[str, Any] = {
        **_producer(),
        "name": folder.name,
        "documents": len(doc_ids),
        "tokens": len(tokens),
        "vocab_size": vocab_size,
        "vocab_sha256": vocab_sha256,
        **({"source": source} if source is not None else {}),
        "files": {name: _describe(folder / name) for name in _SHARD_FILES},
    }
    _atomic_write(folder / "shard.json", json.dumps(entry, indent=1).encode("utf-8"))
    return entry


def token_counts(tokens: np.ndarray, size: int, chunk: int = 1 << 24) -> np.ndarray:
    """Occurrences of each id in [0, ``size``) among ``tokens`` (memory-mapped ones are read in chunks, so
    memory stays bounded)."""
    counts = np.zeros(size, dtype=np.int64)
    for begin in range(0, len(tokens), chunk):
        counts += np.bincount(tokens[begin : begin + chunk], minlength=size)[:size]
    return counts


def _counts_on_disk(out: Path, shards: list[dict[str, Any]], size: int) -> np.ndarray:
    """Unigram counts (``size`` ids) of the tokens of ``shards``, read from disk."""
    counts = np.zeros(size, dtype=np.int64)
    for shard in shards:
        counts += token_counts(np.load(out / str(shard["name"]) / "tokens.npy", mmap_mode="r"), size)
    return counts


def write_manifest(out: Path, shards: list[dict[str, Any]], words: list[str], counts: np.ndarray) -> None:
    """Write vocab.txt (``words``: line i is id i+1), counts.npy (``counts[i]``: occurrences of id i; the
    separators' count is dropped) and, last, the sealed manifest: the index becomes loadable."""
    counts = np.asarray(counts, dtype=np.int64).copy()
    if len(counts) != len(words) + 1:
        raise ValueError(f"{len(counts)} counts for {len(words)} words: expected one per id, 0 included")
    counts[0] = 0  # separators are not tokens
    _save_array(out / "counts.npy", counts)
    _atomic_write(out / "vocab.txt", "\n".join(words).encode("utf-8"))
    from .. import __version__

    manifest = {
        **_producer(),
        "kind": KIND,
        "library_version": __version__,
        "documents": sum(int(s["documents"]) for s in shards),
        "tokens": int(counts.sum()),
        "vocab_size": len(words),
        "shards": [{k: v for k, v in s.items() if k != "resumed"} for s in shards],
        "files": {name: _describe(out / name) for name in _TOP_FILES},
        "created": time.time(),
    }
    manifest[CHECKSUM_FIELD] = digest(manifest)
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
    def load(
        cls, path: str | Path, *, verify: Literal["full", "size"] = "full", shards: Sequence[int] | None = None
    ) -> CorpusIndex:
        """Load the index at ``path``; with ``shards``, only those shards (by number) are mapped and verified
        (a lookup worker serving part of a large index), while the vocabulary and counts stay global, so BCI
        values are the whole index's. InputError for a shard number the index does not have.

        ArtifactError (never another exception) naming the path or manifest field and the fix when the
        folder is missing or is a file, the build did not finish, the manifest is not a JSON object of this
        format, tokenizer and normalisation, lacks a field or has one of the wrong type, was edited
        (``manifest_sha256``), its counts disagree, or any file's size (and, with verify="full", SHA-256)
        differs from the manifest."""
        path = Path(path)
        manifest = read_manifest(path)
        entries = manifest["shards"]
        chosen = range(len(entries)) if shards is None else list(shards)
        unknown = [n for n in chosen if not (isinstance(n, int) and 0 <= n < len(entries))]
        if unknown:
            raise InputError(f"no shard {unknown[0]!r}: the index has shards 0..{len(entries) - 1}", source=str(path))
        names = {"", *(entries[n]["name"] for n in chosen)}
        for relative, info in _expected_files(manifest).items():
            if str(relative.parent if relative.parent != Path(".") else "") in names:
                _verify_file(path / relative, info, verify)
        vocab = _load_vocab(path, int(manifest["vocab_size"]))
        counts = _load_counts(path, manifest)
        return cls(path, manifest, vocab, counts, [_load_shard(path, entries[n]) for n in chosen])

    def ids(self, tokens: list[str]) -> np.ndarray:
        """Token ids (-1 for tokens the corpus never saw: they can never be part of a match)."""
        get = self.vocab.get
        return np.fromiter((get(t, -1) for t in tokens), dtype=np.int32, count=len(tokens))

    @property
    def fingerprint(self) -> str:
        """Identifies this index's content: its manifest checksum, which covers every file's checksum."""
        return str(self.manifest[CHECKSUM_FIELD])[:16]

    def __repr__(self) -> str:
        return (
            f"CorpusIndex({str(self.path)!r}, documents={self.manifest['documents']}, tokens={self.total}, "
            f"shards={len(self.shards)})"
        )


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the index folder ``path``, checked: this format, tokenizer and normalisation, sealed,
    every field present, typed and consistent (ArtifactError naming the field and the fix otherwise). The
    index's files are not read: :meth:`CorpusIndex.load` verifies those."""
    manifest = _read_manifest(path)
    _check_header(path, manifest)
    _check_seal(path, manifest)
    _check_fields(path, manifest)
    return manifest


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the index folder ``path`` as a JSON object."""
    if not path.exists():
        raise ArtifactError(path, "provenance index not found", fix=f"build it: {build_command(path)}")
    if not path.is_dir():
        raise ArtifactError(
            path,
            "is a file, not a provenance index folder",
            fix="point `provenance: {index: ...}` at the folder written by `guardrails-uq provenance index -o FOLDER`",
        )
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise ArtifactError(
            path,
            "not a provenance index (no manifest.json)",
            fix=f"the build did not finish or never ran; run it (it resumes): {build_command(path)}",
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArtifactError(
            manifest_path, f"cannot read the manifest: {exc.strerror or exc}", fix=rebuild_fix(path)
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(manifest_path, f"manifest is damaged (not JSON: {exc})", fix=rebuild_fix(path)) from None
    if not isinstance(manifest, dict):
        raise ArtifactError(
            manifest_path,
            f"manifest is damaged (a JSON {_json_type(manifest)}, not an object)",
            fix=rebuild_fix(path),
        )
    return manifest


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _check_header(path: Path, manifest: dict[str, Any]) -> None:
    """Kind, format, tokenizer and normalisation are this version's."""
    where = path / "manifest.json"
    if manifest.get("kind") != KIND:
        raise ArtifactError(
            where, f"not a provenance index manifest (field 'kind' is {manifest.get('kind')!r}, not {KIND!r})",
            fix=rebuild_fix(path),
        )  # fmt: skip
    for field in ("format", "tokenizer", "normalization"):
        if manifest.get(field) != _producer()[field]:
            raise ArtifactError(
                where,
                f"index {field} {manifest.get(field)!r} is not this version's {_producer()[field]!r}"
                + (" (made before text normalisation)" if field == "format" and manifest.get(field) == 1 else ""),
                fix=rebuild_fix(path),
            )


def _check_seal(path: Path, manifest: dict[str, Any]) -> None:
    """``manifest_sha256`` matches every other field: an edited manifest is refused like a damaged one."""
    body = {k: v for k, v in manifest.items() if k != CHECKSUM_FIELD}
    try:
        sealed = digest(body)
    except ValueError:  # NaN or infinity: never written by a build
        sealed = None
    if sealed is None or sealed != manifest.get(CHECKSUM_FIELD):
        raise ArtifactError(
            path / "manifest.json",
            f"manifest was edited or is damaged ({CHECKSUM_FIELD} mismatch)",
            fix=rebuild_fix(path),
        )


def _require(path: Path, data: Any, name: str, kind: type[Any], label: str, *, minimum: int | None = None) -> Any:
    """``data[name]`` when ``data`` is an object holding a ``kind`` there (bools are not ints)."""
    value: Any = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ArtifactError(
            path / "manifest.json",
            f"manifest field {label!r} is missing or not a {kind.__name__}",
            fix=rebuild_fix(path),
        )
    if minimum is not None and value < minimum:
        raise ArtifactError(
            path / "manifest.json", f"manifest field {label!r} is {value}, below {minimum}", fix=rebuild_fix(path)
        )
    return value


def _check_files(path: Path, files: Any, names: tuple[str, ...], label: str) -> None:
    if not isinstance(files, dict) or set(files) != set(names):
        raise ArtifactError(
            path / "manifest.json", f"manifest field {label!r} must list exactly {list(names)}", fix=rebuild_fix(path)
        )
    for name in names:
        _require(path, files[name], "bytes", int, f"{label}.{name}.bytes", minimum=0)
        digest_ = _require(path, files[name], "sha256", str, f"{label}.{name}.sha256")
        if not _SHA256.fullmatch(digest_):
            raise ArtifactError(
                path / "manifest.json",
                f"manifest field '{label}.{name}.sha256' is not a SHA-256",
                fix=rebuild_fix(path),
            )


def _check_fields(path: Path, manifest: dict[str, Any]) -> None:
    """Every field loading and matching read is present, typed and consistent with the others."""
    documents = _require(path, manifest, "documents", int, "documents", minimum=1)
    tokens = _require(path, manifest, "tokens", int, "tokens", minimum=0)
    _require(path, manifest, "vocab_size", int, "vocab_size", minimum=0)
    _check_files(path, manifest.get("files"), _TOP_FILES, "files")
    shards = _require(path, manifest, "shards", list, "shards")
    if not shards:
        raise ArtifactError(path / "manifest.json", "manifest field 'shards' is empty", fix=rebuild_fix(path))
    for number, entry in enumerate(shards):
        label = f"shards[{number}]"
        if _require(path, entry, "name", str, f"{label}.name") != f"shard-{number:05d}":
            raise ArtifactError(
                path / "manifest.json",
                f"manifest field '{label}.name' is not 'shard-{number:05d}'",
                fix=rebuild_fix(path),
            )
        shard_docs = _require(path, entry, "documents", int, f"{label}.documents", minimum=1)
        _require(path, entry, "tokens", int, f"{label}.tokens", minimum=shard_docs)
        _check_files(path, entry.get("files"), _SHARD_FILES, f"{label}.files")
    if sum(e["documents"] for e in shards) != documents or sum(e["tokens"] for e in shards) - documents != tokens:
        raise ArtifactError(
            path / "manifest.json",
            "manifest fields disagree: 'documents' and 'tokens' are not the sums over 'shards'",
            fix=rebuild_fix(path),
        )


def _expected_files(manifest: dict[str, Any]) -> dict[Path, dict[str, Any]]:
    expected = {Path(name): info for name, info in manifest["files"].items()}
    for shard in manifest["shards"]:
        for name, info in shard["files"].items():
            expected[Path(shard["name"]) / name] = info
    return expected


def _verify_file(path: Path, info: dict, verify: str) -> None:
    if not path.is_file():
        raise ArtifactError(path, "index file is missing", fix=rebuild_fix(path.parent))
    size = path.stat().st_size
    if size != info["bytes"]:
        raise ArtifactError(
            path, f"index file is damaged: {size} bytes, manifest says {info['bytes']}", fix=rebuild_fix(path.parent)
        )
    if verify == "full" and _sha256(path) != info["sha256"]:
        raise ArtifactError(path, "index file is damaged: checksum mismatch", fix=rebuild_fix(path.parent))


def _damaged(path: Path, problem: str, index: Path) -> ArtifactError:
    return ArtifactError(
        path, f"index file is damaged or disagrees with the manifest: {problem}", fix=rebuild_fix(index)
    )


def _array(path: Path, index: Path, *, length: int, mmap: bool) -> np.ndarray:
    """A 1-D integer array of ``length`` items from ``path`` (memory-mapped when ``mmap``)."""
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise _damaged(path, f"not a NumPy array ({exc})", index) from None
    if array.ndim != 1 or array.dtype.kind not in "iu" or len(array) != length:
        raise _damaged(
            path, f"{array.dtype} array of shape {array.shape}, the manifest implies {length} integers", index
        )
    return array.view(np.ndarray) if mmap else array  # a plain view: np.memmap's __getitem__ is slow


def _load_vocab(path: Path, size: int) -> dict[str, int]:
    """token -> id (line i of vocab.txt is id i+1); exactly ``size`` distinct lines."""
    try:
        words = (path / "vocab.txt").read_text(encoding="utf-8").split("\n") if size else []
    except UnicodeDecodeError:
        raise _damaged(path / "vocab.txt", "not UTF-8", path) from None
    vocab = {word: i + 1 for i, word in enumerate(words)}
    if len(words) != size or len(vocab) != size:
        raise _damaged(path / "vocab.txt", f"{len(vocab)} distinct tokens, manifest says vocab_size {size}", path)
    return vocab


def _load_counts(path: Path, manifest: dict[str, Any]) -> np.ndarray:
    """Unigram counts: one per id (0 included), none negative, none for id 0, summing to the total, so every
    P(t) = count / total is at most 1 and the BCI is never negative."""
    counts = _array(path / "counts.npy", path, length=int(manifest["vocab_size"]) + 1, mmap=False)
    if counts.min() < 0 or counts[0] != 0 or int(counts.sum()) != manifest["tokens"]:
        raise _damaged(path / "counts.npy", f"counts do not sum to the manifest's {manifest['tokens']} tokens", path)
    return counts


def _load_shard(path: Path, entry: dict[str, Any]) -> Shard:
    folder = path / entry["name"]
    try:
        doc_ids = json.loads((folder / "doc_ids.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _damaged(folder / "doc_ids.json", str(exc), path) from None
    if (
        not isinstance(doc_ids, list)
        or len(doc_ids) != entry["documents"]
        or not all(isinstance(d, str) for d in doc_ids)
    ):
        raise _damaged(folder / "doc_ids.json", f"expected a list of {entry['documents']} document ids", path)
    return Shard(
        name=entry["name"],
        tokens=_array(folder / "tokens.npy", path, length=entry["tokens"], mmap=True),
        sa=_array(folder / "sa.npy", path, length=entry["tokens"], mmap=True),
        doc_starts=_array(folder / "doc_starts.npy", path, length=entry["documents"], mmap=False),
        doc_ids=doc_ids,
    )
