"""Risk-controlled deferral (Learn then Test): the certified threshold keeps the error among allowed answers
at or under the target with probability >= 1 - delta; nothing certifiable means nothing allowed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from guardrails_uq import Action, ArtifactError, Generation, Guard, InputError, TokenLogprob, TopLogprob
from guardrails_uq.cli import main
from guardrails_uq.uncertainty.risk import RiskControl, calibrate_risk, evaluate_risk_control, start_size


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores in [0, 1]; P(incorrect | s) = 0.02 + 0.6 s^2: surer answers are right more often."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0, 1, n)
    incorrect = rng.uniform(0, 1, n) < 0.02 + 0.6 * scores**2
    return scores, incorrect


def test_hand_computed_case() -> None:
    # 60 sure answers (1 wrong), then 20 unsure ones (all wrong); target 0.2, delta 0.5 (level 0.05 per walk)
    scores = np.arange(80) / 80
    incorrect = np.zeros(80, dtype=bool)
    incorrect[5] = True
    incorrect[60:] = True
    control = calibrate_risk(scores, incorrect, target_error=0.2, delta=0.5, score="max_nll")
    level = 0.5 / 10
    # allowed count m is certified when P(Bin(m, .2) <= errors among the m surest) <= 0.05
    certified = [m for m in range(start_size(0.2, level), 81) if binom.cdf(1 + max(0, m - 60), m, 0.2) <= level]
    assert max(certified) == 66  # 66 allowed: 7 errors, p = 0.033; 67: 8 errors, P(Bin(67, .2) <= 8) = 0.061
    assert control.certified and control.threshold == pytest.approx(65 / 80)
    assert control.allowed_fraction == pytest.approx(66 / 80) and control.calibration_error == pytest.approx(7 / 66)
    assert control.defer(0.81) is False and control.defer(0.82) is True
    assert control.defer(None) is True and control.defer(math.nan) is True


def test_one_early_error_does_not_end_the_search() -> None:
    scores, incorrect = synthetic(1000, seed=3)
    incorrect[np.argsort(scores)[:3]] = True  # the three surest answers are wrong
    control = calibrate_risk(scores, incorrect, target_error=0.1, delta=0.1, score="max_nll")
    assert control.certified and control.allowed_fraction > 0.2


def test_the_guarantee_holds_over_random_splits() -> None:
    scores, incorrect = synthetic(3000, seed=1)
    report = evaluate_risk_control(scores, incorrect, target_error=0.1, delta=0.1, splits=200)
    assert report["violation_rate"] <= 0.1 + 0.05, report  # delta, up to sampling noise
    assert report["realized_error_mean"] <= 0.1
    assert report["allowed_fraction"] > 0.4, "not trivially conservative"
    assert report["certified_fraction"] == 1.0


def test_nothing_certifiable_allows_nothing() -> None:
    scores, incorrect = np.linspace(0, 1, 50), np.ones(50, dtype=bool)  # every answer wrong
    control = calibrate_risk(scores, incorrect, target_error=0.05, delta=0.1, score="g_nll")
    assert not control.certified and control.threshold == -math.inf and control.allowed_fraction == 0.0
    assert all(control.defer(s) for s in scores)
    few = calibrate_risk([0.1, 0.2], [False, False], target_error=0.1, delta=0.1, score="g_nll")
    assert not few.certified, "2 calls cannot certify 10% error at delta 0.1"


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(InputError, match=r"target_error must be a finite number in \[0.0001, 1\)"):
        calibrate_risk([0.1], [True], target_error=0.0, delta=0.1, score="g_nll")
    with pytest.raises(InputError, match="finite"):
        calibrate_risk([0.1, math.inf], [True, False], target_error=0.1, delta=0.1, score="g_nll")
    with pytest.raises(InputError, match="labels"):
        calibrate_risk([0.1, 0.2], [True], target_error=0.1, delta=0.1, score="g_nll")


def test_artifact_round_trip_and_edits_refused(tmp_path: Path) -> None:
    scores, incorrect = synthetic(500, seed=2)
    control = calibrate_risk(scores, incorrect, target_error=0.15, delta=0.1, score="max_nll")
    path = control.save(tmp_path / "d.json")
    assert RiskControl.load(path) == control
    data = json.loads(path.read_text())
    data["threshold"] = 10.0  # allow everything
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="checksum"):
        RiskControl.load(path)
    nothing = calibrate_risk([0.1], [True], target_error=0.1, delta=0.1, score="g_nll")
    assert RiskControl.load(nothing.save(tmp_path / "n.json")).threshold == -math.inf


POLICY = """
version: 1
name: risk
uncertainty: {score: max_nll, calibration: deferral-calibration.json}
rules:
  - {name: uncertain, at: output, when: "uncertainty.defer", action: escalate}
"""


def answer(logprob: float) -> Generation:
    return Generation(
        text="yes", tokens=[TokenLogprob(token="yes", logprob=logprob, top=[TopLogprob(token="yes", logprob=logprob)])]
    )


def test_the_check_publishes_defer_and_the_policy_escalates(tmp_path: Path) -> None:
    control = calibrate_risk(*synthetic(1000, seed=3), target_error=0.1, delta=0.1, score="max_nll")
    control.save(tmp_path / "deferral-calibration.json")
    (tmp_path / "p.yaml").write_text(POLICY)
    guard = Guard.from_policy(tmp_path / "p.yaml", audit=False)
    sure = guard.after(answer(-control.threshold / 2))
    assert sure.action is Action.ALLOW and sure.signals["uncertainty.defer"] is False
    assert sure.signals["uncertainty.defer_threshold"] == pytest.approx(control.threshold)
    unsure = guard.after(answer(-(control.threshold + 0.5)))
    assert unsure.action is Action.ESCALATE and unsure.rule == "uncertain"
    no_logprobs = guard.after("yes")
    assert no_logprobs.signals["uncertainty.defer"] is True, "no score: deferred, never allowed blindly"
    rule = unsure.evidence["uncertainty"]["deferral"]
    assert rule["target_error"] == 0.1 and rule["n"] == 1000 and rule["threshold"] == pytest.approx(control.threshold)
    from guardrails_uq.report import render

    assert "error among allowed answers &le; 0.1" in render([unsure]), "the report shows the target and threshold"


def calls_file(path: Path, n: int, seed: int) -> Path:
    scores, incorrect = synthetic(n, seed)
    lines = []
    for s, wrong in zip(scores, incorrect, strict=True):
        tokens = [{"token": "a", "logprob": -float(s) * 3, "top_logprobs": []}]
        lines.append(json.dumps({"logprobs": {"content": tokens}, "correct": not bool(wrong)}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_calibrate_deferral_cli(tmp_path: Path, capsys) -> None:
    calls = calls_file(tmp_path / "calls.jsonl", 600, seed=4)
    out = tmp_path / "d.json"
    args = [
        "calibrate",
        "deferral",
        "--calls",
        str(calls),
        "--score",
        "max_nll",
        "--target-error",
        "0.1",
        "-o",
        str(out),
    ]
    assert main(args) == 0
    assert "certified: allow when max_nll <=" in capsys.readouterr().out
    control = RiskControl.load(out)
    assert control.score == "max_nll" and control.n == 600 and control.target_error == 0.1 and control.delta == 0.1
    assert control.calibration_error is not None and control.calibration_error <= 0.1
    args[args.index("0.1")] = "0.001"
    assert main(args) == 0
    assert "allows nothing" in capsys.readouterr().err
    assert main([*args[:5], "defer_prob", *args[6:]]) == 2
    assert "--deferral" in capsys.readouterr().err


def test_policy_check_explains_where_the_threshold_comes_from(tmp_path: Path, capsys) -> None:
    calibrate_risk(*synthetic(1000, seed=3), target_error=0.1, delta=0.1, score="max_nll").save(
        tmp_path / "deferral-calibration.json"
    )
    (tmp_path / "p.yaml").write_text(POLICY)
    assert main(["policy", "check", str(tmp_path / "p.yaml")]) == 0
    out = capsys.readouterr().out
    assert "uncertainty.defer: max_nll >" in out and "error among allowed answers <= 0.1" in out and "n=1000" in out
