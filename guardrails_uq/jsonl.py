"""Reading JSONL data files: one JSON object per line, errors naming the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError


def read_jsonl(path: str | Path, *, allow_empty: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for every non-blank line. InputError for a missing file, a line that is not
    UTF-8 JSON or not an object, and (unless ``allow_empty``) a file with no objects."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", source=str(path))
    seen = False
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"not a UTF-8 JSON object: {exc}", source=str(path), line=number) from None
            if not isinstance(record, dict):
                raise InputError("each line must be a JSON object", source=str(path), line=number)
            seen = True
            yield number, record
    if not seen and not allow_empty:
        raise InputError("the file has no records", source=str(path))
