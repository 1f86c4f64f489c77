"""Evaluating the provenance check on answers labelled copied / not copied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError
from ..jsonl import read_jsonl
from ..metrics import auroc, roc_points
from .index import CorpusIndex
from .match import find_spans


def read_answers(path: str | Path) -> list[tuple[str, bool]]:
    """(text, copied) pairs from JSONL lines ``{"text": ..., "copied": true|false}``."""
    answers = []
    for number, record in read_jsonl(path):
        if not isinstance(record.get("text"), str):
            raise InputError('each line needs a string "text"', source=str(path), line=number)
        if not isinstance(record.get("copied"), bool):
            raise InputError('each line needs "copied": true or false', source=str(path), line=number)
        answers.append((record["text"], record["copied"]))
    return answers


def evaluate(
    index: CorpusIndex, answers: list[tuple[str, bool]], *, threshold: float = 20.0, min_span: int = 8
) -> dict[str, Any]:
    """Detection rate and false-positive rate of "bci_max > threshold", AUROC of bci_max, ROC points."""
    scores = [max((s.bci for s in find_spans(index, text, min_span=min_span)), default=0.0) for text, _ in answers]
    labels = [copied for _, copied in answers]
    copied = [s for s, y in zip(scores, labels, strict=True) if y]
    clean = [s for s, y in zip(scores, labels, strict=True) if not y]
    return {
        "threshold": threshold,
        "min_span": min_span,
        "n_copied": len(copied),
        "n_clean": len(clean),
        "detection_rate": sum(s > threshold for s in copied) / len(copied) if copied else float("nan"),
        "false_positive_rate": sum(s > threshold for s in clean) / len(clean) if clean else float("nan"),
        "auroc": auroc(scores, labels),
        "roc": roc_points(scores, labels),
    }
