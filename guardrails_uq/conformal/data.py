"""Calibration data files: chunks (``{"id", "text"}`` per line) and pairs (``{"query", "relevant": [ids]}``)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..jsonl import read_jsonl
from .calibration import CalibrationPair


def _records(path: str | Path) -> list[tuple[int, dict]]:
    return list(read_jsonl(path))


def read_chunks(path: str | Path) -> dict[str, str]:
    """id -> text, in file order. Ids must be unique strings (or numbers) and texts strings."""
    chunks: dict[str, str] = {}
    for number, record in _records(path):
        if not isinstance(record.get("text"), str) or record.get("id") is None:
            raise InputError('each chunk needs "id" and a string "text"', source=str(path), line=number)
        key = str(record["id"])
        if key in chunks:
            raise InputError(f"duplicate chunk id {key!r}", source=str(path), line=number)
        chunks[key] = record["text"]
    return chunks


def read_pairs(path: str | Path, chunks: dict[str, str] | None = None) -> list[CalibrationPair]:
    """Calibration pairs; with ``chunks``, every relevant id must exist."""
    pairs = []
    for number, record in _records(path):
        query, relevant = record.get("query"), record.get("relevant")
        if not isinstance(query, str) or not isinstance(relevant, list) or not relevant:
            raise InputError(
                'each pair needs a string "query" and a non-empty list "relevant" of chunk ids',
                source=str(path),
                line=number,
            )
        ids = frozenset(str(r) for r in relevant)
        if chunks is not None:
            missing = sorted(ids - chunks.keys())
            if missing:
                raise InputError(f"relevant ids not in the chunks file: {missing[:5]}", source=str(path), line=number)
        pairs.append(CalibrationPair(query=query, relevant=ids))
    return pairs


def write_chatterbot(out: str | Path) -> tuple[Path, Path]:
    """chunks.jsonl (each distinct chatterbot answer) and pairs.jsonl (question -> its answer's chunk)."""
    from .. import datasets

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids: dict[str, str] = {}
    pairs = []
    for row in datasets.chatterbot():
        chunk = ids.setdefault(row["answer"], f"{row['category']}-{len(ids)}")
        pairs.append({"query": row["question"], "relevant": [chunk]})
    chunks_path, pairs_path = out / "chunks.jsonl", out / "pairs.jsonl"
    chunks_path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for t, i in ids.items()), encoding="utf-8")
    pairs_path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return chunks_path, pairs_path
