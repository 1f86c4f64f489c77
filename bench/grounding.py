"""Grounding: quality on knowledge bases held out whole, and latency per answer.

Quality. Three knowledge bases with labelled answers (examples/data/grounding: the demo's Nimbus Notes, Python's
language reference, GNU coreutils man pages; supported / contradicted / unsupported, written by hand and by
the embedded SmolLM2). For each knowledge base K, two ways of fitting, neither of which sees K's answers:
  * own corpus: `calibrate grounding --corpus K` (synthetic claims from K's chunks only);
  * own corpus, calibrated with the other KBs' answers: the same scorer, with the labelled answers of the
    *other* knowledge bases in the calibration set (`--answers`; they are never fitted on).
Then `eval grounding` on K's answers: AUROC (supported vs the rest, score 1 - grounding.support), balanced
accuracy and flagged rate per label at the calibrated threshold (target false-positive rate 0.05 and 0.10).
Baselines on the same answers: cosine(answer, context) and the fraction of the answer's content words found
in the context. CCP (claim-conditioned probability from the model's token alternatives, grouped by the
grounding scorer) on the model-written answers that carry logprobs: AUROC alone and combined.

Latency. `GroundingCheck.run` on an answer of 5 claims against 10 kept chunks, one thread, median of 300
calls: cold (new chunks every call: their sentences are embedded) and warm (knowledge-base sentences cached,
the usual case), as a ratio against one embedder call on the answer. Whether torch was imported. Peak RSS.

    python bench/grounding.py [--quick]      # --quick: the leave-one-KB-out rows only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import fmt_mb, machine, peak_rss_mb, percentile_seconds

from guardrails_uq.call import Call, Generation, Message, ScoredDocument, TokenLogprob
from guardrails_uq.embeddings import default_embedder
from guardrails_uq.grounding import GroundingCalibration, read_answers, read_chunks
from guardrails_uq.grounding.align import content_words
from guardrails_uq.grounding.check import GroundingCheck
from guardrails_uq.grounding.evaluate import evaluate_answers
from guardrails_uq.metrics import auroc

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"
KBS = {
    "nimbus": DATA / "nimbus_kb.jsonl",
    "pylang": DATA / "grounding" / "pylang_kb.jsonl",
    "coreutils": DATA / "grounding" / "coreutils_kb.jsonl",
}


def answers_of(kb: str):
    return read_answers(DATA / "grounding" / f"{kb}_answers.jsonl")


def baselines(embedder, answers) -> dict[str, float]:
    y = np.array([a.label != "supported" for a in answers])
    vectors = embedder.embed([a.answer for a in answers])
    contexts = embedder.embed([" ".join(a.context) for a in answers])
    cosine = np.sum(vectors * contexts, axis=1)
    coverage = []
    for a in answers:
        words = set(content_words(a.answer))
        context = set(content_words(" ".join(a.context)))
        coverage.append(len(words & context) / len(words) if words else 1.0)
    return {"cosine": auroc(-cosine, y), "coverage": auroc(-np.array(coverage), y)}


def row(name: str, report: dict) -> str:
    rates = report["flagged_rate"]
    return (
        f"| {name} | {report['n']} | {report['auroc']:.3f} | {report['balanced_accuracy']:.3f} | "
        f"{report['threshold']:.3f} | {rates['supported']:.2f} | {rates['contradicted']:.2f} | "
        f"{rates['unsupported']:.2f} |"
    )


def quality(embedder, quick: bool) -> None:
    print("\n### Held out: each knowledge base's answers, never fitted on\n")
    print(
        "| knowledge base, fitting | n | AUROC | balanced acc. | threshold | flagged supported | flagged contradicted | flagged unsupported |"
    )
    print("|---|---|---|---|---|---|---|---|")
    pooled: dict[str, list] = {}
    for kb, corpus in KBS.items():
        chunks = read_chunks(corpus)
        answers = answers_of(kb)
        others = [a for other in KBS if other != kb for a in answers_of(other)]
        label = "own corpus, calibrated with the other KBs' answers"
        setups = [(label, others)] if quick else [("own corpus only", []), (label, others)]
        for setup, extra in setups:
            started = time.perf_counter()
            calibration = GroundingCalibration(target_fpr=0.05).fit(chunks, embedder, answers=extra)
            seconds = time.perf_counter() - started
            for target in (0.05, 0.10):
                check = GroundingCheck(calibration.scorer(embedder), calibration.threshold(target))
                report = evaluate_answers(check, answers)
                pooled.setdefault(f"{setup}, target {target}", []).append(report)
                print(row(f"{kb}, {setup}, target {target} (fit {seconds:.0f} s)", report))
        base = baselines(embedder, answers)
        print(
            f"| {kb}, baselines: cosine(answer, context) AUROC {base['cosine']:.3f}; content-word coverage AUROC {base['coverage']:.3f} | | | | | | | |"
        )
    print("\nPooled over the three knowledge bases (answers weighted equally):\n")
    for name, reports in pooled.items():
        n = sum(r["n"] for r in reports)
        mean = {k: sum(r["flagged_rate"][k] * r["n"] for r in reports) / n for k in reports[0]["flagged_rate"]}
        aurocs = ", ".join(f"{r['auroc']:.3f}" for r in reports)
        print(
            f"- {name}: AUROC per KB {aurocs}; flagged supported {mean['supported']:.3f}, contradicted "
            f"{mean['contradicted']:.3f}, unsupported {mean['unsupported']:.3f} (n={n})"
        )


def ccp(embedder) -> None:
    """CCP on the model-written answers that carry token logprobs with alternatives."""
    from guardrails_uq.grounding.ccp import answer_ccp_uncertainty

    rows = []
    for kb, corpus in KBS.items():
        others = [a for other in KBS if other != kb for a in answers_of(other)]
        calibration = GroundingCalibration(target_fpr=0.05).fit(read_chunks(corpus), embedder, answers=others)
        scorer = calibration.scorer(embedder)
        check = GroundingCheck(scorer, calibration.threshold(0.05))
        for line in (DATA / "grounding" / f"{kb}_answers.jsonl").read_text().splitlines():
            record = json.loads(line)
            if not record.get("tokens"):
                continue
            tokens = [TokenLogprob.model_validate(t) for t in record["tokens"]]
            answer = next(
                a for a in answers_of(kb) if a.answer == record["answer"] and a.question == record["question"]
            )
            values = check.run(
                Call(
                    messages=[Message(role="user", content=answer.question)],
                    documents=[ScoredDocument(id=i, text=t, score=1.0) for i, t in answer.documents],
                    generation=Generation(text=answer.answer),
                )
            ).values
            support = values["grounding.support"]
            rows.append(
                (
                    answer.label != "supported",
                    1 - (support if support is not None else 1.0),
                    answer_ccp_uncertainty(tokens, scorer),
                )
            )
    print("\n### CCP on model-written answers with token alternatives\n")
    if len(rows) < 6 or len({r[0] for r in rows}) < 2:
        print(f"too few model answers with logprobs and both labels ({len(rows)}): not measured")
        return
    y = np.array([r[0] for r in rows])
    g = np.array([r[1] for r in rows])
    c = np.array([r[2] for r in rows])
    ranks = lambda v: np.argsort(np.argsort(v)) / max(len(v) - 1, 1)  # noqa: E731
    print(
        f"n={len(rows)} ({int(y.sum())} not supported): grounding AUROC {auroc(g, y):.3f}; CCP alone {auroc(c, y):.3f}; "
        f"mean of ranks {auroc(ranks(g) + ranks(c), y):.3f}; max {auroc(np.maximum(g, c), y):.3f}"
    )


def latency(embedder) -> None:
    calibration = GroundingCalibration.load(ROOT / "policies" / "calibration" / "grounding.json")
    check = GroundingCheck(calibration.scorer(embedder), calibration.threshold(0.05))
    chunks = read_chunks(KBS["nimbus"])[:10]
    documents = [ScoredDocument(id=i, text=t, score=0.8) for i, t in chunks]
    answer = (
        "Nimbus syncs your notes every 30 seconds. Offline mode keeps 500 notes. You can export notebooks as PDF "
        "from Settings > Export. Imports keep tags and creation dates. Password reset links expire after 30 minutes."
    )
    call = Call(
        messages=[Message(role="user", content="Tell me about Nimbus.")],
        documents=documents,
        generation=Generation(text=answer),
    )
    counter = [0]

    def cold() -> None:
        counter[0] += 1
        fresh = [d.model_copy(update={"text": f"{d.text} (rev {counter[0]})"}) for d in documents]
        text = answer.replace("30 minutes", f"{counter[0] % 997 + 2} minutes")
        check.run(call.model_copy(update={"documents": fresh, "generation": Generation(text=text)}))

    embed_p50, _ = percentile_seconds(lambda: embedder.embed([answer]), calls=300)

    def warm() -> None:  # a new answer every call (its claims are embedded), knowledge-base sentences cached
        counter[0] += 1
        text = answer.replace("30 minutes", f"{counter[0] % 997 + 2} minutes")
        check.run(call.model_copy(update={"generation": Generation(text=text)}))

    warm_p50, warm_p99 = percentile_seconds(warm, calls=300)
    cold_p50, cold_p99 = percentile_seconds(cold, calls=100)
    print("\n### Latency: 5 claims against 10 kept chunks, one thread\n")
    print("| configuration | p50 | p99 | ratio to one embedder call |")
    print("|---|---|---|---|")
    print(f"| one embedder call on the answer (baseline) | {embed_p50 * 1e3:.2f} ms | | 1.00 |")
    print(
        f"| grounding check, new answer, knowledge-base sentences cached (usual) | {warm_p50 * 1e3:.2f} ms | {warm_p99 * 1e3:.2f} ms | {warm_p50 / embed_p50:.2f} |"
    )
    print(
        f"| grounding check, new answer and new chunks every call | {cold_p50 * 1e3:.2f} ms | {cold_p99 * 1e3:.2f} ms | {cold_p50 / embed_p50:.2f} |"
    )
    print(f"\ntorch imported: {'torch' in sys.modules}; peak RSS of this process: {fmt_mb(peak_rss_mb())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("quality", "ccp", "latency"), default=None)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    embedder = default_embedder()
    if args.only in (None, "latency"):
        latency(embedder)
    if args.only in (None, "quality"):
        quality(embedder, args.quick)
    if args.only in (None, "ccp"):
        ccp(embedder)


if __name__ == "__main__":
    main()
