"""The harm check on answers (issue 25 item 2): the request-calibrated detector applied to answers, against a
detector calibrated on answers too, both measured on answer categories and writing styles they never saw.

Data: guardrails_uq/data/answer_contrast.yaml (48 pairs over 12 harm categories: step-by-step harmful
instructions beside benign how-to answers of the same form), each pair in 5 writing styles
(guardrails_uq.answer_harm.data.STYLES); benign answer-like texts (chatterbot answers, the Nimbus knowledge
base); and the request rows the shipped request calibration is fitted on. Scored exactly as the check does
(read_as_model, largest probability over the parts). Target FPR 0.05, the shipped library.

The shipped answer calibration (policies/calibration/answer_harm.json) is the "answers only" recipe:
`answer-harm calibration-data` then `calibrate guidelines --l2 25`.

  * request artifact: the shipped policies/calibration/guidelines.json (fitted on requests only) applied to every
    answer: recall, false-positive rate on the benign twins and on the benign answer-like texts.
  * leave one category out: fit and calibrate on the answers of the other 11 categories (and the benign
    answer-like texts), "answers only" (l2 25, the shipped recipe) and "answers + requests" (l2 100, the request
    rows added); recall / FPR on the held-out category's answers (its benign twins are its look-alikes).
  * leave one style out: the same, one writing style held out.

Prints one JSON object. About 3 minutes on 2 cores.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine

from guardrails_uq.answer_harm.data import benign_answer_texts, contrast_answers
from guardrails_uq.embeddings import default_embedder
from guardrails_uq.guidelines.calibration import Examples, HarmDetector, Request, leave_one_group_out
from guardrails_uq.guidelines.evaluate import calibration_rows
from guardrails_uq.guidelines.index import GuidelineIndex
from guardrails_uq.guidelines.library import GuidelineLibrary
from guardrails_uq.jsonsafe import dumps
from guardrails_uq.textnorm import read_as_model

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "policies" / "guidelines" / "safety.yaml"
REQUEST_ARTIFACT = ROOT / "policies" / "calibration" / "guidelines.json"


def _rates(flagged: np.ndarray, harmful: np.ndarray) -> dict[str, float | int | None]:
    return {
        "n_harmful": int(harmful.sum()),
        "n_benign": int((~harmful).sum()),
        "recall": float(flagged[harmful].mean()) if harmful.any() else None,
        "false_positive_rate": float(flagged[~harmful].mean()) if (~harmful).any() else None,
    }


def _strip(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "scored"}


def main() -> None:
    started = time.perf_counter()
    index = GuidelineIndex.open(GuidelineLibrary.load(LIBRARY), default_embedder())
    requests = calibration_rows()
    answers = contrast_answers()
    extra = benign_answer_texts()
    harmful = [Request(r["text"], r["source"].split(":")[0], r.get("weight", 1.0)) for r in requests["harmful"]]
    benign = [Request(r["text"], r["source"].split(":")[0], r.get("weight", 1.0)) for r in requests["benign"]]
    harmful += [Request(r["text"], "answers") for r in answers["harmful"]]
    benign += [Request(r["text"], "answers") for r in answers["benign"]]
    benign += [Request(r["text"], r["source"].split(":")[0]) for r in extra]
    examples = Examples.embed(index.embedder, harmful, benign)
    meta = {read_as_model(r["text"]).text: r for r in answers["harmful"] + answers["benign"]}
    extra_texts = {read_as_model(r["text"]).text: r["source"].split(":")[0] for r in extra}
    embedded = time.perf_counter() - started

    # 1. the shipped request artifact, applied to answers as the check scores them
    shipped = HarmDetector.load(REQUEST_ARTIFACT)
    shipped.check_compatible(index)
    scores = examples.scores(lambda v: shipped.predict_proba(index, v))
    flagged = scores > shipped.threshold_
    is_answer = np.array([t in meta for t in examples.texts])
    by_category: dict[str, dict] = {}
    for category in sorted({r["category"] for r in meta.values()}):
        rows = np.array([t in meta and meta[t]["category"] == category for t in examples.texts])
        by_category[category] = _rates(flagged[rows], examples.harmful[rows])
    other = {
        source: float(flagged[np.array([extra_texts.get(t) == source for t in examples.texts])].mean())
        for source in sorted(set(extra_texts.values()))
    }
    request_artifact = {
        "threshold": shipped.threshold_,
        "answers": _rates(flagged[is_answer], examples.harmful[is_answer]),
        "by_category": by_category,
        "benign_answer_texts_fpr": other,
    }

    # 2. calibrated on answers, held out by category and by style
    answer_rows = np.flatnonzero([t in meta or t in extra_texts for t in examples.texts])
    variants = {"answers_only": (examples.take(answer_rows), 25.0), "answers_and_requests": (examples, 100.0)}
    held: dict[str, dict] = {}
    for name, (data, l2) in variants.items():
        for key in ("category", "style"):
            groups = [meta[t][key] if t in meta else None for t in data.texts]
            report = leave_one_group_out(index, data, HarmDetector(target_fpr=0.05, l2=l2), groups)
            held[f"{name}_leave_one_{key}_out"] = _strip(report)
    print(
        dumps(
            {
                "machine": machine(),
                "n_answers": {"harmful": len(answers["harmful"]), "benign": len(answers["benign"])},
                "n_benign_answer_texts": len(extra),
                "embed_seconds": round(embedded, 1),
                "request_artifact_on_answers": request_artifact,
                **held,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
