"""Reading a JSONL(.gz) corpus: one document per line with a "text" field (and an optional "id")."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from ..errors import InputError


def _open(path: Path) -> IO[bytes]:  # a GzipFile is a binary IO too
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def parse_line(raw: bytes, source: str, number: int) -> tuple[str, str]:
    """(doc_id, text) of one non-blank corpus line; InputError naming ``source:number`` when malformed.

    ``doc_id`` is the line's "id" (as a string) or "line-N".
    """
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"line is not valid UTF-8 (byte {exc.start}); re-encode the corpus as UTF-8", source=source, line=number
        ) from None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"invalid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object",
            source=source,
            line=number,
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise InputError(
            'each line needs a string "text" field, e.g. {"id": "doc-1", "text": "..."}', source=source, line=number
        )
    doc_id = record.get("id")
    return (str(doc_id) if doc_id is not None else f"line-{number}"), record["text"]


def read_line_blocks(
    path: str | Path, *, skip: int = 0, block_bytes: int = 4_000_000
) -> Iterator[tuple[int, list[tuple[int, bytes]], int]]:
    """Yield (block number, [(line number, raw line)], bytes consumed so far) for the non-blank lines after
    the first ``skip`` documents, in blocks of about ``block_bytes``."""
    path = Path(path)
    if not path.exists():
        raise InputError("corpus file not found", source=str(path))
    seen = consumed = size = block_no = 0
    block: list[tuple[int, bytes]] = []
    try:
        with _open(path) as handle:
            for number, raw in enumerate(handle, start=1):
                consumed += len(raw)
                if not raw.strip():
                    continue
                seen += 1
                if seen <= skip:
                    continue
                block.append((number, raw))
                size += len(raw)
                if size >= block_bytes:
                    yield block_no, block, consumed
                    block_no += 1
                    block, size = [], 0
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"cannot read corpus: {exc}", source=str(path)) from None
    if block:
        yield block_no, block, consumed


def read_documents(path: str | Path, *, skip: int = 0) -> Iterator[tuple[str, str]]:
    """Yield (doc_id, text) for each non-blank line after the first ``skip`` documents (see parse_line)."""
    for _, block, _ in read_line_blocks(path, skip=skip):
        for number, raw in block:
            yield parse_line(raw, str(path), number)
