"""Provenance: calibrated threshold (held-out false-positive rate and detection), index build and lookup.

Calibration (first): on the AdvBench + HarmBench corpus of the demo, the threshold for a target false-positive
rate is calibrated on benign text (knowledge-base chunks, chatterbot answers, synthetic assistant answers of
family "a") and measured on sources never used for calibration: held-out family-"a" answers, family-"b"
answers (other lead-ins, tasks and frames), the Lee news corpus (benign documents), benign requests phrased
in AdvBench's frames ("req": hard negatives, as an answer repeating its request), answers SmolLM2 wrote to
benign requests phrased like AdvBench's (when cached), and for detection copies of corpus documents: quotes of
12-60 words from half the corpus, verbatim ("exact") or with 10% of words edited ("edited"), and every corpus
document of at least min_span tokens copied whole ("whole", those many documents share included). Before:
TraceShield's raw BCI at 20, and raw BCI at a calibrated threshold; after: the informative score (digits and
n-grams benign text shares with the corpus discounted, long spans in full) at a calibrated threshold, also
at min_span 6. The last line is the ceiling of any verbatim matcher at min_span 8: copies keeping a span.
Then the same with exchangeable data: random splits of all benign text into calibration and test.

Index (then): for synthetic corpora of 1 MB, 100 MB and 1 GB (Zipf-distributed words from a 50,000-word vocabulary,
documents of ~300 words, made by this script), measures: index build throughput (MB/s of JSONL) and peak
memory (max RSS of the build process), then the lookup latency of a 256-token answer: novel text
(the common case) and text copied from the corpus (the span-reporting path). Baseline, in the same
process: Python's ``bytes.find`` of the answer's 8-token windows in the raw corpus text (a linear scan),
which shows what the suffix array saves as the corpus grows.
Build: wall MB/s, MB per CPU-second (the builder and its tokenizing workers: "per core"), the builder's peak
RSS and bytes per token; the baseline is the same builder with pydivsufsort's suffix array (the previous one).
Targets (#16): >= 15 MB/s per core, <= 12 bytes per token; lookup of a copied answer <= 2 ms p50 at 1 GB.

    python bench/provenance.py [--sizes 1,100,1000] [--workdir DIR] [--skip-index | --skip-calibration]
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import child_pids, child_python, machine, peak_rss_mb, percentile_seconds, reported_peak_mb

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


@dataclass
class Build:
    """One index build in a fresh process: wall and CPU seconds (the builder and its tokenizing workers),
    peak RSS of the builder (its own VmHWM) and the largest worker peak seen, tokens indexed."""

    seconds: float
    cpu_seconds: float
    builder_mb: float
    worker_mb: float
    workers: int
    tokens: int


def build_in_subprocess(corpus: Path, out: Path, *, workers: int | None = None, baseline: bool = False) -> Build:
    """Build ``corpus`` into ``out`` in a fresh process (``baseline``: with the suffix array from pydivsufsort,
    the previous builder, instead of the SA-IS extension)."""
    shutil.rmtree(out, ignore_errors=True)  # a leftover index would be resumed, not rebuilt
    code = (
        "import time; from guardrails_uq.provenance import build_index, suffix\n"
        + ("suffix._sais = None\n" if baseline else "")
        + f"t = time.perf_counter(); r = build_index({str(corpus)!r}, {str(out)!r}, workers={workers!r})\n"
        + "print(time.perf_counter() - t, r.tokens)"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(child_python(code), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker_peaks: dict[int, float] = {}
    while process.poll() is None:
        for pid in child_pids(process.pid):
            worker_peaks[pid] = max(worker_peaks.get(pid, 0.0), peak_rss_mb(pid) or 0.0)
        time.sleep(0.05)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"build failed: {stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, tokens = stdout.split()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peaks = [v for v in worker_peaks.values() if v == v]
    return Build(float(seconds), cpu, reported_peak_mb(stderr), max(peaks, default=0.0), len(peaks), int(tokens))


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
    from guardrails_uq.provenance.match import find_spans
    from guardrails_uq.provenance.score import score_text
    from guardrails_uq.provenance.synthetic import assistant_answers, assistant_requests, copied_answers
    from guardrails_uq.provenance.tokenize import tokenize

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
        "lee": datasets.lee_corpus(),  # news documents: a benign source never used for calibration
        # hard negatives: benign requests in AdvBench's own frames, as an answer repeating the request reads
        "req": [request for _, request in assistant_requests()],
        **({"smollm2": smollm2} if smollm2 else {}),
    }
    shortest = 8  # the policy's min_span: a shorter document can never be a copied span
    whole = [d for d in documents if len(tokenize(d)) >= shortest]
    copies = {
        "exact": copied_answers(test_docs, 300, seed=13),
        "edited": copied_answers(test_docs, 300, seed=14, edit_rate=0.1),
        "whole": [f"Sure, here it is: {d}" for d in whole],  # every corpus document copied verbatim
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
    rows = (
        ("informative, calibrated", 0.0, 8),
        ("informative + templates, calibrated", 0.5, 8),
        ("same, min_span 6", 0.5, 6),
    )
    for name, fraction, min_span in rows:
        started = time.perf_counter()
        fitted = ProvenanceCalibration(target_fpr=target, template_fraction=fraction, min_span=min_span)
        fitted.fit(index, calibration_texts)
        elapsed = time.perf_counter() - started
        scores = {
            k: np.array([score_text(index, t, min_span=min_span, settings=fitted.settings_).score for t in v])
            for k, v in evaluated.items()
        }
        print(_row(name, fitted.threshold_, fitted.n_, _rates(scores, fitted.threshold_), elapsed))
    ceiling = {k: np.array([float(bool(find_spans(index, t))) for t in v]) for k, v in copies.items()}
    print(
        "copies with any span of >= 8 tokens (the most a verbatim matcher at min_span 8 can detect): "
        + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in ceiling.items())
    )
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
    sizes = [int(x) for x in args.sizes.split(",")]
    print("\nbuild (fresh process each; baseline = the same builder with pydivsufsort's suffix array, <= 100 MB):")
    print(
        f"{'corpus':>8} {'builder':>9} {'tokens':>8} {'wall s':>7} {'MB/s':>6} {'MB/cpu-s':>9} {'peak MB':>8} "
        f"{'B/token':>8} {'workers':>13}"
    )
    for size in sizes:
        corpus = work / f"corpus-{size}mb.jsonl"
        if not corpus.exists():
            make_corpus(corpus, size)
        megabytes = corpus.stat().st_size / 1e6
        kinds = [("SA-IS", False)] + ([("baseline", True)] if size <= 100 else [])
        results = {}
        for kind, baseline in kinds:
            out = work / (f"index-{size}mb" if not baseline else f"index-{size}mb-baseline")
            built = results[kind] = build_in_subprocess(corpus, out, baseline=baseline)
            print(
                f"{size:>6}MB {kind:>9} {built.tokens / 1e6:>7.1f}M {built.seconds:>7.1f} "
                f"{megabytes / built.seconds:>6.1f} {megabytes / built.cpu_seconds:>9.1f} {built.builder_mb:>8.0f} "
                f"{built.builder_mb * 1e6 / built.tokens:>8.1f} {built.workers:>3} x {built.worker_mb:>5.0f} MB"
            )
            if baseline:
                shutil.rmtree(out, ignore_errors=True)
        if "baseline" in results:
            new, old = results["SA-IS"], results["baseline"]
            print(
                f"{'':>8} SA-IS vs baseline: wall x{new.seconds / old.seconds:.2f}, "
                f"peak x{new.builder_mb / old.builder_mb:.2f}"
            )
    print(
        "\nlookup of a 256-token answer in this process (novel: random words; copied: 200 tokens of a corpus "
        "document + 56 new); baseline: bytes.find of the answer's 8-token windows in the raw corpus:"
    )
    print(
        f"{'corpus':>8} {'novel p50':>10} {'novel p99':>10} {'copied p50':>11} {'copied p99':>11} "
        f"{'scan p50':>10} {'scan/sa':>8} {'peak MB':>8}"
    )
    rows = []
    for size in sizes:
        corpus = work / f"corpus-{size}mb.jsonl"
        index = CorpusIndex.load(work / f"index-{size}mb", verify="size")
        novel, copied = answers(corpus, rng)
        n50, n99 = percentile_seconds(functools.partial(find_spans, index, novel), calls=200)
        c50, c99 = percentile_seconds(functools.partial(find_spans, index, copied), calls=200)
        assert find_spans(index, copied), "the copied answer must be found"
        raw = corpus.read_bytes()
        windows = [" ".join(novel.split()[i : i + 8]).encode() for i in range(0, 249, 31)]
        t0 = time.perf_counter()
        for w in windows:
            raw.find(w)
        scan = (time.perf_counter() - t0) / len(windows) * 249  # all 249 windows of the answer
        del raw
        rows.append((size, n50))
        print(
            f"{size:>6}MB {n50 * 1e3:>8.2f}ms {n99 * 1e3:>8.2f}ms {c50 * 1e3:>9.2f}ms {c99 * 1e3:>9.2f}ms "
            f"{scan * 1e3:>8.1f}ms {scan / n50:>8.0f} {peak_rss_mb():>8.0f}"
        )
    print("(peak MB: this process so far, the corpus read for the scan included; index pages are memory-mapped)")
    if len(rows) > 1:
        print(
            f"lookup growth {rows[0][0]} MB -> {rows[-1][0]} MB: x{rows[-1][1] / rows[0][1]:.2f} "
            f"(log2 size ratio x{np.log2(rows[-1][0] * 1e6) / np.log2(rows[0][0] * 1e6):.2f})"
        )


if __name__ == "__main__":
    main()
