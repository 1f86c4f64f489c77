"""Uncertainty: every score's formula and direction, sample scores, metrics, learned deferral, the check,
and escalation (cascades) through a real local OpenAI-compatible server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from guardrails_uq import (
    Action,
    ArtifactError,
    Generation,
    Guard,
    Message,
    NotFittedError,
    TokenLogprob,
    TopLogprob,
    loads_policy,
)
from guardrails_uq.call import Call
from guardrails_uq.cli import main
from guardrails_uq.metrics import auroc, deferral_auc, deferral_curve, prr
from guardrails_uq.testing import ChatCompletionsServer, ScriptedReply, assert_conforms
from guardrails_uq.uncertainty import TOKEN_SCORE_NAMES, PostHocDeferral, UncertaintyCheck, sample_scores, token_scores
from guardrails_uq.uncertainty.spec import SPEC


def tokens(logprobs: list[float], alternatives: list[list[float]] | None = None) -> list[TokenLogprob]:
    alternatives = alternatives or [[lp] for lp in logprobs]
    return [
        TokenLogprob(token=f"t{i}", logprob=lp, top=[TopLogprob(token=f"a{j}", logprob=a) for j, a in enumerate(alts)])
        for i, (lp, alts) in enumerate(zip(logprobs, alternatives, strict=True))
    ]


def test_formulas_on_hand_computed_values() -> None:
    scores = token_scores(tokens([-0.1, -2.0, -0.5, -1.0]))
    assert scores["g_nll"] == pytest.approx(3.6)
    assert scores["mean_nll"] == pytest.approx(0.9)
    assert scores["max_nll"] == pytest.approx(2.0)
    assert scores["perplexity"] == pytest.approx(math.exp(0.9))
    assert scores["one_minus_geo_prob"] == pytest.approx(1 - math.exp(-0.9))
    assert scores["one_minus_mean_prob"] == pytest.approx(1 - np.mean(np.exp([-0.1, -2.0, -0.5, -1.0])))
    assert scores["nll_q50"] == pytest.approx(np.median([0.1, 2.0, 0.5, 1.0]))
    assert scores["nll_q00"] == pytest.approx(0.1) and scores["nll_q100"] == pytest.approx(2.0)
    two_way = token_scores(tokens([math.log(0.5)], [[math.log(0.5), math.log(0.5)]]))
    assert two_way["mean_entropy"] == pytest.approx(math.log(2))


CONFIDENT = tokens([-0.01] * 6, [[-0.01, -6.0, -7.0, -8.0, -9.0]] * 6)
UNSURE = tokens([-1.6] * 6, [[-1.6, -1.6, -1.61, -1.62, -1.63]] * 6)


@pytest.mark.parametrize("name", TOKEN_SCORE_NAMES)
def test_every_token_score_is_higher_when_more_uncertain(name: str) -> None:
    assert token_scores(UNSURE)[name] > token_scores(CONFIDENT)[name]


def test_sample_scores_direction() -> None:
    same = np.tile(np.array([[1.0, 0.0, 0.0]]), (5, 1))
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(5, 8))
    spread /= np.linalg.norm(spread, axis=1, keepdims=True)
    low, high = sample_scores(same), sample_scores(spread)
    assert low["num_sem_sets"] == 1 and low["deg"] == pytest.approx(0.0) and low["eigv"] == pytest.approx(1.0)
    for name in ("num_sem_sets", "eigv", "deg", "ecc"):
        assert high[name] > low[name], name


def test_prr_auroc_and_deferral_metrics() -> None:
    quality = np.array([1, 1, 0, 1, 0, 0, 1, 0], dtype=float)
    assert prr(-quality, quality) == pytest.approx(1.0)  # oracle ordering
    assert prr(quality, quality) < 0  # reversed
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([1, 1, 1, 1], [False, True, False, True]) == 0.5
    rates, accuracy = deferral_curve([0.9, 0.1, 0.5], [False, True, True])
    assert rates.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1]) and accuracy.tolist() == pytest.approx(
        [2 / 3, 1, 1, 1]
    )
    assert deferral_auc([0.9, 0.1, 0.5], [False, True, True]) > deferral_auc([0.1, 0.9, 0.5], [False, True, True])


def synthetic_calls(n: int = 80, seed: int = 0) -> tuple[list[list[TokenLogprob]], list[bool]]:
    rng = np.random.default_rng(seed)
    answers, labels = [], []
    for _ in range(n):
        ok = bool(rng.random() < 0.5)
        scale = 0.2 if ok else 1.5
        answers.append(tokens((-rng.exponential(scale, rng.integers(3, 12))).tolist()))
        labels.append(ok)
    return answers, labels


def test_post_hoc_deferral_learns_and_round_trips(tmp_path: Path) -> None:
    answers, labels = synthetic_calls()
    model = PostHocDeferral().fit(answers, labels)
    assert model.train_auroc_ > 0.85
    assert model.predict(UNSURE) > model.predict(CONFIDENT)
    loaded = PostHocDeferral.load(model.save(tmp_path / "d.json"))
    assert loaded.predict(UNSURE) == pytest.approx(model.predict(UNSURE))
    data = json.loads((tmp_path / "d.json").read_text())
    data["state"]["weights"][0] += 1
    (tmp_path / "d.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="checksum"):
        PostHocDeferral.load(tmp_path / "d.json")
    with pytest.raises(NotFittedError):
        PostHocDeferral().predict(CONFIDENT)
    model.save(tmp_path / "d.json")
    data = json.loads((tmp_path / "d.json").read_text())
    data["l2"] = 100.0  # a header field: covered by the checksum too
    (tmp_path / "d.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="checksum"):
        PostHocDeferral.load(tmp_path / "d.json")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(ArtifactError, match="directory"):
        PostHocDeferral.load(tmp_path / "dir.json")


def test_deferral_fit_cli_and_bad_lines(tmp_path: Path, capsys) -> None:
    answers, labels = synthetic_calls()
    calls = tmp_path / "calls.jsonl"
    calls.write_text(
        "".join(
            json.dumps({"logprobs": {"content": [t.model_dump() for t in a]}, "correct": y}) + "\n"
            for a, y in zip(answers, labels, strict=True)
        )
    )
    assert main(["deferral", "fit", "--calls", str(calls), "-o", str(tmp_path / "d.json")]) == 0
    assert "training AUROC" in capsys.readouterr().out
    calls.write_text('{"logprobs": {"content": []}, "correct": "yes"}\n')
    assert main(["deferral", "fit", "--calls", str(calls), "-o", str(tmp_path / "d.json")]) == 2
    assert "calls.jsonl:1" in capsys.readouterr().err


def test_check_without_logprobs_says_so() -> None:
    check = UncertaintyCheck()
    result = check.run(Call(generation=Generation(text="hi")))
    assert result.values["uncertainty.available"] is False and result.values["uncertainty.g_nll"] is None
    calls = [Call(generation=Generation(text="x", tokens=UNSURE)), Call(generation=Generation(text="y"))]
    assert_conforms(check, SPEC, calls)


POLICY = """
version: 1
name: cascade
uncertainty: {score: mean_nll}
escalation: {model: {base_url: "URL", model: large, api_key_env: LARGE_KEY, max_retries: 0}}
rules:
  - {name: no-logprobs, at: output, when: "!uncertainty.available", action: abstain}
  - {name: unsure, at: output, when: "uncertainty.score > 1.0", action: escalate}
"""


def test_cascade_escalates_to_the_policy_target(monkeypatch) -> None:
    monkeypatch.setenv("LARGE_KEY", "k")
    large = Generation(text="Paris, certainly.", tokens=CONFIDENT)  # the larger model's logprobs: checked too
    with ChatCompletionsServer(lambda request: large, api_key="k") as server:
        guard = Guard(loads_policy(POLICY.replace("URL", server.base_url)), audit=False)
        messages = [Message(role="user", content="Capital of France?")]
        confident = guard.after(Generation(text="Paris.", tokens=CONFIDENT), messages=messages)
        assert confident.action is Action.ALLOW
        unsure = guard.after(Generation(text="Lyon?", tokens=UNSURE), messages=messages)
        assert unsure.action is Action.ESCALATE and unsure.rule == "unsure"
        assert unsure.inputs == {"uncertainty.score": pytest.approx(1.6)}
        escalated = guard.escalate(messages, unsure, original="Lyon?")
        assert escalated.answer == "Paris, certainly."
        assert escalated.evidence["escalation"] == {
            "reason": "unsure",
            "original": "Lyon?",
            "target": f"large@{server.base_url}",
            "answer": "Paris, certainly.",
            "review": {"action": "allow", "rule": "(default)", "inputs": {}},
        }
        assert guard.after("no logprobs here").rule == "no-logprobs"
        # an escalated answer passes the output phase too: without logprobs this policy refuses it
        blocked = guard.escalate(messages, unsure, target=lambda m: "Paris, I think.")
        assert blocked.action is Action.ABSTAIN and blocked.answer is None and blocked.rule == "no-logprobs"
        # and one the larger model is unsure of too is withheld for a human
        again = guard.escalate(messages, unsure, target=lambda m: Generation(text="Lyon?", tokens=UNSURE))
        assert again.action is Action.ESCALATE and again.answer is None
        assert "human review" in again.evidence["escalation"]["note"]


def test_failing_escalation_target_obeys_on_error(monkeypatch) -> None:
    monkeypatch.setenv("LARGE_KEY", "k")
    with ChatCompletionsServer(script=[ScriptedReply(500, "down")]) as server:
        guard = Guard(loads_policy(POLICY.replace("URL", server.base_url)), audit=False)
        unsure = guard.after(Generation(text="Lyon?", tokens=UNSURE))
        failed = guard.escalate([Message(role="user", content="q")], unsure)
    assert failed.action is Action.ABSTAIN and failed.answer is None
    assert failed.errors[-1].check == "escalation"


def test_callable_escalation_target() -> None:
    guard = Guard(
        loads_policy(POLICY.replace("URL", "http://127.0.0.1:9/v1").replace("api_key_env: LARGE_KEY, ", "")),
        audit=False,
        escalate_to=lambda messages: Generation(text=f"{len(messages)} messages", tokens=CONFIDENT),
    )
    unsure = guard.after(Generation(text="?", tokens=UNSURE))
    assert guard.escalate([Message(role="user", content="q")], unsure).answer == "1 messages"


def test_eval_uncertainty_cli_against_a_local_server(tmp_path: Path, capsys) -> None:
    qa = tmp_path / "qa.jsonl"
    rows = [{"question": f"q{i}", "answers": ["yes" if i % 2 else "no"]} for i in range(20)]
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def respond(request: dict) -> Generation:
        i = int(request["messages"][-1]["content"][1:])
        right = (i % 3) != 0
        text = ("yes" if i % 2 else "no") if right else "maybe"
        return Generation(
            text=text,
            tokens=tokens(
                [-0.05] if right else [-2.0, -1.5], [[-0.05, -4.0]] if right else [[-2.0, -2.1], [-1.5, -1.6]]
            ),
        )

    with ChatCompletionsServer(respond) as server:
        assert main(["eval", "uncertainty", "--data", str(qa), "--model", server.base_url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 20 and report["accuracy"] == pytest.approx(13 / 20)
    assert report["scores"]["g_nll"]["auroc"] == pytest.approx(1.0)
    assert set(report["deferral"]) >= {"chow_sum", "chow_average", "chow_quantile", "post_hoc_quantile"}
    assert report["deferred_counted_as_correct"] is True


def test_quantiles_match_numpy() -> None:
    from guardrails_uq.uncertainty.token_scores import QUANTILES, nll_quantiles

    values = -np.random.default_rng(4).exponential(1.0, 37)
    assert nll_quantiles(values) == pytest.approx(np.quantile(-values, QUANTILES))


def _letters(texts: list[str]) -> np.ndarray:
    """A model-free embedder: letter counts, unit length."""
    rows = np.zeros((len(texts), 26)) + 1e-3
    for i, text in enumerate(texts):
        for ch in text.lower():
            if "a" <= ch <= "z":
                rows[i, ord(ch) - 97] += 1.0
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_evaluate_with_samples_scores_every_method_and_writes_calls(tmp_path: Path, capsys) -> None:
    """New scores (claims, SAR, Semantic Volume, both similarities), the held-out comparison of Chow-Sum,
    Post-Hoc-Quantile and the risk-controlled rule, and calls.jsonl that `calibrate deferral` reads."""
    from guardrails_uq.uncertainty.evaluate import evaluate

    rng = np.random.default_rng(0)
    rows = [(f"q{i}", ["yes"]) for i in range(60)]
    right = {f"q{i}": bool(rng.random() < 0.6) for i in range(60)}

    def answer(messages: list[dict], temperature: float = 0.0) -> Generation:
        ok = right[messages[-1]["content"]]
        text = "yes" if ok else "no idea"
        lp = (-rng.exponential(0.1 if ok else 1.5, 3)).tolist()
        return Generation(text=text if temperature == 0 or ok else str(rng.integers(9)), tokens=tokens(lp))

    def both(messages: list[dict], n: int) -> tuple[Generation, list[Generation]]:
        return answer(messages), [answer(messages, 1.0) for _ in range(n)]

    calls: list[dict] = []
    report = evaluate(rows, answer, answer_and_samples=both, n_samples=3, embed=_letters, calls=calls, splits=10)
    expected = {"worst_claim_nll", "token_sar", "sar", "semantic_volume", "eigv", "eigv_cosine", "num_sem_sets"}
    assert expected <= set(report["scores"])
    held = report["heldout_deferral"]
    assert held["splits"] == 10
    assert {"chow_sum", "post_hoc_quantile", "risk_controlled_g_nll", "risk_controlled_max_nll"} <= set(held["auc"])
    assert held["auc"]["random"] < held["auc"]["chow_sum"] <= held["auc"]["oracle"]
    path = tmp_path / "calls.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in calls))
    out = tmp_path / "cal.json"
    assert main(["calibrate", "deferral", "--calls", str(path), "--score", "max_nll", "--target-error", "0.3",
                 "-o", str(out)]) == 0  # fmt: skip
    assert json.loads(out.read_text())["n"] == 60
