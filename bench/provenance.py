"""Provenance index build and lookup.

For synthetic corpora of 1 MB, 100 MB and 1 GB (Zipf-distributed words from a 50,000-word vocabulary,
documents of ~300 words, made by this script), measures: index build throughput (MB/s of JSONL) and peak
memory (max RSS of the build process), then the lookup latency of a 256-token answer: novel text
(the common case) and text copied from the corpus (the span-reporting path). Baseline, in the same
process: Python's ``bytes.find`` of the answer's 8-token windows in the raw corpus text (a linear scan),
which shows what the suffix array saves as the corpus grows.
Targets: build >= 10 MB/s; lookup median < 5 ms at 1 GB, growing about with log(size).

    python bench/provenance.py [--sizes 1,100,1000] [--workdir DIR]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,100,1000", help="corpus sizes in MB")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    from guardrails_uq.provenance import CorpusIndex, find_spans

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-provenance-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    print(f"machine: {machine()}; workdir {work}")
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
