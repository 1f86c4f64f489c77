"""Conformal filtering cost per query, for 10 and 1,000 scored documents.

The shipped paths: ``keep_mask`` on the scores (the filtering itself) and ``ConformalCheck.run`` on a
Call (what a Guard pays: kept/dropped lists, evidence). Baseline in the same process: a plain
sort-and-cut (sort by score, keep the top 5), what a fixed top-k retriever post-processor does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import fmt_us, machine, median_seconds

from guardrails_uq.call import Call, ScoredDocument
from guardrails_uq.conformal import ConformalCalibrator, ConformalCheck, keep_mask


def main() -> None:
    rng = np.random.default_rng(0)
    calibrator = ConformalCalibrator(score_kind="similarity", fingerprint="bench")
    calibrator.scores_ = np.sort(-rng.uniform(0.2, 0.9, 500))
    calibrator.n_calibration_ = 500
    check = ConformalCheck(calibrator, alpha=0.1)
    print(f"machine: {machine()}")
    print(
        f"{'documents':>9} {'keep_mask':>12} {'check.run':>12} {'sort-and-cut':>13} {'ratio mask/sort':>16} {'ratio run/sort':>15}"
    )
    for n in (10, 1000):
        scores = rng.uniform(0, 1, n)
        documents = [ScoredDocument(id=f"d{i}", score=float(s)) for i, s in enumerate(scores)]
        call = Call(query="q", documents=documents)
        mask = median_seconds(lambda s=scores: keep_mask(s, check.threshold, "similarity", "similarity"))
        run = median_seconds(lambda c=call: check.run(c))
        cut = median_seconds(lambda d=documents: sorted(d, key=lambda x: -x.score)[:5])
        print(f"{n:>9} {fmt_us(mask):>12} {fmt_us(run):>12} {fmt_us(cut):>13} {mask / cut:>16.2f} {run / cut:>15.2f}")


if __name__ == "__main__":
    main()
