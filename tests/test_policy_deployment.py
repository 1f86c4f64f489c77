"""`policy check --for serve` (issue 25 item 4): rules that cannot fire behind the proxy are named, with why and
the fix; a policy whose rules can all fire gets no warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrails_uq.cli import main
from guardrails_uq.policy import loads_policy
from guardrails_uq.policy.deployment import serve_warnings

ROOT = Path(__file__).resolve().parent.parent
CAL = ROOT / "policies" / "calibration"
POLICY = f"""
version: 1
name: served
signals: {{app.tier: string}}
retrieval: {{calibration: {CAL / "nimbus.json"}}}
grounding: {{calibration: {CAL / "grounding.json"}}}
uncertainty: {{score: mean_nll, calibration: {CAL / "deferral.json"}, samples: 2}}
rules:
  - {{name: vip, at: input, when: 'app.tier == "vip"', action: escalate}}
  - {{name: no-evidence, at: retrieval, when: "retrieval.kept == 0", action: abstain}}
  - {{name: contradicts, at: output, when: "grounding.checked && grounding.flagged", action: abstain}}
  - {{name: no-logprobs, at: output, when: "!uncertainty.available", action: escalate}}
  - {{name: unsure, at: output, when: "uncertainty.mean_nll > 2.0", action: escalate}}
  - {{name: copied, at: output, when: 'output.kind == "answer"', action: allow}}
"""


def test_serve_warnings_name_each_rule_that_cannot_fire_and_the_fix() -> None:
    warnings = serve_warnings(loads_policy(POLICY))
    by_rule = {
        name: [w for w in warnings if f"rule {name!r}" in w]
        for name in ("vip", "no-evidence", "contradicts", "no-logprobs", "unsure", "copied")
    }
    assert "app signals" in by_rule["vip"][0]
    assert "documents or tool messages" in by_rule["no-evidence"][0] and "extra_body" in by_rule["no-evidence"][0]
    assert "grounding.checked is false" in by_rule["contradicts"][0] and "extra_body" in by_rule["contradicts"][0]
    assert "decides every answer" in by_rule["no-logprobs"][0] and "honour n" in by_rule["no-logprobs"][0]
    assert "never fires" in by_rule["unsure"][0] and "logprobs" in by_rule["unsure"][0]
    assert by_rule["copied"] == [], "a rule on what the proxy always has gets no warning"


def test_policy_check_for_serve_prints_the_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    assert main(["policy", "check", str(tmp_path / "p.yaml"), "--for", "serve"]) == 0
    err = capsys.readouterr().err
    assert "serve: rule 'no-evidence' (line 10)" in err
    assert main(["policy", "check", str(tmp_path / "p.yaml")]) == 0
    assert "serve:" not in capsys.readouterr().err, "without --for serve there is nothing to say about the proxy"
