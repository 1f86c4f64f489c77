"""Hostile numbers for the fitting and calibration commands (NaN, infinities, 1e308, negatives, as arguments
and as fields of their input files), and strict JSON from every --json output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from guardrails_uq.cli import main
from guardrails_uq.errors import InputError
from guardrails_uq.guidelines.calibration import HarmDetector, read_requests
from guardrails_uq.uncertainty.deferral import PostHocDeferral, read_calls
from guardrails_uq.uncertainty.risk import calibrate_risk

HOSTILE = ["nan", "inf", "-inf", "1e308", "-1"]


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _calls(path: Path, n: int = 40) -> Path:
    lines = []
    for i in range(n):
        correct = i % 3 != 0
        logprob = -0.05 if correct else -2.5
        tokens = [{"token": f"t{j}", "logprob": logprob - 0.01 * j, "top_logprobs": []} for j in range(5)]
        lines.append(json.dumps({"logprobs": {"content": tokens}, "correct": correct}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _commands(tmp_path: Path) -> dict[str, list[str]]:
    calls = str(_calls(tmp_path / "calls.jsonl"))
    out = str(tmp_path / "out.json")
    missing = str(tmp_path / "missing.jsonl")  # never read: the bad argument is refused first
    return {
        "deferral-fit": ["deferral", "fit", "--calls", calls, "-o", out],
        "calibrate-deferral": ["calibrate", "deferral", "--calls", calls, "--score", "max_nll", "--target-error", "0.2", "-o", out],
        "calibrate-guidelines": ["calibrate", "guidelines", "--library", missing, "--harmful", missing, "--benign", missing, "-o", out],
    }  # fmt: skip


ARGUMENTS = [
    ("deferral-fit", "--l2", [*HOSTILE, "2e6"]),
    ("calibrate-deferral", "--target-error", [*HOSTILE, "0", "1", "1e-300"]),
    ("calibrate-deferral", "--delta", [*HOSTILE, "0", "1", "1e-300"]),
    ("calibrate-guidelines", "--target-fpr", [*HOSTILE, "0", "1"]),
    ("calibrate-guidelines", "--calibration-fraction", [*HOSTILE, "0", "1"]),
    ("calibrate-guidelines", "--l2", HOSTILE),
    ("calibrate-guidelines", "--cv", ["-1", "1000000"]),
    ("calibrate-guidelines", "--seed", ["-1", str(2**64)]),
]


@pytest.mark.parametrize(
    ("command", "flag", "value"), [(c, f, v) for c, f, values in ARGUMENTS for v in values], ids=str
)
def test_a_hostile_numeric_argument_is_a_clear_error_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, flag: str, value: str
) -> None:
    argv = [*_commands(tmp_path)[command], f"{flag}={value}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} must be a"), err
    assert "fix: " in err and "Traceback" not in err
    assert not (tmp_path / "out.json").exists(), "nothing written"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e308", "-1e308", '"x"', "0.5"])
def test_a_hostile_logprob_in_a_calls_file_names_the_file_and_line(tmp_path: Path, value: str) -> None:
    calls = _calls(tmp_path / "calls.jsonl")
    lines = calls.read_text().splitlines()
    edited = lines[7].replace('"logprob": -0.05,', f'"logprob": {value},', 1)
    assert edited != lines[7]
    lines[7] = edited
    calls.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"calls\.jsonl:8: .*log"):
        read_calls(calls)
    assert main(["deferral", "fit", "--calls", str(calls), "-o", str(tmp_path / "m.json")]) == 2
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e308", "-1", "0", "true"])
def test_a_hostile_weight_in_a_requests_file_names_the_file_and_line(tmp_path: Path, value: str) -> None:
    path = tmp_path / "benign.jsonl"
    path.write_text('{"text": "hello there"}\n' + f'{{"text": "how do I bake bread", "weight": {value}}}\n')
    with pytest.raises(InputError, match=r'benign\.jsonl:2: "weight" must be a finite number in \(0, 1e\+06\]'):
        read_requests(path)


@pytest.mark.parametrize("l2", [math.nan, math.inf, 1e308, -1.0])
def test_the_library_refuses_the_same_numbers(l2: float) -> None:
    with pytest.raises(InputError, match="l2 must be"):
        PostHocDeferral(l2=l2)
    with pytest.raises(InputError, match="l2 must be"):
        HarmDetector(l2=l2)
    with pytest.raises(InputError, match="target_error must be"):
        calibrate_risk([0.1, 0.2], [False, True], target_error=l2, delta=0.1, score="max_nll")


def test_eval_input_json_is_strict_with_null_for_undefined_rates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\nname: app\nsignals: {app.toxicity: number}\nrules:\n"
        '  - {name: toxic, at: input, when: "app.toxicity > 0.8", action: abstain}\n'
    )
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"text": "hi", "harmful": true}\n')  # no benign prompt: the false-positive rate is undefined
    assert main(["eval", "input", "--policy", str(policy), "--prompts", str(prompts), "--json"]) == 0
    report = _strict_json(capsys.readouterr().out)
    assert report["false_positive_rate"] is None and report["auroc"] is None  # type: ignore[index]
    assert report["recall"] == 1.0  # type: ignore[index]


def test_audit_stats_json_is_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from guardrails_uq import Action, Decision
    from guardrails_uq.audit import encode_record

    record = encode_record(Decision(policy="p", phase="output", action=Action.ALLOW, signals={"x.score": 1.0}))
    edited = record.replace(b'"x.score":1.0', b'"x.score":Infinity')  # another writer's bare JSON constant
    assert edited != record
    (tmp_path / "audit.jsonl").write_bytes(b"\x1e" + edited + b"\n")
    assert main(["audit", "stats", str(tmp_path / "audit.jsonl"), "--json"]) == 0
    stats = _strict_json(capsys.readouterr().out)
    assert stats["signals"]["x.score"]["p50"] is None  # type: ignore[index]
