"""Reading a JSONL(.gz) corpus: one document per line with a "text" field (and an optional "id")."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import InputError


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_documents(path: str | Path, *, skip: int = 0) -> Iterator[tuple[str, str, int]]:
    """Yield (doc_id, text, bytes_read_so_far) for each non-blank line, after skipping ``skip`` documents.

    Raises InputError naming the file and line for invalid UTF-8, invalid JSON, or a missing/non-string
    "text" field. ``doc_id`` is the line's "id" (as a string) or "line-N".
    """
    path = Path(path)
    if not path.exists():
        raise InputError("corpus file not found", source=str(path))
    seen = 0
    consumed = 0
    try:
        handle = _open(path)
        with handle:
            for number, raw in enumerate(handle, start=1):
                consumed += len(raw)
                if not raw.strip():
                    continue
                seen += 1
                if seen <= skip:
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(
                        f"line is not valid UTF-8 (byte {exc.start}); re-encode the corpus as UTF-8",
                        source=str(path),
                        line=number,
                    ) from None
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        f"invalid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object",
                        source=str(path),
                        line=number,
                    ) from None
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise InputError(
                        'each line needs a string "text" field, e.g. {"id": "doc-1", "text": "..."}',
                        source=str(path),
                        line=number,
                    )
                doc_id = record.get("id")
                yield (str(doc_id) if doc_id is not None else f"line-{number}"), record["text"], consumed
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"cannot read corpus: {exc}", source=str(path)) from None
