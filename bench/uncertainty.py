"""Uncertainty: token scores on a 512-token answer, then the cost per answer of every score with SmolLM2.

Part 1. Every token-level score for a 512-token answer with 5 alternatives per token. Baseline in the same
process: the same scores written as plain Python loops over the tokens (one pass per score). Target:
< 200 µs for all scores (arrays built once).

Part 2. Cost per answer of each score, on short questions answered by the embedded SmolLM2 (greedy, at
most 24 tokens) and embedded with the packaged MiniLM: medians over the questions, each as a ratio to the
baseline measured in the same process, the greedy answer itself. Sample-based scores include drawing the
samples: the answer and N samples in one batched decoding loop, against the naive N extra generations.

Part 3. The sample similarity: AUROC for telling paraphrases from contradictions on the written pairs
(guardrails_uq/data/similarity_pairs.jsonl), embedding cosine against the combined similarity.

Each part ends with the peak RSS of the process while it ran (one process; its peak is reset between parts).
``--quick`` runs part 1 only (no model).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import fmt_mb, fmt_us, machine, median_seconds, peak_rss_mb, reset_peak_rss

from guardrails_uq.call import TokenLogprob, TopLogprob
from guardrails_uq.uncertainty.token_scores import arrays, scores_from_arrays, token_scores


def make_tokens(n: int = 512, k: int = 5, seed: int = 0) -> list[TokenLogprob]:
    rng = np.random.default_rng(seed)
    tokens = []
    for i in range(n):
        alts = np.sort(np.log(rng.dirichlet(np.ones(k))))[::-1]
        tokens.append(
            TokenLogprob(
                token=f"t{i}",
                logprob=float(alts[0]),
                top=[TopLogprob(token=f"a{j}", logprob=float(a)) for j, a in enumerate(alts)],
            )
        )
    return tokens


def python_scores(tokens: list[TokenLogprob]) -> dict[str, float]:
    nll = [-t.logprob for t in tokens]
    n = len(nll)
    entropies = []
    for t in tokens:
        probs = [math.exp(a.logprob) for a in t.top]
        total = sum(probs)
        entropies.append(-sum(p / total * math.log(p / total) for p in probs if p > 0))
    ordered = sorted(nll)
    return {
        "g_nll": sum(nll),
        "mean_nll": sum(nll) / n,
        "max_nll": max(nll),
        "perplexity": math.exp(sum(nll) / n),
        "one_minus_geo_prob": 1 - math.exp(-sum(nll) / n),
        "one_minus_mean_prob": 1 - sum(math.exp(-x) for x in nll) / n,
        "mean_entropy": sum(entropies) / n,
        "nll_q50": ordered[n // 2],
        "nll_q90": ordered[int(0.9 * (n - 1))],
    }


def token_bench() -> None:
    tokens = make_tokens()
    shipped = median_seconds(lambda: token_scores(tokens))
    conversion = median_seconds(lambda: arrays(tokens))
    logprobs, top = arrays(tokens)
    from_arrays = median_seconds(lambda: scores_from_arrays(logprobs, top))
    baseline = median_seconds(lambda: python_scores(tokens))
    print(f"machine: {machine()}")
    print(f"all token scores, 512 tokens x 5 alternatives   median {fmt_us(shipped)}   target < 200 µs")
    print(f"  scores from the arrays alone                   median {fmt_us(from_arrays)}")
    print(f"  building the arrays from TokenLogprob objects  median {fmt_us(conversion)}")
    print(
        f"  baseline: pure-Python loops (fewer scores)      median {fmt_us(baseline)}   ratio shipped/baseline {shipped / baseline:.2f}"
    )


QUESTIONS = (
    "What is the capital of France?",
    "Who wrote the play Hamlet?",
    "What is the chemical symbol for gold?",
    "Who was the 37th President of the United States?",
    "What year was President John F. Kennedy assassinated?",
    "What is the largest planet in the solar system?",
    "How many legs does a spider have?",
    "What was the name of the first artificial Earth satellite?",
)
SAMPLES = 5
MAX_TOKENS = 24
BASELINE = "baseline: greedy answer (SmolLM2)"
BATCHED = f"answer + {SAMPLES} samples, one batched loop"
SEQUENTIAL = f"answer + {SAMPLES} samples, sequential"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def question_costs(question: str, model: Any, embed: Any, deferral: Any) -> dict[str, float]:
    """Seconds each score (and each way of drawing samples) costs for one question's answer."""
    from guardrails_uq.uncertainty.claims import claims, worst_claim
    from guardrails_uq.uncertainty.evaluate import SYSTEM, sar_scores
    from guardrails_uq.uncertainty.sample_scores import sample_scores, semantic_volume
    from guardrails_uq.uncertainty.sar import embedder_relevance, token_sar

    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    out: dict[str, float] = {}
    out[BASELINE], answer = timed(lambda: model.generate(messages, max_tokens=MAX_TOKENS, top_logprobs=5))
    tokens = answer.tokens or []
    pieces, logprobs = [t.token for t in tokens], [t.logprob for t in tokens]
    out["token scores (all 15)"] = median_seconds(lambda: token_scores(tokens), repeat=3)
    out["worst_claim_nll (claims)"] = median_seconds(lambda: worst_claim(claims(pieces, logprobs)), repeat=3)
    out["defer_prob (Post-Hoc-Quantile)"] = median_seconds(lambda: deferral.predict(tokens), repeat=3)
    out["token_sar (T+1 embeddings)"] = timed(lambda: token_sar(np.array(logprobs), embedder_relevance(pieces, embed)))[
        0
    ]
    out[BATCHED], (first, samples) = timed(
        lambda: model.answer_and_samples(messages, SAMPLES, max_tokens=MAX_TOKENS, top_logprobs=5)
    )
    extra = timed(
        lambda: [
            model.generate(messages, max_tokens=MAX_TOKENS, temperature=1.0, seed=i, top_logprobs=0)
            for i in range(SAMPLES)
        ]
    )[0]
    out[SEQUENTIAL] = out[BASELINE] + extra
    texts = [first.text, *(g.text for g in samples)]
    out[f"embed answer + {SAMPLES} samples (MiniLM)"], vectors = timed(lambda: embed(texts))
    out["EigV/Deg/Ecc/NumSemSets (cosine), given embeddings"] = median_seconds(
        lambda: sample_scores(vectors, texts=texts, similarity="cosine"), repeat=3
    )
    out["EigV/Deg/Ecc/NumSemSets (combined), given embeddings"] = median_seconds(
        lambda: sample_scores(vectors, texts=texts, similarity="combined"), repeat=3
    )
    out["semantic_volume, given embeddings"] = median_seconds(lambda: semantic_volume(vectors), repeat=3)
    out[f"SAR (token relevance of all {SAMPLES + 1}, embeddings)"] = timed(lambda: sar_scores(first, samples, embed))[0]
    return out


def answer_costs() -> dict[str, list[float]]:
    """Seconds per answer for every score (and for drawing samples), one list entry per question."""
    from guardrails_uq.embeddings import default_embedder
    from guardrails_uq.models.local import default_model
    from guardrails_uq.uncertainty.deferral import PostHocDeferral

    model, embed = default_model().load(), default_embedder().embed
    embed(["warm up"])
    rng = np.random.default_rng(1)
    deferral = PostHocDeferral().fit(
        [make_tokens(int(rng.integers(3, 20)), seed=i) for i in range(40)], [bool(i % 2) for i in range(40)]
    )
    costs: dict[str, list[float]] = {}
    for question in QUESTIONS:
        for name, seconds in question_costs(question, model, embed, deferral).items():
            costs.setdefault(name, []).append(seconds)
    return costs


def cost_table(costs: dict[str, list[float]]) -> None:
    baseline = statistics.median(costs[BASELINE])
    print(f"\ncost per answer, {len(QUESTIONS)} questions, medians (ratio to the greedy answer in this process):")
    for name, values in costs.items():
        median = statistics.median(values)
        shown = f"{median * 1e3:10.3f} ms" if median >= 1e-3 else f"{median * 1e6:10.1f} µs"
        print(f"  {name:<54} {shown}   x{median / baseline:.4f}")
    batched, sequential = statistics.median(costs[BATCHED]), statistics.median(costs[SEQUENTIAL])
    print(f"  batched sampling is {sequential / batched:.1f}x faster than {SAMPLES} extra generations")


def similarity_table() -> None:
    from guardrails_uq.embeddings import default_embedder
    from guardrails_uq.uncertainty.similarity import pair_auroc

    path = Path(__file__).resolve().parent.parent / "guardrails_uq" / "data" / "similarity_pairs.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    embed = default_embedder().embed
    print(f"\nsample similarity, {len(rows)} written pairs (paraphrase vs contradiction), AUROC:")
    for kinds in (None, "negation", "entity", "number", "antonym"):
        chosen = [r for r in rows if kinds is None or r["kind"] in (kinds, "paraphrase")]
        pairs = [(r["a"], r["b"]) for r in chosen]
        label = [r["label"] == "paraphrase" for r in chosen]
        cosine, combined = (pair_auroc(pairs, label, embed, k) for k in ("cosine", "combined"))
        print(f"  {kinds or 'all':<10} ({len(chosen):>3} pairs)  cosine {cosine:.3f}   combined {combined:.3f}")


def main() -> None:
    token_bench()
    print(f"  peak RSS of this process (part 1): {fmt_mb(peak_rss_mb())}")
    if "--quick" in sys.argv:
        return
    reset_peak_rss()
    cost_table(answer_costs())
    print(f"  peak RSS while part 2 ran (SmolLM2 and MiniLM loaded in this process): {fmt_mb(peak_rss_mb())}")
    reset_peak_rss()
    similarity_table()
    print(f"  peak RSS while part 3 ran (same process, both models still loaded): {fmt_mb(peak_rss_mb())}")


if __name__ == "__main__":
    main()
