"""The guardrails-uq command: policy check/schema/test, check, audit tail/stats; errors exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import APP_POLICY

from guardrails_uq.cli import main

CASES = """
cases:
  - {name: toxic refused, signals: {app.toxicity: 0.9, app.user_tier: free, app.flags: []}, expect: abstain, rule: toxic}
  - {name: vip, signals: {app: {toxicity: 0.6, user_tier: vip, flags: []}}, expect: escalate, phases: [output]}
"""


def test_policy_check_ok_and_error(write_policy, capsys) -> None:
    good = write_policy(APP_POLICY)
    assert main(["policy", "check", str(good)]) == 0
    assert "ok:" in capsys.readouterr().out
    bad = write_policy(APP_POLICY.replace("when:", "wen:"), name="bad.yaml")
    assert main(["policy", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:5" in err and "did you mean 'when'" in err


def test_policy_test_passes_and_fails_with_a_diff(write_policy, tmp_path: Path, capsys) -> None:
    policy = write_policy(APP_POLICY)
    cases = tmp_path / "cases.yaml"
    cases.write_text(CASES)
    assert main(["policy", "test", str(policy), str(cases)]) == 0
    assert "PASS: 2/2" in capsys.readouterr().out
    cases.write_text(CASES.replace("expect: escalate", "expect: allow"))
    assert main(["policy", "test", str(policy), str(cases)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  vip" in out and "expected: allow" in out and "got:      escalate by rule 'vip-review'" in out
    assert "read:     app.user_tier = 'vip'" in out


def test_policy_test_rejects_unknown_signals(write_policy, tmp_path: Path, capsys) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text("cases:\n  - {name: x, signals: {app.nope: 1}, expect: allow}\n")
    assert main(["policy", "test", str(write_policy(APP_POLICY)), str(cases)]) == 2
    assert "unknown signals ['app.nope']" in capsys.readouterr().err


def test_schema_is_json(capsys) -> None:
    assert main(["policy", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False
    assert "rules" in schema["properties"]


def test_check_json_and_explain(write_policy, tmp_path: Path, capsys) -> None:
    policy = write_policy(APP_POLICY + "audit: {path: audit.jsonl}\n")
    call = tmp_path / "call.json"
    call.write_text(
        json.dumps(
            {
                "generation": {"text": "hi"},
                "signals": {"app.toxicity": 0.7, "app.user_tier": "vip", "app.flags": []},
            }
        )
    )
    assert main(["check", "--policy", str(policy), "--call", str(call)]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["action"] == "escalate" and decision["rule"] == "vip-review"
    assert main(["check", "--policy", str(policy), "--call", str(call), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "ESCALATE" in out and "app.user_tier = 'vip'" in out
    assert main(["audit", "tail", str(tmp_path / "audit.jsonl")]) == 0
    assert capsys.readouterr().out.count("vip-review") == 2
    assert main(["audit", "stats", str(tmp_path / "audit.jsonl"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["by_rule"] == {"vip-review": 2}


def test_bad_call_file_names_the_field(write_policy, tmp_path: Path, capsys) -> None:
    call = tmp_path / "call.json"
    call.write_text('{"generation": {"txt": "hi"}}')
    assert main(["check", "--policy", str(write_policy(APP_POLICY)), "--call", str(call)]) == 2
    assert "generation.text" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "guardrails-uq"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "policy" in out.stdout
