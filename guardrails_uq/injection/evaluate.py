"""Measuring the injection check: a policy on labelled tool results, and held-out groups.

* :func:`evaluate_policy`: each line's text goes through the policy's retrieval phase as one tool result (for
  the line's ``task``, the user's request); flagged = the Decision is not allow or the result was withheld.
* :func:`leave_one_group_out`: the number to report. For each group of injected documents (a style, or a
  carrier) the detector is fitted and calibrated without it and recall is measured on it at the calibrated
  threshold; for each benign source (hard negatives: texts about injection, instructions for people...) the
  detector is fitted and calibrated without it and its false-positive rate is measured on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..call import ScoredDocument
from ..decision import Action
from ..errors import InputError
from ..jsonl import read_jsonl
from ..metrics import auroc
from .calibration import Document, Embedded, InjectionDetector

TOOL_RESULT_ID = "tool-result"


def read_labelled(path: str | Path) -> list[dict[str, Any]]:
    """Lines ``{"text", "injection": bool, "task"?}`` (other fields kept, e.g. for grouping)."""
    rows = []
    for number, record in read_jsonl(path):
        if not isinstance(record.get("text"), str) or not record["text"].strip():
            raise InputError('each line needs a non-empty "text"', source=str(path), line=number)
        if not isinstance(record.get("injection"), bool):
            raise InputError('each line needs "injection": true or false', source=str(path), line=number)
        task = record.get("task")
        if task is not None and not isinstance(task, str):
            raise InputError('"task" must be a string (the user\'s request)', source=str(path), line=number)
        rows.append(record)
    return rows


def evaluate_policy(guard: Any, rows: Sequence[dict[str, Any]], *, score: str = "injection.score") -> dict[str, Any]:
    """``{"n", "recall", "false_positive_rate", "auroc", "score"}`` of ``guard``'s retrieval phase on ``rows``."""
    flagged, labels, values = [], [], []
    for row in rows:
        document = ScoredDocument(id=TOOL_RESULT_ID, text=row["text"], score=1.0)
        decision = guard.retrieve(row.get("task") or "", [document])
        withheld = decision.documents is not None and all(d.id != TOOL_RESULT_ID for d in decision.documents)
        flagged.append(decision.action is not Action.ALLOW or withheld)
        labels.append(bool(row["injection"]))
        value = decision.signals.get(score)
        values.append(float(value) if isinstance(value, int | float) and not isinstance(value, bool) else np.nan)
    flags, truth = np.asarray(flagged), np.asarray(labels)
    finite = np.isfinite(values)
    both = truth[finite].any() and (~truth[finite]).any()
    return {
        "n": len(rows),
        "recall": float(flags[truth].mean()) if truth.any() else None,
        "false_positive_rate": float(flags[~truth].mean()) if (~truth).any() else None,
        "auroc": auroc(np.asarray(values)[finite], truth[finite]) if both else None,
        "score": score,
    }


def leave_one_group_out(
    embedder: Any,
    benign: Sequence[Document],
    injected: Sequence[Document],
    injected_groups: dict[str, Sequence[str]],
    benign_groups: Sequence[str],
    detector: InjectionDetector | None = None,
) -> dict[str, Any]:
    """Held-out recall per injected group and false-positive rate per benign group (see the module docstring).

    ``injected_groups`` maps a grouping name ("style", "carrier") to each injected document's group;
    ``benign_groups`` gives each benign document's group. Windows are embedded once."""
    template = detector or InjectionDetector()
    params = {k: getattr(template, k) for k in ("target_fpr", "calibration_fraction", "l2", "seed")}
    all_benign = Embedded(embedder, benign)
    spans = Embedded(embedder, injected, positive_spans=True)
    whole = Embedded(embedder, injected)
    report: dict[str, Any] = {"target_fpr": template.target_fpr, "n_benign": len(benign), "n_injected": len(injected)}
    for grouping, labels in injected_groups.items():
        groups: dict[str, Any] = {}
        caught = 0
        for group in sorted(set(labels)):
            keep = [i for i, g in enumerate(labels) if g != group]
            held = [i for i, g in enumerate(labels) if g == group]
            fitted = InjectionDetector(**params).fit_embedded(
                embedder.name, all_benign, spans.subset(keep), whole.subset(keep)
            )
            hits = int((whole.scores(fitted.model_, held) > fitted.threshold_).sum())
            caught += hits
            groups[group] = {"n": len(held), "recall": hits / len(held)}
        report[f"by_{grouping}"] = {"recall": caught / len(labels), "groups": groups}
    groups = {}
    false_positives = 0
    for group in sorted(set(benign_groups)):
        keep = [i for i, g in enumerate(benign_groups) if g != group]
        held = [i for i, g in enumerate(benign_groups) if g == group]
        fitted = InjectionDetector(**params).fit_embedded(embedder.name, all_benign.subset(keep), spans, whole)
        flagged = int((all_benign.scores(fitted.model_, held) > fitted.threshold_).sum())
        false_positives += flagged
        groups[group] = {"n": len(held), "false_positive_rate": flagged / len(held)}
    report["by_benign_source"] = {"false_positive_rate": false_positives / len(benign_groups), "groups": groups}
    return report
