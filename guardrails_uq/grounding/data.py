"""Reading the grounding inputs: knowledge-base chunks and labelled answers (JSONL, file:line errors)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..jsonl import read_jsonl
from .model import LABELS

ANSWER_FORMAT = (
    '{"question": str, "context": [str, ...], "answer": str, "label": "supported"|"contradicted"|"unsupported"}'
)


@dataclass(frozen=True)
class LabelledAnswer:
    """An answer, the context it was given, and whether that context supports it."""

    question: str
    context: tuple[str, ...]
    answer: str
    label: str
    extra: tuple[tuple[str, object], ...] = ()

    @property
    def documents(self) -> list[tuple[str, str]]:
        """The context as (id, text) documents: ``context-0``, ``context-1``, ..."""
        return [(f"context-{i}", text) for i, text in enumerate(self.context)]

    def get(self, name: str) -> object:
        """Another field of the line (e.g. ``kb`` or ``style``), or None."""
        return dict(self.extra).get(name)


def read_chunks(path: str | Path) -> list[tuple[str, str]]:
    """(id, text) pairs of a corpus JSONL (``{"id", "text"}`` a line); ids unique, at least 3 chunks with text."""
    chunks: list[tuple[str, str]] = []
    seen: set[str] = set()
    for number, record in read_jsonl(path):
        doc_id, text = record.get("id"), record.get("text")
        if not isinstance(text, str):
            raise InputError('each line needs "text" (a string)', source=str(path), line=number)
        if doc_id is None:
            doc_id = f"line-{number}"
        if not isinstance(doc_id, str | int) or isinstance(doc_id, bool):
            raise InputError('"id" must be a string or an integer', source=str(path), line=number)
        doc_id = str(doc_id)
        if doc_id in seen:
            raise InputError(f"id {doc_id!r} appears twice", source=str(path), line=number)
        seen.add(doc_id)
        if text.strip():
            chunks.append((doc_id, text))
    if len(chunks) < 3:
        raise InputError(
            f"{len(chunks)} chunk(s) with text: need at least 3 to make contrasting examples", source=str(path)
        )
    return chunks


def corpus_digest(chunks: Sequence[tuple[str, str]]) -> str:
    """SHA-256 over the chunks (order-independent): names the corpus a calibration was made from."""
    lines = sorted(f"{doc_id}\t{text}" for doc_id, text in chunks)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read_answers(path: str | Path) -> list[LabelledAnswer]:
    """Labelled answers, one JSON object a line in ``ANSWER_FORMAT`` (other fields kept in ``extra``)."""
    out: list[LabelledAnswer] = []
    for number, record in read_jsonl(path):
        question = record.get("question", "")
        context = record.get("context")
        answer = record.get("answer")
        label = record.get("label")
        if not isinstance(question, str):
            raise InputError('"question" must be a string', source=str(path), line=number)
        if isinstance(context, str):
            context = [context]
        if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
            raise InputError(
                f'"context" must be a list of strings; a line is {ANSWER_FORMAT}', source=str(path), line=number
            )
        if not isinstance(answer, str):
            raise InputError(f'"answer" must be a string; a line is {ANSWER_FORMAT}', source=str(path), line=number)
        if label not in LABELS:
            raise InputError(
                f'"label" must be one of {", ".join(LABELS)}, got {label!r}', source=str(path), line=number
            )
        extra = tuple(
            (k, v) for k, v in record.items() if k not in {"question", "context", "answer", "label"} and _simple(v)
        )
        out.append(LabelledAnswer(question, tuple(context), answer, label, extra))
    return out


def _simple(value: object) -> bool:
    return isinstance(value, str | int | float | bool) or value is None
