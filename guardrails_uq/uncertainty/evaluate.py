"""`eval uncertainty`: generate answers, label them, and score every uncertainty measure and deferral rule."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..call import Generation, TokenLogprob
from ..errors import InputError
from ..jsonl import read_jsonl
from ..metrics import auroc, deferral_auc, prr
from .claims import claims, worst_claim
from .deferral import PostHocDeferral
from .sample_scores import sample_scores
from .sar import leave_one_out, sar, token_relevance, token_sar
from .similarity import cosine_matrix
from .token_scores import token_scores

SYSTEM = "Answer the question with a short answer: a few words, no explanation."
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """SQuAD-style answer normalisation: lowercase, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def is_correct(answer: str, accepted: Sequence[str]) -> bool:
    """Correct when a normalised accepted answer equals, or occurs as whole words in, the normalised answer."""
    said = f" {normalize(answer)} "
    return any(normalize(a) and f" {normalize(a)} " in said for a in accepted)


def read_qa(path: str | Path) -> list[tuple[str, list[str]]]:
    """(question, accepted answers) from JSONL ``{"question", "answers": [...]}``."""
    rows = []
    for number, record in read_jsonl(path):
        answers = record.get("answers")
        if not isinstance(record.get("question"), str) or not isinstance(answers, list) or not answers:
            raise InputError('each line needs "question" and a non-empty "answers" list', source=str(path), line=number)
        rows.append((record["question"], [str(a) for a in answers]))
    return rows


def cross_fitted_defer_prob(
    answers: Sequence[Sequence[TokenLogprob]], correct: Sequence[bool], folds: int = 2, seed: int = 0
) -> np.ndarray:
    """Out-of-fold P(incorrect) from PostHocDeferral (each answer scored by a model that never saw it)."""
    order = np.random.default_rng(seed).permutation(len(answers))
    out = np.full(len(answers), np.nan)
    for fold in range(folds):
        test = order[fold::folds]
        train = np.setdiff1d(order, test)
        model = PostHocDeferral().fit([answers[i] for i in train], [correct[i] for i in train])
        out[test] = [model.predict(answers[i]) for i in test]
    return out


def _answer(
    messages: list[dict[str, str]],
    generate: Callable[[list[dict[str, str]]], Generation],
    sample: Callable[[list[dict[str, str]], int], list[Generation]] | None,
    answer_and_samples: Callable[[list[dict[str, str]], int], tuple[Generation, list[Generation]]] | None,
    n_samples: int,
) -> tuple[Generation, list[Generation]]:
    """The greedy answer and ``n_samples`` samples: one batched call when the model offers it."""
    if n_samples and answer_and_samples is not None:
        return answer_and_samples(messages, n_samples)
    answer = generate(messages)
    return answer, (sample(messages, n_samples) if n_samples and sample is not None else [])


def sar_scores(
    answer: Generation, samples: Sequence[Generation], embed: Callable[[list[str]], np.ndarray]
) -> dict[str, float]:
    """token_sar of the answer; with samples that carry logprobs, SAR over answer and samples (cosine as g).
    One embedder call for every leave-one-out variant and the texts."""
    generations = [answer, *(s for s in samples if s.tokens)] if samples else [answer]
    token_lists = [[t.token for t in g.tokens or []] for g in generations]
    batch = [text for tokens in token_lists for text in ("".join(tokens), *leave_one_out(tokens))]
    vectors = np.asarray(embed([*batch, *(g.text for g in generations)]), dtype=np.float64) if batch else None
    if vectors is None:
        return {}
    sars, at = [], 0
    for generation, tokens in zip(generations, token_lists, strict=True):
        relevance = token_relevance(vectors[at], vectors[at + 1 : at + 1 + len(tokens)])
        sars.append(token_sar(np.array([t.logprob for t in generation.tokens or []]), relevance))
        at += 1 + len(tokens)
    out = {"token_sar": sars[0]}
    if len(generations) >= 2:
        out["sar"] = sar(np.array(sars), cosine_matrix(vectors[at:]))
    return out


def question_scores(
    answer: Generation,
    samples: Sequence[Generation],
    embed: Callable[[list[str]], np.ndarray] | None,
    similarities: Sequence[str] = ("combined", "cosine"),
) -> dict[str, float]:
    """Every score of one answer: token scores, the worst claim, and with an embedder token_sar, then with
    samples the sample scores under each similarity (``<score>`` for the first, ``<score>_<similarity>``
    for the others), semantic_volume and SAR."""
    tokens = answer.tokens or []
    scores = token_scores(tokens)
    worst = worst_claim(claims([t.token for t in tokens], [t.logprob for t in tokens]))
    scores["worst_claim_nll"] = worst.mean_nll if worst else 0.0
    if embed is None:
        return scores
    scores.update(sar_scores(answer, samples, embed))
    if samples:
        texts = [answer.text, *(s.text for s in samples)]
        vectors = embed(texts)
        for i, kind in enumerate(similarities):
            found = sample_scores(vectors, texts=texts, similarity=kind)
            volume = found.pop("semantic_volume")
            scores.update({(name if i == 0 else f"{name}_{kind}"): value for name, value in found.items()})
            scores["semantic_volume"] = volume
    return scores


def evaluate(
    rows: Sequence[tuple[str, list[str]]],
    generate: Callable[[list[dict[str, str]]], Generation],
    *,
    sample: Callable[[list[dict[str, str]], int], list[Generation]] | None = None,
    answer_and_samples: Callable[[list[dict[str, str]], int], tuple[Generation, list[Generation]]] | None = None,
    n_samples: int = 0,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
    risk: dict[str, Any] | None = None,
    calls: list[dict[str, Any]] | None = None,
    splits: int = 50,
) -> dict[str, Any]:
    """Run the whole evaluation; returns the JSON report (see the CLI's --json).

    ``risk`` ({"score", "target_error", "delta"}) adds ``risk_control``: risk-controlled deferral over random
    splits. ``calls``, when given, receives one record per question in the form ``calibrate deferral
    --calls`` and ``deferral fit`` read ({"logprobs", "correct", "question", "answer"}). ``heldout_deferral``
    compares Chow-Sum, Post-Hoc-Quantile and the risk-controlled rule on the same held-out halves."""
    answers: list[list[TokenLogprob]] = []
    correct: list[bool] = []
    per_score: dict[str, list[float]] = {}
    for i, (question, accepted) in enumerate(rows):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        answer, samples = _answer(messages, generate, sample, answer_and_samples, n_samples)
        tokens = answer.tokens or []
        answers.append(tokens)
        correct.append(is_correct(answer.text, accepted))
        for name, value in question_scores(answer, samples, embed).items():
            per_score.setdefault(name, []).append(value)
        if calls is not None:
            calls.append(
                {
                    "question": question,
                    "answer": answer.text,
                    "correct": correct[-1],
                    "logprobs": {"content": [t.model_dump() for t in tokens]},
                }
            )
        if progress:
            progress(i + 1, len(rows))
    incorrect = [not c for c in correct]
    quality = np.asarray(correct, dtype=float)
    table = {
        name: {"auroc": auroc(v, incorrect), "prr": prr(v, quality), "prr_0.5": prr(v, quality, max_rejection=0.5)}
        for name, v in per_score.items()
        if len(v) == len(rows)
    }
    deferral: dict[str, Any] = {}
    rules = {
        "chow_sum": per_score["g_nll"],
        "chow_average": per_score["mean_nll"],
        "chow_quantile": per_score["nll_q90"],
    }
    learnable = 0 < sum(correct) < len(correct) - 1 and len(correct) >= 8
    if learnable:
        defer = cross_fitted_defer_prob(answers, correct)
        rules["post_hoc_quantile"] = defer.tolist()
        table["defer_prob"] = {
            "auroc": auroc(defer, incorrect),
            "prr": prr(defer, quality),
            "prr_0.5": prr(defer, quality, max_rejection=0.5),
        }
    for rule, values in rules.items():
        deferral[rule] = {"auc": deferral_auc(values, correct)}
    extra: dict[str, Any] = {}
    if risk is not None:
        from .risk import evaluate_risk_control

        chosen = rules.get("post_hoc_quantile") if risk["score"] == "defer_prob" else per_score.get(risk["score"])
        if chosen is None:
            raise InputError(f"risk control: no score {risk['score']!r} in this evaluation", source="--risk-score")
        extra["risk_control"] = {
            "score": risk["score"],
            **evaluate_risk_control(chosen, incorrect, target_error=risk["target_error"], delta=risk["delta"]),
        }
    if learnable and len(rows) >= 40 and splits:
        extra["heldout_deferral"] = heldout_deferral(answers, correct, per_score, splits=splits)
    return {
        **extra,
        "n": len(rows),
        "accuracy": float(np.mean(correct)),
        "scores": table,
        "deferral": deferral,
        "deferred_counted_as_correct": True,
        "note": "no large model configured: a deferred answer counts as correct (oracle large model)",
    }


#: Target errors swept to trace the risk-controlled rule's deferral curve.
RISK_TARGETS: tuple[float, ...] = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))


def risk_controlled_auc(
    calibration: np.ndarray,
    calibration_wrong: np.ndarray,
    test: np.ndarray,
    test_correct: np.ndarray,
    *,
    delta: float,
    targets: Sequence[float] = RISK_TARGETS,
) -> float:
    """Area under the deferral curve traced by the risk-controlled rule on the test answers: one operating
    point per target error (threshold certified on the calibration answers, applied to the test ones;
    an uncertified target defers everything), plus "allow all" at deferral 0; deferred answers count as
    correct (oracle large model), as in :func:`~guardrails_uq.metrics.deferral_auc`."""
    from .risk import calibrate_risk

    n = len(test)
    points = {(0.0, float(test_correct.mean()))}
    for target in targets:
        control = calibrate_risk(calibration, calibration_wrong, target_error=target, delta=delta, score="eval")
        allowed = test <= control.threshold
        points.add((float(1 - allowed.mean()), float((test_correct[allowed].sum() + (~allowed).sum()) / n)))
    points.add((1.0, 1.0))
    rates, accuracy = np.array(sorted(points)).T
    return float(np.sum((accuracy[1:] + accuracy[:-1]) / 2 * np.diff(rates)))


def heldout_deferral(
    answers: Sequence[Sequence[TokenLogprob]],
    correct: Sequence[bool],
    per_score: dict[str, list[float]],
    *,
    splits: int = 50,
    delta: float = 0.1,
    risk_scores: Sequence[str] = ("g_nll", "max_nll"),
    seed: int = 0,
) -> dict[str, Any]:
    """Deferral-curve areas on held-out halves, averaged over random splits: Chow-Sum (g_nll ranks the test
    half), Post-Hoc-Quantile (fitted on the other half), and the risk-controlled rule on each of
    ``risk_scores`` (thresholds certified on the other half at ``delta``; :func:`risk_controlled_auc`).
    Higher is better; the oracle and random orderings bound them."""
    rng = np.random.default_rng(seed)
    ok = np.asarray(correct, dtype=bool)
    areas: dict[str, list[float]] = {}
    n = len(ok)
    for _ in range(splits):
        order = rng.permutation(n)
        cal, test = order[: n // 2], order[n // 2 :]
        if ok[cal].all() or not ok[cal].any():
            continue
        g = np.asarray(per_score["g_nll"])
        areas.setdefault("chow_sum", []).append(deferral_auc(g[test], ok[test]))
        model = PostHocDeferral().fit([answers[i] for i in cal], ok[cal].tolist())
        learned = [model.predict(answers[i]) for i in test]
        areas.setdefault("post_hoc_quantile", []).append(deferral_auc(learned, ok[test]))
        for name in risk_scores:
            s = np.asarray(per_score[name])
            areas.setdefault(f"risk_controlled_{name}", []).append(
                risk_controlled_auc(s[cal], ~ok[cal], s[test], ok[test], delta=delta)
            )
        areas.setdefault("oracle", []).append(deferral_auc((~ok[test]).astype(float), ok[test]))
        areas.setdefault("random", []).append(float(ok[test].mean() + (1 - ok[test].mean()) / 2))
    return {
        "splits": len(areas.get("chow_sum", [])),
        "delta": delta,
        "auc": {rule: float(np.mean(values)) for rule, values in areas.items()},
    }


def write_trivia(path: str | Path) -> Path:
    """qa.jsonl from chatterbot-corpus trivia: question and its answer (the accepted answer)."""
    from .. import datasets

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [r for r in datasets.chatterbot(("trivia",))]
    path.write_text(
        "".join(json.dumps({"question": r["question"], "answers": [r["answer"]]}) + "\n" for r in rows),
        encoding="utf-8",
    )
    return path


def write_world_facts(path: str | Path) -> Path:
    """qa.jsonl of the world-facts set written for this project (guardrails_uq/data/world_facts.jsonl:
    161 short-answer questions on capitals, chemical symbols, authors and science, each with its accepted
    spellings), copied to ``path``."""
    source = Path(__file__).resolve().parent.parent / "data" / "world_facts.jsonl"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source.read_bytes())
    return path


#: Question sets ``uncertainty eval-data --set`` writes, by name.
QUESTION_SETS: dict[str, Callable[[str | Path], Path]] = {"trivia": write_trivia, "world-facts": write_world_facts}
