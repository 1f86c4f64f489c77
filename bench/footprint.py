"""Footprint: peak RSS of the demo guard with the torch and the ONNX MiniLM, and embedding latency torch vs ONNX.

Peak RSS (VmHWM, ``_common.peak_rss_mb``; never ``ru_maxrss``, which Linux carries over fork and exec, so a
child would report a larger parent's peak) of each configuration, each in a fresh subprocess that
loads the demo policy's Guard and runs the input phase only, or all four checks (input: guidelines;
retrieval: conformal filter of the Nimbus knowledge base scored with the same embedder; output:
provenance + uncertainty on an answer with token logprobs). Baseline: the same process with the
sentence-transformers (torch) MiniLM; the ONNX runs use the cached export, and one more run measures the
first use (export into an empty cache). Then, in one process: embedding latency medians of both backends
(one short query; the 64 guideline texts of the shipped library as one batch), their ratio, and the cosine
agreement of the two on the guideline texts and varied ones (long > 256 tokens, unicode, empty), and the peak
RSS of that process (both backends loaded).
Targets: all four checks under 300 MB; no torch in the ONNX process.

    python bench/footprint.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import fmt_mb, machine, median_seconds, peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "demo.yaml"
KB = ROOT / "examples" / "data" / "nimbus_kb.jsonl"
QUESTION = "How do I reset my password in Nimbus Notes?"
ANSWER = (
    "To reset your password, open the sign-in screen, choose Forgot password and follow the link we e-mail you. "
    "The link expires after 30 minutes."
)


def child(phases: str) -> None:
    """Runs in the measured subprocess: build the demo Guard, run the phases, print one JSON line."""
    started = time.perf_counter()
    from guardrails_uq import Generation, Guard, Message, ScoredDocument, TokenLogprob, TopLogprob
    from guardrails_uq.embeddings import default_embedder

    guard = Guard.from_policy(POLICY, audit=False)
    decisions = [guard.before([Message(role="user", content=QUESTION)])]
    if phases == "all":
        embedder = default_embedder()
        records = [json.loads(line) for line in KB.read_text(encoding="utf-8").splitlines() if line.strip()]
        scores = embedder.embed([r["text"] for r in records]) @ embedder.embed([QUESTION])[0]
        documents = [
            ScoredDocument(id=r["id"], text=r["text"], score=float(s)) for r, s in zip(records, scores, strict=True)
        ]
        decisions.append(guard.retrieve(QUESTION, documents, context=decisions[-1]))
        tokens = [
            TokenLogprob(token=word, logprob=-0.05 * (i % 7), top=[TopLogprob(token=word, logprob=-0.05 * (i % 7))])
            for i, word in enumerate(ANSWER.split())
        ]
        decisions.append(guard.after(Generation(text=ANSWER, tokens=tokens), context=decisions[-1]))
    errors = [e.error for d in decisions for e in d.errors]
    if errors:
        raise SystemExit(f"a check failed: {errors}")
    print(
        json.dumps(
            {
                "peak_mb": peak_rss_mb(),
                "torch": "torch" in sys.modules,
                "seconds": time.perf_counter() - started,
                "actions": [d.action.value for d in decisions],
            }
        )
    )


def run_child(backend: str, phases: str, cache: str | None = None) -> dict[str, Any]:
    env = {**os.environ, "GUARDRAILS_UQ_EMBEDDER": backend}
    if cache:
        env["GUARDRAILS_UQ_CACHE"] = cache
    result = subprocess.run(
        [sys.executable, __file__, "--child", phases], capture_output=True, text=True, env=env, cwd=ROOT
    )
    if result.returncode != 0:
        raise RuntimeError(f"{backend}/{phases} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def prepare() -> None:
    """Artifacts the demo policy needs (provenance index + calibration) and the ONNX export, outside the
    measured processes."""
    from guardrails_uq.onnx_embedder import ensure_onnx_model
    from guardrails_uq.provenance.evaldata import ensure_unsafe_index

    ensure_unsafe_index(ROOT / "policies" / "indexes" / "unsafe-corpus")
    ensure_onnx_model()


def footprint() -> None:
    print(f"{'configuration':<36} {'peak RSS':>9} {'vs torch':>9} {'torch?':>7} {'wall':>7}")
    rows = [("torch", "input"), ("onnx", "input"), ("torch", "all"), ("onnx", "all")]
    baseline: dict[str, float] = {}
    for backend, phases in rows:
        out = run_child(backend, phases)
        peak = float(out["peak_mb"])
        baseline.setdefault(phases, peak)
        label = f"{backend} MiniLM, {'input phase' if phases == 'input' else 'all four checks'}"
        print(
            f"{label:<36} {peak:>6.0f} MB {peak / baseline[phases]:>8.2f}x {out['torch']!s:>7} "
            f"{float(out['seconds']):>5.1f} s"
        )
    with tempfile.TemporaryDirectory() as empty:
        out = run_child("onnx", "input", cache=empty)
        peak = float(out["peak_mb"])
        print(
            f"{'onnx MiniLM, input, first use':<36} {peak:>6.0f} MB {peak / baseline['input']:>8.2f}x "
            f"{out['torch']!s:>7} {float(out['seconds']):>5.1f} s  (export into an empty cache)"
        )


def latency() -> None:
    import torch

    from guardrails_uq.embeddings import MiniLMEmbedder
    from guardrails_uq.guidelines.library import GuidelineLibrary

    library = [g.document for g in GuidelineLibrary.load(ROOT / "policies" / "guidelines" / "safety.yaml")]
    query = [QUESTION]
    onnx = MiniLMEmbedder(backend="onnx", threads=1)
    torch_default = MiniLMEmbedder(backend="torch")
    default_threads = torch.get_num_threads()
    varied = [QUESTION, "", "   ", "Ünïcödé — 日本語のテキスト, emoji 🚀, Ελληνικά", "word " * 600, ANSWER * 8, "a"]
    texts = varied + library
    agreement = np.sum(onnx.embed(texts) * torch_default.embed(texts), axis=1)
    print(f"\nembedding latency, median ({len(library)} guideline texts as one batch); ratio = torch / onnx")
    print(f"{'backend':<28} {'query':>9} {'ratio':>6} {'batch':>10} {'ratio':>6}")
    results = {}
    for label, embedder, threads in (
        ("onnx, 1 thread", onnx, None),
        (f"torch, {default_threads} threads (default)", torch_default, default_threads),
        ("torch, 1 thread", torch_default, 1),
    ):
        if threads is not None:
            torch.set_num_threads(threads)
        q = median_seconds(lambda e=embedder: e.embed(query), repeat=9)
        b = median_seconds(lambda e=embedder: e.embed(library), repeat=3, number=1)
        results[label] = (q, b)
        base_q, base_b = results["onnx, 1 thread"]
        print(f"{label:<28} {q * 1e3:>7.2f}ms {q / base_q:>6.2f} {b * 1e3:>8.1f}ms {b / base_b:>6.2f}")
    print(
        f"cosine(onnx, torch) over {len(texts)} texts (the guidelines; > 256 tokens, unicode, empty): "
        f"min {agreement.min():.7f}, median {np.median(agreement):.7f}"
    )
    print(f"peak RSS of this process (both backends, every latency row above): {fmt_mb(peak_rss_mb())}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    prepare()
    footprint()
    latency()


if __name__ == "__main__":
    main()
