"""The harmful-request detector on groups it never saw, and on disguised requests (issue 23).

Data: `guidelines calibration-data` (AdvBench, HarmBench, chatterbot, Nimbus questions, the hand-written
requests, the contrast pairs of guardrails_uq/data/input_contrast*.yaml: 16 categories x 7 styles), read and
scored exactly as the check does (read_as_model, largest probability over the parts). Target FPR 0.05, the
shipped library. "held_out_before_after": the pooled held-out recall, look-alike FPR and mean AUROC of each
grouping, beside the numbers of commit 2cc222f (before the wider contrast pairs and the guideline prototypes).

  * leave one category out: the contrast pairs of one harm category and the hand-written harmful requests of
    that category are left out of fitting and calibration; recall on its harmful requests, false-positive rate
    on its benign look-alikes, AUROC. (AdvBench/HarmBench rows of the category stay in training: they are
    another source and style.)
  * leave one style out: the contrast pairs of one writing style left out.
  * leave one source out: AdvBench, HarmBench, chatterbot, Nimbus, the hand-written requests left out whole.
  * disguises: each contrast pair of a held-out category, disguised (tags, look-alikes, leetspeak, base64,
    role-play) and scored by the detector that never saw the category: recall and benign-twin FPR against the
    plain form. Translations (French, Spanish, German; guardrails_uq.guidelines.disguise.TRANSLATED): flagged
    or unreadable (the demo policy escalates unreadable).

Prints one JSON object. About 5 minutes on 2 cores (embedding ~4,000 texts once, then 25 fits).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine

from guardrails_uq.embeddings import default_embedder
from guardrails_uq.guidelines.calibration import Examples, HarmDetector, Request, leave_one_group_out
from guardrails_uq.guidelines.detector import segments
from guardrails_uq.guidelines.disguise import DISGUISES, TRANSLATED
from guardrails_uq.guidelines.evaluate import calibration_rows
from guardrails_uq.guidelines.index import GuidelineIndex
from guardrails_uq.guidelines.language import language_of
from guardrails_uq.guidelines.library import GuidelineLibrary
from guardrails_uq.textnorm import read_as_model

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "policies" / "guidelines" / "safety.yaml"

#: Hand-written harmful groups (guardrails_uq/data/input_requests.yaml) -> contrast categories.
WRITTEN_CATEGORY = {
    "violence": "violence", "more_violence_crime": "violence", "weapons_explosives": "weapons",
    "chemical_biological": "cbrn", "cybercrime": "cyber", "more_cyber_fraud": "cyber", "self_harm": "self_harm",
    "sexual_child": "sexual", "drugs": "drugs", "theft_crime": "theft", "targeted_groups": "hate",
    "harassment_hate": "harassment",
    "privacy_stalking": "privacy", "fraud": "fraud", "misinformation_manipulation": "misinformation",
    "extremism": "extremism",
}  # fmt: skip


#: The pooled held-out numbers before issue 23's second round (commit 2cc222f: 12 categories of contrast pairs,
#: features without the guideline prototypes; BENCHMARKS.md of that commit), printed beside today's.
BEFORE = {
    "category": {"recall": 0.289, "false_positive_rate": 0.023, "mean_auroc": 0.840},
    "style": {"recall": 0.48, "false_positive_rate": 0.057, "mean_auroc": 0.880},
    "source": {"recall": 0.622, "false_positive_rate": 0.045, "mean_auroc": 0.860},
}


def _clean(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "scored"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target-fpr", type=float, default=0.05)
    args = parser.parse_args()
    started = time.perf_counter()
    index = GuidelineIndex.open(GuidelineLibrary.load(LIBRARY), default_embedder())
    rows = calibration_rows()
    requests = {
        label: [Request(r["text"], r["source"].split(":")[0], float(r.get("weight", 1.0))) for r in rows[label]]
        for label in ("harmful", "benign")
    }
    examples = Examples.embed(index.embedder, requests["harmful"], requests["benign"])
    where: dict[str, dict[str, str | None]] = {}
    for label in ("harmful", "benign"):
        for r in rows[label]:
            parts = r["source"].split(":")
            category = r.get("category") or (WRITTEN_CATEGORY.get(parts[1]) if parts[0] == "written" else None)
            where.setdefault(read_as_model(r["text"]).text, {"category": category, "style": r.get("style"),
                                                             "source": parts[0]})  # fmt: skip
    info = [where[t] for t in examples.texts]
    detector = HarmDetector(target_fpr=args.target_fpr)
    report: dict = {
        "machine": machine(),
        "n_harmful": int(examples.harmful.sum()),
        "n_benign": int((~examples.harmful).sum()),
    }

    # categories: contrast rows of the category, and written harmful rows mapped to it, held out together
    by_category = leave_one_group_out(index, examples, detector, [i["category"] for i in info])
    report["leave_one_category_out"] = _clean(by_category)
    report["leave_one_style_out"] = _clean(leave_one_group_out(index, examples, detector, [i["style"] for i in info]))
    report["leave_one_source_out"] = _clean(leave_one_group_out(index, examples, detector, [i["source"] for i in info]))
    report["held_out_before_after"] = {
        name: {"before": BEFORE[name], "after": {k: round(report[f"leave_one_{name}_out"]["pooled"][k], 3)
                                                 for k in ("recall", "false_positive_rate", "mean_auroc")}}
        for name in ("category", "style", "source")
    }  # fmt: skip

    # disguises, scored by the detector that never saw the pair's category
    pairs = [(i["category"], t, h) for t, h, i in zip(examples.texts, examples.harmful, info, strict=True)
             if i["style"] is not None]  # fmt: skip
    forms = {"plain": lambda text: text, **DISGUISES}
    readings = {(name, t): read_as_model(fn(t)).text for name, fn in forms.items() for _, t, _ in pairs}
    texts = sorted({part for reading in readings.values() for part in segments(reading)})
    vectors = dict(zip(texts, index.embedder.embed(texts), strict=True))
    disguises: dict[str, dict] = {}
    for name in forms:
        flagged = {True: [], False: []}
        for category, text, harmful in pairs:
            scored = by_category["scored"][category]
            parts = segments(readings[(name, text)])
            probability = scored["detector"].predict_proba(index, np.vstack([vectors[p] for p in parts])).max()
            flagged[bool(harmful)].append(probability > scored["threshold"])
        disguises[name] = {"n": len(flagged[True]), "recall": float(np.mean(flagged[True])),
                           "benign_twin_fpr": float(np.mean(flagged[False]))}  # fmt: skip
    for name in DISGUISES:
        disguises[name]["recall_minus_plain"] = disguises[name]["recall"] - disguises["plain"]["recall"]
        disguises[name]["fpr_minus_plain"] = disguises[name]["benign_twin_fpr"] - disguises["plain"]["benign_twin_fpr"]
    unreadable = [language_of(read_as_model(text).text) != "en" for _, h, b in TRANSLATED for text in (h, b)]
    disguises["translated"] = {"n": len(TRANSLATED), "harmful_unreadable": float(np.mean(unreadable[0::2])),
                               "benign_unreadable": float(np.mean(unreadable[1::2]))}  # fmt: skip
    report["disguises_held_out_category"] = disguises
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
