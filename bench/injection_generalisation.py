"""The injection detector on groups it never saw: instruction styles, carriers and benign sources held out whole.

Data: `guardrails-uq injection eval-data` (tool results written for this project, seed 0, the Nimbus help
center as benign documents), target FPR 0.01, the packaged MiniLM; the same computation as
`guardrails-uq injection logo`. For each instruction style (and each carrier) the detector is fitted and
calibrated without it, and recall is measured on it; for each benign group (hard negatives: texts about
prompt injection, instructions for people, other languages ...) the detector is fitted and calibrated without
it, and its false-positive rate is measured on it. "held_out_before_after": the pooled numbers beside those
recorded at commit 2cc222f (docs/threat-model.md).

    python bench/injection_generalisation.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine

from guardrails_uq.embeddings import default_embedder
from guardrails_uq.injection.calibration import Document, InjectionDetector
from guardrails_uq.injection.data import write
from guardrails_uq.injection.evaluate import leave_one_group_out
from guardrails_uq.jsonl import read_jsonl

#: Pooled held-out numbers of commit 2cc222f (docs/threat-model.md and the issue 23 closing note of that commit).
BEFORE = {"recall_by_style": 0.733, "recall_by_carrier": 0.963, "benign_false_positive_rate": 0.084,
          "about_injection_fpr": 0.78, "foreign_fpr": 0.77}  # fmt: skip


def main() -> None:
    started = time.perf_counter()
    benign_path, injected_path = write(tempfile.mkdtemp())
    benign = [r for _, r in read_jsonl(benign_path)]
    injected = [r for _, r in read_jsonl(injected_path)]
    report = leave_one_group_out(
        default_embedder(),
        [Document(r["text"], r["source"]) for r in benign],
        [Document(r["text"], r["source"], r.get("span")) for r in injected],
        {field: [str(r[field]) for r in injected] for field in ("style", "carrier")},
        [str(r["group"]) for r in benign],
        InjectionDetector(target_fpr=0.01),
    )
    groups = report["by_benign_source"]["groups"]
    after = {
        "recall_by_style": report["by_style"]["recall"],
        "recall_by_carrier": report["by_carrier"]["recall"],
        "benign_false_positive_rate": report["by_benign_source"]["false_positive_rate"],
        "about_injection_fpr": groups["about-injection"]["false_positive_rate"],
        "foreign_fpr": groups["foreign"]["false_positive_rate"],
    }
    out = {
        "machine": machine(),
        "held_out_before_after": {k: {"before": BEFORE[k], "after": round(v, 3)} for k, v in after.items()},
        "recall_by_style": {g: round(v["recall"], 3) for g, v in report["by_style"]["groups"].items()},
        "recall_by_carrier": {g: round(v["recall"], 3) for g, v in report["by_carrier"]["groups"].items()},
        "fpr_by_benign_group": {g: round(v["false_positive_rate"], 3) for g, v in groups.items()},
        "n_benign": report["n_benign"],
        "n_injected": report["n_injected"],
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
