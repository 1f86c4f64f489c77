"""Provenance at scale: measured per-shard figures (build, memory, disk, lookup) and the Ray path against the local one.

The inputs of docs/provenance-at-scale.md (the plan for a 1 TB corpus). For one shard of ~100 MB and ~1 GB of
synthetic JSONL (bench/provenance.py's Zipf corpus), built by the local ``build_index`` on one core
(``workers=0``) in a fresh process: build seconds and MB/s, peak RSS of that process (VmHWM), bytes on disk
per token, and the lookup latency of a 256-token answer against that one shard (median of novel and copied
answers; "cold": after the shard's pages were dropped from the page cache with posix_fadvise, the VM's disk
may still cache them), and the memory of a Ray actor serving it. Then, on a local Ray cluster with this
machine's cores and the 100 MB corpus: ``build_index_ray`` against ``build_index`` with as many worker
processes (wall time, ratio), a Ray worker SIGKILLed while it builds a shard (the task is retried; the index
must come out identical), and ``RayCorpusIndex`` lookups against in-process ``find_spans`` on the same index.

    python bench/provenance_scale.py [--sizes 100,1000] [--workdir DIR] [--ray-shard-mb 25]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import child_python, machine, percentile_seconds, reported_peak_mb
from provenance import answers, make_corpus


def build_in_child(corpus: Path, out: Path, workers: int) -> tuple[float, float]:
    """(seconds, peak RSS MB from VmHWM) of the local ``build_index`` in a fresh process, one shard."""
    code = (
        "import time; from guardrails_uq.provenance import build_index\n"
        "from guardrails_uq.provenance.suffix import MAX_TOKENS\n"
        "t = time.perf_counter()\n"
        f"build_index({str(corpus)!r}, {str(out)!r}, workers={workers}, shard_tokens=MAX_TOKENS // 2)\n"
        "print(time.perf_counter() - t)"
    )
    result = subprocess.run(child_python(code), capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1]), reported_peak_mb(result.stderr)


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def evict(folder: Path) -> None:
    """Drop ``folder``'s files from the page cache (clean pages only; no root needed)."""
    for path in folder.rglob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cold_p50(folder: Path, text: str, calls: int = 15) -> float:
    """Median lookup of ``text`` right after ``folder``'s pages were dropped from the page cache and the index
    was loaded again (nothing else may map it: mapped pages are not dropped)."""
    from guardrails_uq.provenance import CorpusIndex, find_spans

    samples = []
    for _ in range(calls):
        evict(folder)
        index = CorpusIndex.load(folder, verify="size")
        t0 = time.perf_counter()
        find_spans(index, text)
        samples.append(time.perf_counter() - t0)
        del index
    return statistics.median(samples)


def vocabulary_bytes_per_token(n: int = 1_000_000) -> float:
    """Driver memory per distinct token of build_index_ray's merge (sorted list + token -> id dict), measured
    on ``n`` tokens of 3-12 characters."""
    rng = np.random.default_rng(0)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)
    words = {letters[rng.integers(0, 36, rng.integers(3, 13))].tobytes().decode() for _ in range(n)}
    tracemalloc.start()
    vocabulary = sorted(words)
    ids = {word: i + 1 for i, word in enumerate(vocabulary)}
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (current + sum(sys.getsizeof(w) for w in vocabulary)) / len(ids)


def worker_peaks(ray: Any, count: int) -> list[float]:
    """VmHWM (MB) of the Ray workers that ran the build: ``count`` probe tasks that overlap run one each."""

    def probe() -> tuple[int, float]:
        time.sleep(0.5)
        with open("/proc/self/status") as status:
            peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        return os.getpid(), peak / 1024

    remote = ray.remote(num_cpus=1)(probe)
    return [peak for _, peak in dict(ray.get([remote.remote() for _ in range(count)])).items()]


def kill_one_shard_build(ray_build: Any, corpus: Path, out: Path, shard_bytes: int) -> tuple[bool, Any]:
    """Run ``ray_build`` and SIGKILL the first Ray worker seen building a shard (a process this bench started).
    Returns (a worker was killed, the build's report)."""
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(report=ray_build(corpus, out, shard_bytes=shard_bytes)))
    thread.start()
    killed = False
    while thread.is_alive() and not killed:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    title = handle.read()
            except OSError:
                continue
            if title.startswith(b"ray::_build_shard"):
                time.sleep(0.5)  # mid-task
                os.kill(int(pid), signal.SIGKILL)
                killed = True
                break
        time.sleep(0.02)
    thread.join()
    return killed, result.get("report")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1000", help="one-shard corpus sizes in MB")
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the corpora between runs")
    parser.add_argument("--ray-shard-mb", type=int, default=25, help="shard_bytes of the Ray build of 100 MB")
    args = parser.parse_args()
    from guardrails_uq.provenance import CorpusIndex, find_spans

    temporary = args.workdir is None
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-provenance-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    cores = os.cpu_count() or 1
    print(f"machine: {machine()}; workdir {work}")
    try:
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
        print(f"local Ray cluster: {cores} CPUs, started in {time.perf_counter() - started:.1f} s (not counted below)")
        from guardrails_uq.provenance.distributed import RayCorpusIndex, ShardLookup, build_index_ray

        print("\none shard, local build_index on one core (workers=0), lookups of a 256-token answer in-process:")
        print(
            f"{'text':>7} {'tokens':>7} {'build s':>8} {'MB/s':>5} {'peak RSS':>9} {'B/token':>8} {'disk/text':>9} "
            f"{'novel p50':>10} {'copied p50':>11} {'cold novel':>11} {'cold copied':>12} {'actor RSS':>10}"
        )
        for size in [int(s) for s in args.sizes.split(",")]:
            corpus = work / f"corpus-{size}mb.jsonl"
            if not corpus.exists():
                make_corpus(corpus, size)
            out = work / f"scale-{size}mb"
            shutil.rmtree(out, ignore_errors=True)
            seconds, peak = build_in_child(corpus, out, workers=0)
            text_mb = corpus.stat().st_size / 1e6
            disk = disk_bytes(out)
            novel, copied = answers(corpus, rng)
            cold_n, cold_c = cold_p50(out, novel), cold_p50(out, copied)
            index = CorpusIndex.load(out, verify="size")
            assert len(index.shards) == 1
            n50, _ = percentile_seconds(functools.partial(find_spans, index, novel), calls=200)
            c50, _ = percentile_seconds(functools.partial(find_spans, index, copied), calls=50)
            bare = ray.remote(ShardLookup).remote(str(out), [], "size")  # vocabulary and counts, no shard
            baseline = ray.get(bare.memory.remote())
            ray.kill(bare)
            with RayCorpusIndex(out, actors=1, verify="size") as served:
                for _ in range(50):
                    served.find_spans(novel)
                    served.find_spans(copied)
                actor = served.memory()[0]
            print(
                f"{text_mb:>5.0f}MB {index.total / 1e6:>6.1f}M {seconds:>8.1f} {text_mb / seconds:>5.1f} "
                f"{peak:>6.0f} MB {disk / index.total:>8.2f} {disk / corpus.stat().st_size:>9.2f} "
                f"{n50 * 1e3:>8.2f}ms {c50 * 1e3:>9.2f}ms {cold_n * 1e3:>9.2f}ms {cold_c * 1e3:>10.2f}ms "
                f"{actor['VmRSS']:>7.0f} MB"
            )
            print(
                f"        ({index.total / corpus.stat().st_size:.3f} tokens per byte of JSONL; "
                f"{peak * 1e6 / index.total:.1f} bytes of peak RSS per token; actor after 100 lookups: anonymous "
                f"{actor.get('RssAnon', float('nan')):.0f} MB, file-backed {actor.get('RssFile', float('nan')):.0f} MB; "
                f"an actor with no shard: {baseline['VmRSS']:.0f} MB)"
            )
            del index
            if size != 100:
                shutil.rmtree(out, ignore_errors=True)
        print(f"driver vocabulary merge: {vocabulary_bytes_per_token():.0f} bytes per distinct token (list + dict)")

        corpus = work / "corpus-100mb.jsonl"
        if not corpus.exists():
            make_corpus(corpus, 100)
        shard_bytes = args.ray_shard_mb * 1_000_000
        print(f"\nRay path, 100 MB corpus, {cores} CPUs: build wall time (medians of 3)")
        local_times = []
        for _ in range(3):
            shutil.rmtree(work / "local-100mb", ignore_errors=True)
            local_times.append(build_in_child(corpus, work / "local-100mb", workers=cores)[0])
        ray_reports = []
        for _ in range(3):
            shutil.rmtree(work / "ray-100mb", ignore_errors=True)
            ray_reports.append(build_index_ray(corpus, work / "ray-100mb", shard_bytes=shard_bytes))
        peaks = worker_peaks(ray, cores)
        local_s = statistics.median(local_times)
        ray_s = statistics.median(r.seconds for r in ray_reports)
        report = ray_reports[-1]
        print(f"  build_index(workers={cores}), 1 shard:             {local_s:6.1f} s  {100 / local_s:5.1f} MB/s")
        print(
            f"  build_index_ray(shard_bytes={args.ray_shard_mb} MB), {report.shards} shards: "
            f"{ray_s:6.1f} s  {100 / ray_s:5.1f} MB/s  (pass 1 {statistics.median(r.pass1_seconds for r in ray_reports):.1f} s, "
            f"pass 2 {statistics.median(r.pass2_seconds for r in ray_reports):.1f} s)"
        )
        print(
            f"  ratio ray / local: {ray_s / local_s:.2f}; peak RSS of the Ray workers: {', '.join(f'{p:.0f} MB' for p in peaks)}"
        )
        started = time.perf_counter()
        again = build_index_ray(corpus, work / "ray-100mb", shard_bytes=shard_bytes)
        print(
            f"  re-run on the finished index: {time.perf_counter() - started:.1f} s, "
            f"{again.resumed_shards}/{again.shards} shards reused (pass 1 again + checksums)"
        )
        killed_out = work / "ray-100mb-killed"
        shutil.rmtree(killed_out, ignore_errors=True)
        killed, killed_report = kill_one_shard_build(build_index_ray, corpus, killed_out, shard_bytes)
        same = (
            json.loads((killed_out / "manifest.json").read_text())["shards"]
            == json.loads((work / "ray-100mb" / "manifest.json").read_text())["shards"]
        )
        print(
            f"  a worker SIGKILLed mid-shard: killed {killed}, build finished in {killed_report.seconds:.1f} s, "
            f"shards identical to the undisturbed build: {same}"
        )

        print(f"\nRay lookup, the {report.shards}-shard index of 100 MB: 256-token answers, medians")
        whole = CorpusIndex.load(work / "ray-100mb", verify="size")
        one = CorpusIndex.load(work / "scale-100mb", verify="size")
        novel, copied = answers(corpus, rng)
        batch = [answers(corpus, rng)[0] for _ in range(64)]
        local_n, _ = percentile_seconds(functools.partial(find_spans, whole, novel), calls=200)
        local_c, _ = percentile_seconds(functools.partial(find_spans, whole, copied), calls=50)
        one_n, _ = percentile_seconds(functools.partial(find_spans, one, novel), calls=200)
        local_b = percentile_seconds(lambda: [find_spans(whole, t) for t in batch], calls=5)[0] / len(batch)
        rows = [
            ("in-process find_spans, same 100 MB as 1 shard", one_n, None, None),
            (f"in-process find_spans, {report.shards} shards", local_n, local_c, local_b),
        ]
        for actors in sorted({1, cores}):
            with RayCorpusIndex(work / "ray-100mb", actors=actors, verify="size") as served:
                assert served.find_spans(copied) == find_spans(whole, copied)
                ray_n, _ = percentile_seconds(functools.partial(served.find_spans, novel), calls=200)
                ray_c, _ = percentile_seconds(functools.partial(served.find_spans, copied), calls=50)
                ray_b = percentile_seconds(functools.partial(served.find_spans_batch, batch), calls=5)[0] / len(batch)
            rows.append((f"RayCorpusIndex, {actors} actor(s)", ray_n, ray_c, ray_b))
        print(f"  {'':<48} {'novel p50':>10} {'copied p50':>11} {'batch of 64, per answer':>24}")
        for name, n, c, b in rows:
            cells = [f"{n * 1e3:>8.2f}ms"]
            cells.append(f"{c * 1e3:>9.2f}ms" if c is not None else f"{'-':>11}")
            cells.append(f"{b * 1e3:>22.3f}ms" if b is not None else f"{'-':>24}")
            print(f"  {name:<48} {' '.join(cells)}")
        print(
            f"  ratio Ray ({cores} actors) / in-process, novel: {rows[-1][1] / local_n:.2f}; copied: "
            f"{rows[-1][2] / local_c:.2f}; batch per answer: {rows[-1][3] / local_b:.2f}"
        )
    finally:
        try:
            import ray

            ray.shutdown()
        except ImportError:
            pass
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
