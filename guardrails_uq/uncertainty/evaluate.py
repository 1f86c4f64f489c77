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
from .deferral import PostHocDeferral
from .sample_scores import sample_scores
from .token_scores import TOKEN_SCORE_NAMES, token_scores

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


def evaluate(
    rows: Sequence[tuple[str, list[str]]],
    generate: Callable[[list[dict[str, str]]], Generation],
    *,
    sample: Callable[[list[dict[str, str]], int], list[Generation]] | None = None,
    n_samples: int = 0,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
    risk: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the whole evaluation; returns the JSON report (see the CLI's --json). ``risk`` ({"score",
    "target_error", "delta"}) adds ``risk_control``: risk-controlled deferral over random splits."""
    answers: list[list[TokenLogprob]] = []
    correct: list[bool] = []
    scores: dict[str, list[float]] = {name: [] for name in TOKEN_SCORE_NAMES}
    sample_rows: dict[str, list[float]] = {}
    for i, (question, accepted) in enumerate(rows):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        generation = generate(messages)
        tokens = generation.tokens or []
        answers.append(tokens)
        correct.append(is_correct(generation.text, accepted))
        for name, value in token_scores(tokens).items():
            scores[name].append(value)
        if n_samples and sample is not None and embed is not None:
            texts = [generation.text] + [g.text for g in sample(messages, n_samples)]
            for name, value in sample_scores(embed(texts)).items():
                sample_rows.setdefault(name, []).append(value)
        if progress:
            progress(i + 1, len(rows))
    incorrect = [not c for c in correct]
    quality = np.asarray(correct, dtype=float)
    table = {}
    for name, values in {**scores, **sample_rows}.items():
        table[name] = {
            "auroc": auroc(values, incorrect),
            "prr": prr(values, quality),
            "prr_0.5": prr(values, quality, max_rejection=0.5),
        }
    deferral: dict[str, Any] = {}
    rules = {"chow_sum": scores["g_nll"], "chow_average": scores["mean_nll"], "chow_quantile": scores["nll_q90"]}
    if 0 < sum(correct) < len(correct) - 1 and len(correct) >= 8:
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

        chosen = rules.get("post_hoc_quantile") if risk["score"] == "defer_prob" else scores.get(risk["score"])
        if chosen is None:
            raise InputError(f"risk control: no score {risk['score']!r} in this evaluation", source="--risk-score")
        extra["risk_control"] = {
            "score": risk["score"],
            **evaluate_risk_control(chosen, incorrect, target_error=risk["target_error"], delta=risk["delta"]),
        }
    return {
        **extra,
        "n": len(rows),
        "accuracy": float(np.mean(correct)),
        "scores": table,
        "deferral": deferral,
        "deferred_counted_as_correct": True,
        "note": "no large model configured: a deferred answer counts as correct (oracle large model)",
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
