"""The provenance index on Ray: shards built as Ray tasks, lookups answered by Ray actors.

Building (:func:`build_index_ray`) splits the corpus, one or more JSONL files, into byte ranges at line
boundaries (about ``shard_bytes`` each; a ``.gz`` file is one range: it cannot be split without reading it).
Each range becomes one shard, in two passes of Ray tasks:

1. every range's distinct tokens, its line, document and token counts (tokenized with
   :func:`~.index.tokenize_block`, as the local build does). The driver merges the token sets into one global
   vocabulary: the sorted union, so token ids do not depend on the order tasks finish in;
2. every range tokenized again, its tokens mapped to global ids through a table of only that range's words,
   written with :func:`~.index.write_shard` into ``out/shard-NNNNN``; the task returns the shard's manifest
   entry and its unigram counts over the range's words. The driver adds the counts up and writes vocab.txt,
   counts.npy and the sealed manifest with :func:`~.index.write_manifest`.

The folder is an ordinary index: :meth:`CorpusIndex.load` reads it unchanged and gives the same spans, counts
and BCI as the local :func:`~.index.build_index` of the same corpus (token ids and shard boundaries differ).
Documents without an "id" are named ``line-N``, N the line's 1-based number in its own file, as in a local
build of that file (with several files, give documents ids: ``line-N`` can then repeat).

Failures: a task whose worker dies is retried by Ray (``retries`` times; an ``OSError`` too); a malformed
line fails the build with the :class:`InputError` of the local build (file and line). A re-run reuses each
shard whose ``shard.json`` exists, whose files match their checksums and whose ``range.json`` (written
before the shard) names the same file, byte range, first line, file size and mtime, built with the same
vocabulary; pass 1 always runs again (it makes the vocabulary the check compares against).

Lookup (:class:`RayCorpusIndex`): ``actors`` Ray actors, each holding a contiguous block of shards
(:class:`ShardLookup`: ``CorpusIndex.load(path, shards=...)``, global vocabulary and counts, so BCI values
are the whole index's). A text goes to every actor; the driver merges their answers into exactly what
:func:`~.match.find_spans` returns on the whole index (see :func:`merge_partial_spans` for why).

Ray is imported only when a build or lookup starts (``pip install 'guardrails-uq[ray]'``); a local Ray is
started when none is running (``ray.init(address=...)`` beforehand, or ``RAY_ADDRESS``, to use a cluster).
See docs/provenance-at-scale.md for the plan for a 1 TB corpus.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import GuardrailsError, InputError
from .corpus import read_line_blocks
from .index import (
    _SHARD_NAME,
    BuildReport,
    CorpusIndex,
    _atomic_write,
    _intact,
    _producer,
    read_manifest,
    token_counts,
    tokenize_block,
    write_manifest,
    write_shard,
)
from .match import Source, Span, find_spans, window_intervals
from .score import document_frequency
from .suffix import MAX_TOKENS
from .tokenize import normalize_with_map, tokens_of

#: About 1 GB of JSONL per shard: ~170-250M tokens, ~3 GB of memory to build (docs/provenance-at-scale.md).
DEFAULT_SHARD_BYTES = 1_000_000_000
_BLOCK_BYTES = 4_000_000  # lines are tokenized in blocks of about this size, as in the local build
_RANGE_FILE = "range.json"
_COMPRESSED = (".zst", ".zstd", ".bz2", ".xz", ".lz4", ".zip", ".7z", ".br")
_INSTALL = "pip install 'guardrails-uq[ray]'"


def _ray() -> Any:
    """The ``ray`` module, with a Ray running (a local one is started when none is)."""
    try:
        import ray
    except ImportError as exc:
        raise GuardrailsError(f"the provenance index on Ray needs Ray: {_INSTALL}") from exc
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, ignore_reinit_error=True)
    return ray


def _get(ray: Any, refs: Any) -> Any:
    """``ray.get``, re-raising a task's GuardrailsError (InputError, ArtifactError) as itself."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, GuardrailsError):
            raise exc.cause from None
        raise


# -- building --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ByteRange:
    """Bytes [start, end) of a corpus file, starting at a line start and ending at one (or at the end)."""

    path: str
    start: int
    end: int
    size: int  # the file's size and mtime when planned: a file changed under the build is refused
    mtime_ns: int
    gzip: bool = False


@dataclass
class RayBuildReport(BuildReport):
    """A :class:`BuildReport` plus the byte ranges planned and each pass's wall-clock seconds."""

    ranges: int
    pass1_seconds: float
    pass2_seconds: float


def _corpus_files(corpus: str | Path | Sequence[str | Path]) -> list[Path]:
    paths = [Path(corpus)] if isinstance(corpus, str | Path) else [Path(p) for p in corpus]
    if not paths:
        raise InputError("no corpus files given", source="corpus")
    for path in paths:
        if not path.exists():
            raise InputError("corpus file not found", source=str(path))
        if path.is_dir():
            raise InputError("is a folder: pass its JSONL files", source=str(path))
        if path.suffix.lower() in _COMPRESSED:
            raise InputError(
                f"{path.suffix} files are not supported: decompress it (plain JSONL is split into shards) "
                "or recompress it as .gz",
                source=str(path),
            )
    return paths


def plan_ranges(paths: Sequence[Path], shard_bytes: int) -> list[ByteRange]:
    """Byte ranges of about ``shard_bytes`` covering every file, cut at line starts (a line longer than a
    range joins the range it starts in). A .gz file is one range; InputError when it is larger than
    ``shard_bytes`` (its shard would hold several times the planned text)."""
    ranges: list[ByteRange] = []
    for path in paths:
        stat = path.stat()
        if path.suffix == ".gz":
            if stat.st_size > shard_bytes:
                raise InputError(
                    f"a .gz file is one shard (it cannot be split without reading it) and this one is larger "
                    f"than shard_bytes ({stat.st_size:,} > {shard_bytes:,} bytes compressed): decompress it, "
                    "or split it into .gz files of at most shard_bytes",
                    source=str(path),
                )
            ranges.append(ByteRange(str(path), 0, stat.st_size, stat.st_size, stat.st_mtime_ns, gzip=True))
            continue
        count = max(1, -(-stat.st_size // shard_bytes))
        cuts = [0]
        with open(path, "rb") as handle:
            for k in range(1, count):
                position = stat.st_size * k // count
                if position <= cuts[-1]:  # inside the line that holds the previous cut
                    continue
                cut = _line_start_at_or_after(handle, position)
                if cut > cuts[-1] and cut < stat.st_size:
                    cuts.append(cut)
        cuts.append(stat.st_size)
        ranges.extend(ByteRange(str(path), a, b, stat.st_size, stat.st_mtime_ns) for a, b in itertools.pairwise(cuts))
    return ranges


def _line_start_at_or_after(handle: Any, position: int) -> int:
    handle.seek(position - 1)
    while True:
        chunk = handle.read(1 << 16)
        if not chunk:
            return int(handle.tell())
        newline = chunk.find(b"\n")
        if newline >= 0:
            return int(handle.tell()) - len(chunk) + newline + 1


def _range_lines(piece: ByteRange, first_line: int) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
    """(block of (line number, raw line) of the non-blank lines, lines read so far) over ``piece``; a block
    may be empty (blank lines only), and after the last one the count is the range's number of lines."""
    path = Path(piece.path)
    try:
        stat = path.stat()
    except OSError:
        raise InputError("corpus file not found (it was removed during the build)", source=piece.path) from None
    if (stat.st_size, stat.st_mtime_ns) != (piece.size, piece.mtime_ns):
        raise InputError("corpus file changed during the build: run the build again", source=piece.path)
    if piece.gzip:  # one range: the whole file, numbered from 1
        for _, block, _ in read_line_blocks(path, block_bytes=_BLOCK_BYTES):
            yield block, block[-1][0]
        return
    number, remaining, carry = first_line, piece.end - piece.start, b""
    with open(path, "rb") as handle:
        handle.seek(piece.start)
        while remaining > 0 or carry:
            chunk = handle.read(min(_BLOCK_BYTES, remaining)) if remaining > 0 else b""
            if remaining > 0 and not chunk:
                raise InputError("corpus file changed during the build: run the build again", source=piece.path)
            remaining -= len(chunk)
            data = carry + chunk
            cut = data.rfind(b"\n") + 1 if remaining > 0 else len(data)  # a range ends at a line start
            if cut == 0:  # a line longer than a block: read on
                carry = data
                continue
            body, carry = data[:cut], data[cut:]
            lines = body.split(b"\n")
            if body.endswith(b"\n"):
                lines.pop()
            yield [(number + i, raw) for i, raw in enumerate(lines) if raw.strip()], number + len(lines) - first_line
            number += len(lines)


def _range_tokens(piece: ByteRange) -> tuple[list[str], dict[str, Any]]:
    """Pass 1 (a Ray task): the range's distinct tokens (sorted) and its line, document and token counts."""
    words: set[str] = set()
    lines = documents = tokens = 0
    try:
        for block, passed in _range_lines(piece, first_line=1):
            lines = passed
            if block:
                doc_ids, block_words, ids, _ = tokenize_block(piece.path, block)
                words.update(block_words)
                documents += len(doc_ids)
                tokens += len(ids)
    except InputError as exc:  # numbered from the range's first line: the driver renumbers it
        if exc.line is None:
            raise
        problem = str(exc).removeprefix(f"{exc.source}:{exc.line}: ")
        return [], {"lines": 0, "documents": 0, "tokens": 0, "error": problem, "error_line": exc.line}
    return sorted(words), {"lines": lines, "documents": documents, "tokens": tokens}


def _range_record(piece: ByteRange, first_line: int, vocab_size: int, vocab_sha256: str) -> dict[str, Any]:
    """What a shard was built from (its range.json): a re-run reuses the shard only when this is unchanged."""
    return {
        "source": str(Path(piece.path).resolve()),
        "start": piece.start,
        "end": piece.end,
        "gzip": piece.gzip,
        "size": piece.size,
        "mtime_ns": piece.mtime_ns,
        "first_line": first_line,
        "vocab_size": vocab_size,
        "vocab_sha256": vocab_sha256,
    }


def _build_shard(
    piece: ByteRange,
    first_line: int,
    words: list[str],
    ids: np.ndarray,
    folder: str,
    tokens_total: int,
    vocab_size: int,
    vocab_sha256: str,
) -> tuple[dict[str, Any], np.ndarray]:
    """Pass 2 (a Ray task): tokenize the range again, map ``words`` (the range's, sorted) to their global
    ``ids``, write the shard. Returns its manifest entry and the counts of ``words`` in it."""
    where = Path(folder)
    where.mkdir(parents=True, exist_ok=True)
    (where / "shard.json").unlink(missing_ok=True)  # until write_shard ends, the shard is incomplete
    record = _range_record(piece, first_line, vocab_size, vocab_sha256)
    _atomic_write(where / _RANGE_FILE, json.dumps(record, indent=1).encode("utf-8"))
    position = {word: i for i, word in enumerate(words)}
    global_ids = np.asarray(ids, dtype=np.int32)
    counts = np.zeros(len(words), dtype=np.int64)
    tokens = np.empty(tokens_total, dtype=np.int32)
    lengths: list[np.ndarray] = []
    doc_ids: list[str] = []
    size = 0
    for block, _ in _range_lines(piece, first_line):
        if not block:
            continue
        block_ids, block_words, local, block_lengths = tokenize_block(piece.path, block)
        rows = np.fromiter(map(position.__getitem__, block_words), dtype=np.int64, count=len(block_words))
        table = np.empty(len(block_words) + 1, dtype=np.int32)
        table[0] = 0
        table[1:] = global_ids[rows]
        counts[rows] += np.bincount(local, minlength=len(table))[1:]
        if size + len(local) > len(tokens):
            raise InputError("corpus file changed during the build: run the build again", source=piece.path)
        tokens[size : size + len(local)] = table[local]
        size += len(local)
        lengths.append(block_lengths)
        doc_ids.extend(block_ids)
    if size != len(tokens):
        raise InputError("corpus file changed during the build: run the build again", source=piece.path)
    entry = write_shard(
        where,
        tokens,
        np.concatenate(lengths),
        doc_ids,
        vocab_size=vocab_size,
        vocab_sha256=vocab_sha256,
    )
    return entry, counts


def _reusable_shard(
    folder: str, record: dict[str, Any], vocab_size: int
) -> tuple[dict[str, Any], np.ndarray, np.ndarray] | None:
    """A Ray task: (entry, ids, their counts) of a finished shard built from ``record``; None to rebuild it."""
    where = Path(folder)
    try:
        entry = json.loads((where / "shard.json").read_text(encoding="utf-8"))
        previous = json.loads((where / _RANGE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or previous != record:
        return None
    if any(entry.get(k) != v for k, v in _producer().items()) or entry.get("name") != where.name:
        return None
    if entry.get("vocab_size") != vocab_size or entry.get("vocab_sha256") != record["vocab_sha256"]:
        return None
    if not _intact(where, entry.get("files")):
        return None
    counts = token_counts(np.load(where / "tokens.npy", mmap_mode="r"), vocab_size + 1)
    entry["resumed"] = True
    present = np.flatnonzero(counts)
    return entry, present, counts[present]


def build_index_ray(
    corpus: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    retries: int = 3,
    task_memory: int | None = None,
    progress: bool = False,
) -> RayBuildReport:
    """Index ``corpus`` (a JSONL file or a list of them; .gz files are one shard each) into ``out_dir`` with
    Ray tasks, one shard per ~``shard_bytes`` byte range (see the module docstring for the two passes).

    ``retries``: how often Ray re-runs a task whose worker died or that raised an OSError.
    ``task_memory``: bytes of Ray's ``memory`` resource each task reserves, so a node runs only as many
    shard builds at once as its memory holds (measured: ~8.5 bytes per token of the shard; add 20%,
    docs/provenance-at-scale.md).
    InputError for a missing file, a folder, an unsupported compression, a .gz larger than ``shard_bytes``,
    a malformed line (file and line), a range too large for an int32 suffix array, a corpus with no documents.
    """
    started = time.perf_counter()
    if not isinstance(shard_bytes, int) or shard_bytes < 1:
        raise InputError("shard_bytes must be a positive number of bytes", source="shard_bytes")
    paths = _corpus_files(corpus)
    ray = _ray()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # an index being (re)built is not loadable
    pieces = plan_ranges(paths, shard_bytes)
    options: dict[str, Any] = {"max_retries": retries, "retry_exceptions": [OSError]}
    if task_memory:
        options["memory"] = task_memory

    # pass 1: distinct tokens and counts of every range
    pass1 = ray.remote(num_returns=2)(_range_tokens).options(**options)
    refs = [pass1.remote(piece) for piece in pieces]
    word_refs, stat_refs = [r[0] for r in refs], [r[1] for r in refs]
    stats = _wait(ray, stat_refs, "pass 1 (vocabulary)", progress)
    first_lines, line = [], 1
    for piece, stat in zip(pieces, stats, strict=True):
        if piece.gzip or piece.start == 0:
            line = 1
        first_lines.append(line)
        if "error" in stat:  # the first malformed line of the corpus, numbered in its file
            raise InputError(stat["error"], source=piece.path, line=line + stat["error_line"] - 1)
        line += stat["lines"]
        if stat["tokens"] > MAX_TOKENS:
            raise InputError(
                f"bytes {piece.start}-{piece.end} hold {stat['tokens']:,} tokens, more than an int32 suffix array "
                f"holds ({MAX_TOKENS:,}): use a smaller shard_bytes" + (" (split the .gz file)" if piece.gzip else ""),
                source=piece.path,
            )
    kept = [i for i, stat in enumerate(stats) if stat["documents"] > 0]
    if not kept:
        raise InputError("the corpus has no documents (every line is blank)", source=str(paths[0]))
    range_words = _get(ray, [word_refs[i] for i in kept])
    vocabulary = sorted(set().union(*range_words))
    id_of = {word: i + 1 for i, word in enumerate(vocabulary)}
    vocab_bytes = "\n".join(vocabulary).encode("utf-8")
    vocab_sha256 = hashlib.sha256(vocab_bytes).hexdigest()
    _atomic_write(out / "vocab.txt", vocab_bytes)  # the shards' ids refer to it (write_manifest rewrites it)
    pass1_seconds = time.perf_counter() - started

    # pass 2: one shard per non-empty range (reusing finished shards of an earlier run)
    started2 = time.perf_counter()
    for stale in sorted(out.glob("shard-*")):
        if _SHARD_NAME.fullmatch(stale.name) and int(stale.name[6:]) >= len(kept):
            shutil.rmtree(stale)
    folders = [str(out / f"shard-{number:05d}") for number in range(len(kept))]
    records = [_range_record(pieces[i], first_lines[i], len(vocabulary), vocab_sha256) for i in kept]
    check = ray.remote(_reusable_shard).options(**options)
    candidates = [n for n in range(len(kept)) if (Path(folders[n]) / "shard.json").exists()]
    reused = dict(
        zip(
            candidates,
            _get(ray, [check.remote(folders[n], records[n], len(vocabulary)) for n in candidates]),
            strict=True,
        )
    )
    build = ray.remote(_build_shard).options(**options)
    range_ids = [np.fromiter(map(id_of.__getitem__, words), dtype=np.int32, count=len(words)) for words in range_words]
    del id_of
    pending = {}
    for number, i in enumerate(kept):
        if reused.get(number) is None:
            pending[number] = build.remote(
                pieces[i], first_lines[i], word_refs[i], range_ids[number], folders[number], stats[i]["tokens"],
                len(vocabulary), vocab_sha256,
            )  # fmt: skip
    built = dict(zip(pending, _wait(ray, list(pending.values()), "pass 2 (shards)", progress), strict=True))
    counts = np.zeros(len(vocabulary) + 1, dtype=np.int64)
    entries = []
    for number in range(len(kept)):
        previous = reused.get(number)
        if previous is not None:
            entry, present, shard_counts = previous
            counts[present] += shard_counts
        else:
            entry, word_counts = built[number]
            counts[range_ids[number]] += word_counts
        entries.append(entry)
    write_manifest(out, entries, vocabulary, counts)
    return RayBuildReport(
        documents=sum(int(e["documents"]) for e in entries),
        tokens=int(counts[1:].sum()),
        shards=len(entries),
        resumed_shards=sum(1 for e in entries if e.get("resumed")),
        bytes_read=sum(p.size for p in {Path(p.path): p for p in pieces}.values()),
        seconds=time.perf_counter() - started,
        ranges=len(pieces),
        pass1_seconds=pass1_seconds,
        pass2_seconds=time.perf_counter() - started2,
    )


def _wait(ray: Any, refs: list[Any], label: str, progress: bool) -> list[Any]:
    """The results of ``refs`` in order, reporting progress on stderr as tasks finish."""
    if progress and refs:
        remaining = list(refs)
        while remaining:
            _, remaining = ray.wait(remaining, num_returns=1)
            done = len(refs) - len(remaining)
            sys.stderr.write(f"\r{label}: {done}/{len(refs)}" + ("\n" if not remaining else ""))
            sys.stderr.flush()
    return list(_get(ray, refs))


# -- lookup -----------------------------------------------------------------------------------------------------

#: Where one shard holds a span: (shard number, occurrences there, up to max_sources (position, doc id,
#: offset in the doc) in suffix-array order).
ShardHits = tuple[int, int, list[tuple[int, str, int]]]
#: A span maximal in one actor's shards: (start, end, text, bci, char_start, char_end, hits by shard).
PartialSpan = tuple[int, int, str, float, int, int, list[ShardHits]]


class ShardLookup:
    """The body of a lookup actor: some shards of an index (with its global vocabulary and counts).

    Usable in-process too (the tests merge several of them without Ray). ``find`` returns, for each text,
    the spans maximal in these shards with their per-shard occurrence counts and first ``max_sources``
    positions in suffix-array order: what :func:`merge_partial_spans` needs to reproduce ``find_spans``
    on the whole index exactly."""

    def __init__(self, path: str, shards: Sequence[int], verify: Literal["full", "size"] = "full") -> None:
        self.numbers = list(shards)
        self.error: GuardrailsError | None = None
        self.index: CorpusIndex | None = None
        try:
            self.index = CorpusIndex.load(path, shards=self.numbers, verify=verify)
        except GuardrailsError as exc:  # handed to the driver by ready(): an actor's constructor error is opaque
            self.error = exc

    def ready(self) -> GuardrailsError | None:
        """None when the shards loaded, else the error loading raised (an actor's constructor error reaches
        the driver wrapped and opaque; this one arrives as itself: every GuardrailsError pickles)."""
        return self.error

    def find(self, texts: list[str], min_span: int = 8, max_sources: int = 5) -> list[list[PartialSpan]]:
        """For each of ``texts``: its spans maximal in these shards, with hits by shard."""
        if self.index is None:
            raise self.error or GuardrailsError("the shards did not load")

        index = self.index
        return [self._find(index, text, min_span, max_sources) for text in texts]

    def _find(self, index: CorpusIndex, text: str, min_span: int, max_sources: int) -> list[PartialSpan]:
        spans = find_spans(index, text, min_span=min_span, max_sources=max_sources)
        if not spans:
            return []
        ids = index.ids(tokens_of(normalize_with_map(text).text))
        partial: list[PartialSpan] = []
        for span in spans:
            row = np.ascontiguousarray(ids[span.start : span.end])[None, :]
            hits: list[ShardHits] = []
            for number, shard in zip(self.numbers, index.shards, strict=True):
                lo, hi = window_intervals(shard, row)
                a, b = int(lo[0]), int(hi[0])
                if b <= a:
                    continue
                positions = np.asarray(shard.sa[a : a + min(b - a, max(max_sources, 0))], dtype=np.int64)
                docs = np.searchsorted(shard.doc_starts, positions, side="right") - 1
                found = [
                    (int(p), shard.doc_ids[d], int(p - shard.doc_starts[d]))
                    for p, d in zip(positions.tolist(), docs.tolist(), strict=True)
                ]
                hits.append((number, b - a, found))
            partial.append((span.start, span.end, span.text, span.bci, span.char_start, span.char_end, hits))
        return partial

    def document_frequency(self, grams: np.ndarray) -> np.ndarray:
        """:func:`~.score.document_frequency` of ``grams`` over these shards."""
        if self.index is None:
            raise self.error or GuardrailsError("the shards did not load")
        return document_frequency(self.index, grams)

    def memory(self) -> dict[str, float]:
        """This process's resident memory in MB (VmRSS, VmHWM, RssAnon, RssFile of /proc/self/status)."""
        fields = {}
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    key = line.split(":")[0]
                    if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                        fields[key] = int(line.split()[1]) / 1024
        except OSError:
            pass
        fields["pid"] = os.getpid()
        return fields


def merge_partial_spans(partials: Sequence[Sequence[PartialSpan]], max_sources: int = 5) -> list[Span]:
    """The spans ``find_spans`` returns on the whole index, from the spans each group of shards found.

    Why this is exact ("occurs" below: in some shard of the group, or of the index; an occurrence never
    crosses a shard or document boundary, so the index's occurrences are the union of the groups'):

    * a globally maximal span [s, e) occurs in some group G, and is maximal in G: [s-1, e) or [s, e+1)
      occurring in G would occur in the index;
    * a span maximal in a group G is globally maximal iff no span maximal in some group strictly contains
      it: if [s, e+1) (or [s-1, e)) occurs in a group H, it extends to a span maximal in H that strictly
      contains [s, e); conversely a strictly larger occurring span has [s-1, e) or [s, e+1) inside it;
    * a globally maximal span is maximal in every group where it occurs, so its count is the sum of the
      identical spans' counts, and its sources are those of ``find_spans``: shards in order, from each the
      first ``max_sources - (sources so far)`` suffix-array entries, sorted by position. Groups return the
      first ``max_sources`` entries of each shard unsorted, so the same prefix can be cut here.

    ``partials``: one list per group, each group's spans as :meth:`ShardLookup.find` returns them.
    Spans come out in answer order."""
    found: dict[tuple[int, int], tuple[PartialSpan, list[ShardHits]]] = {}
    for group in partials:
        for span in group:
            key = (span[0], span[1])
            if key not in found:
                found[key] = (span, [])
            found[key][1].extend(span[6])
    spans: list[Span] = []
    widest = -1
    for start, end in sorted(found, key=lambda key: (key[0], -key[1])):
        if end <= widest:  # inside a span that starts no later and ends no earlier
            continue
        widest = end
        first, hits = found[(start, end)]
        sources: list[Source] = []
        for _, count, positions in sorted(hits, key=lambda hit: hit[0]):
            take = min(count, max_sources - len(sources))
            if take <= 0:
                break
            sources.extend(Source(doc=doc, offset=offset) for _, doc, offset in sorted(positions[:take]))
        spans.append(
            Span(
                start=start,
                end=end,
                text=first[2],
                bci=first[3],
                count=sum(hit[1] for hit in hits),
                sources=tuple(sources),
                char_start=first[4],
                char_end=first[5],
            )
        )
    return spans


def merge_document_frequencies(replies: Sequence[np.ndarray], rows: int) -> np.ndarray:
    """Document frequencies over the whole index from those of groups of shards: their sum, or the int64
    maximum ("formulaic": over ``SCAN_LIMIT`` occurrences in one shard) when any group answered that."""
    saturated = np.iinfo(np.int64).max
    total = np.zeros(rows, dtype=np.int64)
    formulaic = np.zeros(rows, dtype=bool)
    for reply in replies:
        formulaic |= reply == saturated
        total += np.where(reply == saturated, 0, reply)
    total[formulaic] = saturated
    return total


def shard_groups(shards: int, actors: int) -> list[list[int]]:
    """Contiguous blocks of shard numbers, one per actor (at most one actor per shard)."""
    count = max(1, min(actors, shards))
    return [block.tolist() for block in np.array_split(np.arange(shards), count)]


class RayCorpusIndex:
    """A provenance index served by Ray actors, each holding a contiguous block of its shards.

    ``find_spans(text)`` returns exactly what :func:`~.match.find_spans` returns on the whole index (spans,
    counts, BCI, sources); ``find_spans_batch(texts)`` does the same for many texts with one remote call
    per actor; ``document_frequency(grams)`` is :func:`~.score.document_frequency` on the whole index. A text's latency is that of the slowest actor plus one round trip.

    ``actors``: how many (at most one per shard); ``verify``: as :meth:`CorpusIndex.load` (each actor
    checks its own shards; "size" starts fast on large indexes); ``num_cpus``: Ray CPUs each actor reserves.
    Actors are restarted by Ray when their process dies (their calls are retried). ``close()`` ends them."""

    def __init__(
        self,
        path: str | Path,
        *,
        actors: int = 1,
        verify: Literal["full", "size"] = "full",
        num_cpus: float = 1.0,
    ) -> None:
        self.path = Path(path)
        manifest = read_manifest(self.path)  # ArtifactError here, before any actor starts
        if not isinstance(actors, int) or actors < 1:
            raise InputError("actors must be a positive integer", source="actors")
        self.manifest = manifest
        self.groups = shard_groups(len(manifest["shards"]), actors)
        ray = self._ray = _ray()
        actor_class = ray.remote(ShardLookup).options(
            num_cpus=num_cpus, max_restarts=2, max_task_retries=2, scheduling_strategy="SPREAD"
        )
        self._actors: list[Any] = [actor_class.remote(str(self.path), group, verify) for group in self.groups]
        try:
            for error in _get(ray, [actor.ready.remote() for actor in self._actors]):
                if error is not None:
                    raise error
        except BaseException:
            self.close()
            raise

    def find_spans(self, text: str, *, min_span: int = 8, max_sources: int = 5) -> list[Span]:
        """As :func:`~.match.find_spans` on the whole index."""
        return self.find_spans_batch([text], min_span=min_span, max_sources=max_sources)[0]

    def find_spans_batch(self, texts: Sequence[str], *, min_span: int = 8, max_sources: int = 5) -> list[list[Span]]:
        """``find_spans`` of each text, with one remote call per actor for the whole batch."""
        batch = list(texts)
        if not self._actors:
            raise GuardrailsError("this RayCorpusIndex is closed")
        replies = _get(self._ray, [actor.find.remote(batch, min_span, max_sources) for actor in self._actors])
        return [merge_partial_spans([reply[i] for reply in replies], max_sources) for i in range(len(batch))]

    def document_frequency(self, grams: np.ndarray) -> np.ndarray:
        """As :func:`~.score.document_frequency` on the whole index (which benign n-grams the corpus holds, at calibration):
        shards hold disjoint documents, so the counts add up; a group that saw more than ``SCAN_LIMIT``
        occurrences in one shard answers "formulaic" (the int64 maximum), and so does the sum."""
        if not self._actors:
            raise GuardrailsError("this RayCorpusIndex is closed")
        rows = np.asarray(grams, dtype=np.int32)
        return merge_document_frequencies(
            _get(self._ray, [actor.document_frequency.remote(rows) for actor in self._actors]), len(rows)
        )

    def memory(self) -> list[dict[str, float]]:
        """Each actor's resident memory in MB (see :meth:`ShardLookup.memory`)."""
        return list(_get(self._ray, [actor.memory.remote() for actor in self._actors]))

    def close(self) -> None:
        """End the actors (idempotent)."""
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []

    def __enter__(self) -> RayCorpusIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RayCorpusIndex({str(self.path)!r}, shards={len(self.manifest['shards'])}, actors={len(self.groups)})"
