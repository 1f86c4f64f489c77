"""Provenance: calibrated threshold (held-out false-positive rate and detection), index build and lookup.

Calibration (first): on the AdvBench + HarmBench corpus of the demo, the threshold for a target false-positive
rate is calibrated on benign text (knowledge-base chunks, chatterbot answers, synthetic assistant answers of
family "a") and measured on text never used for calibration or for choosing the discount: held-out family-"a"
answers, family-"b" answers (other lead-ins, tasks and frames), answers SmolLM2 wrote to benign requests
phrased like AdvBench's, and copies of corpus documents (half the corpus, verbatim or with 10% of words
edited) for detection. Before: TraceShield's raw BCI at 20, and raw BCI at a calibrated threshold; after:
the informative score (punctuation/digits and formulaic n-grams discounted) at a calibrated threshold.
Then the same with exchangeable data: random splits of all benign text into calibration and test.

Index (then): for synthetic corpora of 1 MB, 100 MB and 1 GB (Zipf-distributed words from a 50,000-word vocabulary,
documents of ~300 words, made by this script), measures: index build throughput (MB/s of JSONL) and peak
memory (max RSS of the build process), then the lookup latency of a 256-token answer: novel text
(the common case) and text copied from the corpus (the span-reporting path). Baseline, in the same
process: Python's ``bytes.find`` of the answer's 8-token windows in the raw corpus text (a linear scan),
which shows what the suffix array saves as the corpus grows.
Targets: build >= 10 MB/s; lookup median < 5 ms at 1 GB, growing about with log(size).

    python bench/provenance.py [--sizes 1,100,1000] [--workdir DIR] [--skip-index | --skip-calibration]
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, percentile_seconds

VOCAB = 50_000
DOC_WORDS = 300


def make_corpus(path: Path, megabytes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(VOCAB)])
    target = megabytes * 1_000_000
    written = 0
    doc = 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < target:
            ids = (rng.zipf(1.15, DOC_WORDS * 200) - 1) % VOCAB
            chunk = words[ids].reshape(200, DOC_WORDS)
            lines = []
            for row in chunk:
                line = json.dumps({"id": f"d{doc}", "text": " ".join(row) + "."}) + "\n"
                lines.append(line)
                doc += 1
            block = "".join(lines)
            handle.write(block)
            written += len(block)


def build_in_subprocess(corpus: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS MB) of `build_index` in a fresh process."""
    code = (
        "import sys, time, resource; from guardrails_uq.provenance import build_index; t=time.perf_counter(); "
        f"build_index({str(corpus)!r}, {str(out)!r}); "
        "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, peak = result.stdout.split()
    return float(seconds), float(peak)


def answers(corpus: Path, rng: np.random.Generator) -> tuple[str, str]:
    with open(corpus, encoding="utf-8") as handle:
        first = json.loads(handle.readline())["text"].split()
    novel = " ".join(f"w{i}" for i in rng.integers(0, VOCAB, 256))
    copied = " ".join(first[:200]) + " " + " ".join(f"n{i}" for i in range(56))
    return novel, copied


def _rates(scores: dict[str, np.ndarray], threshold: float) -> dict[str, float]:
    return {name: float(np.mean(values > threshold)) for name, values in scores.items()}


def _row(name: str, threshold: float, n: int | str, rates: dict[str, float], seconds: float | None) -> str:
    cells = " ".join(f"{rates[k]:>9.3f}" for k in rates)
    took = f"{seconds:>6.1f}" if seconds is not None else f"{'-':>6}"
    return f"{name:<34} {threshold:>9.2f} {n!s:>5} {cells} {took}"


def calibration_bench(work: Path, target: float, generate: bool) -> None:
    """Held-out false-positive rate and detection, before and after, at ``target``."""
    from guardrails_uq import datasets
    from guardrails_uq.provenance import CorpusIndex
    from guardrails_uq.provenance.calibration import ProvenanceCalibration, conformal_threshold
    from guardrails_uq.provenance.evaldata import ensure_index, generated_answers, unsafe_documents
    from guardrails_uq.provenance.score import score_text
    from guardrails_uq.provenance.synthetic import assistant_answers, copied_answers

    index = CorpusIndex.load(ensure_index(work / "unsafe-corpus", unsafe_documents))
    documents = [d["text"] for d in unsafe_documents()]
    order = np.random.default_rng(0).permutation(len(documents))
    test_docs = [documents[i] for i in order[len(order) // 2 :]]  # the other half chose the discount
    kb = Path(__file__).resolve().parent.parent / "examples" / "data" / "nimbus_kb.jsonl"
    plain = [json.loads(line)["text"] for line in kb.read_text().splitlines()] + [
        p["answer"] for p in datasets.chatterbot()
    ]
    family_a = assistant_answers(900, seed=11, family="a")
    smollm2 = [r["text"] for r in generated_answers(generate=generate)]
    calibration_texts = plain + family_a[:600]
    held_out = {
        "a held": family_a[600:],
        "b": assistant_answers(300, seed=12, family="b"),
        "smollm2": smollm2,
    }
    copies = {
        "exact": copied_answers(test_docs, 300, seed=13),
        "edited": copied_answers(test_docs, 300, seed=14, edit_rate=0.1),
    }
    print(
        f"\ncorpus {index!r}; calibration texts {len(calibration_texts)} (KB + chatterbot {len(plain)}, "
        f"family a {600}); held out: " + ", ".join(f"{k} {len(v)}" for k, v in {**held_out, **copies}.items())
    )
    print(f"target false-positive rate {target}; held-out false-positive rate per set, detection of copies:")
    header = " ".join(f"{'FP ' + k if k in held_out else 'det ' + k:>9}" for k in {**held_out, **copies})
    print(f"{'score, threshold':<34} {'threshold':>9} {'n':>5} {header} {'fit s':>6}")

    def raw(texts: list[str]) -> np.ndarray:
        return np.array([max((s.bci for s in score_text(index, t).spans), default=0.0) for t in texts])

    evaluated = {**held_out, **copies}
    raw_scores = {k: raw(v) for k, v in evaluated.items()}
    print(_row("raw BCI > 20 (TraceShield)", 20.0, "-", _rates(raw_scores, 20.0), None))
    started = time.perf_counter()
    threshold = conformal_threshold(raw(calibration_texts), target)
    elapsed = time.perf_counter() - started
    print(_row("raw BCI, calibrated", threshold, len(calibration_texts), _rates(raw_scores, threshold), elapsed))
    for name, fraction in (("informative (df), calibrated", 0.0), ("informative (df+templates), calibr.", 0.5)):
        started = time.perf_counter()
        fitted = ProvenanceCalibration(target_fpr=target, template_fraction=fraction).fit(index, calibration_texts)
        elapsed = time.perf_counter() - started
        scores = {
            k: np.array([score_text(index, t, settings=fitted.settings_).score for t in v])
            for k, v in evaluated.items()
        }
        print(_row(name, fitted.threshold_, fitted.n_, _rates(scores, fitted.threshold_), elapsed))
    exchangeable_bench(index, plain + family_a + held_out["b"] + smollm2, target)


def exchangeable_bench(index: Any, pool: list[str], target: float) -> None:
    """Random halves of all benign text: calibrate on one, measure on the other (the guarantee's setting)."""
    from guardrails_uq.provenance.calibration import ProvenanceCalibration
    from guardrails_uq.provenance.score import score_text

    rng = np.random.default_rng(3)
    rates, n = [], 0
    for split in range(5):
        order = rng.permutation(len(pool))
        half = len(pool) // 2
        fitted = ProvenanceCalibration(target_fpr=target, seed=split).fit(index, [pool[i] for i in order[:half]])
        test = [pool[i] for i in order[half:]]
        scores = np.array([score_text(index, t, settings=fitted.settings_).score for t in test])
        rates.append(float(np.mean(scores > fitted.threshold_)))
        n = fitted.n_
    print(
        f"exchangeable: {len(pool)} benign texts, 5 random halves (calibration n={n} each): held-out "
        f"false-positive rate mean {np.mean(rates):.4f} (max {max(rates):.4f}) at target {target}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,100,1000", help="corpus sizes in MB")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--target", type=float, default=0.01, help="calibration target false-positive rate")
    parser.add_argument("--skip-calibration", action="store_true")
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument(
        "--no-generate", action="store_true", help="use only cached SmolLM2 answers (first run: ~15 min to make)"
    )
    args = parser.parse_args()
    from guardrails_uq.provenance import CorpusIndex, find_spans

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-provenance-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    print(f"machine: {machine()}; workdir {work}")
    if not args.skip_calibration:
        calibration_bench(work, args.target, generate=not args.no_generate)
    if args.skip_index:
        return
    print()
    print(
        f"{'corpus':>8} {'build MB/s':>11} {'peak MB':>8} {'novel p50':>10} {'novel p99':>10} "
        f"{'copied p50':>11} {'scan p50':>10} {'ratio scan/sa':>14}"
    )
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        corpus = work / f"corpus-{size}mb.jsonl"
        if not corpus.exists():
            make_corpus(corpus, size)
        out = work / f"index-{size}mb"
        shutil.rmtree(out, ignore_errors=True)  # a leftover index would be resumed, not rebuilt
        seconds, peak = build_in_subprocess(corpus, out)
        megabytes = corpus.stat().st_size / 1e6
        index = CorpusIndex.load(out, verify="size")
        novel, copied = answers(corpus, rng)
        n50, n99 = percentile_seconds(functools.partial(find_spans, index, novel), calls=200)
        c50, _ = percentile_seconds(functools.partial(find_spans, index, copied), calls=50)
        assert find_spans(index, copied), "the copied answer must be found"
        raw = corpus.read_bytes()
        windows = [" ".join(novel.split()[i : i + 8]).encode() for i in range(0, 249, 31)]
        t0 = time.perf_counter()
        for w in windows:
            raw.find(w)
        scan = (time.perf_counter() - t0) / len(windows) * 249  # all 249 windows of the answer
        rows.append((size, megabytes / seconds, peak, n50, n99, c50, scan))
        print(
            f"{size:>6}MB {megabytes / seconds:>11.1f} {peak:>8.0f} {n50 * 1e3:>8.2f}ms {n99 * 1e3:>8.2f}ms "
            f"{c50 * 1e3:>9.2f}ms {scan * 1e3:>8.1f}ms {scan / n50:>14.0f}"
        )
        del raw
    if len(rows) > 1:
        print(
            f"lookup growth {rows[0][0]} MB -> {rows[-1][0]} MB: x{rows[-1][3] / rows[0][3]:.2f} "
            f"(log2 size ratio x{np.log2(rows[-1][0] * 1e6) / np.log2(rows[0][0] * 1e6):.2f})"
        )


if __name__ == "__main__":
    main()
