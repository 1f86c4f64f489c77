"""Generated documentation stays in sync with the code; shipped policies pass their own tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardrails_uq.policy import json_schema, load_policy, run_cases
from guardrails_uq.policy.reference import END, START, render

ROOT = Path(__file__).resolve().parent.parent


def test_readme_policy_reference_is_current() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index(START) : text.index(END) + len(END)]
    assert block == render(), "run: .venv/bin/python -m guardrails_uq.policy.reference README.md"


def test_shipped_json_schema_is_current() -> None:
    shipped = json.loads((ROOT / "policies" / "policy.schema.json").read_text(encoding="utf-8"))
    assert shipped == json.loads(json.dumps(json_schema())), (
        "run: guardrails-uq policy schema -o policies/policy.schema.json"
    )


def _prepare(policy: Path) -> Path:
    """The demo policy needs its provenance index, built on first use from the offline unsafe texts."""
    if policy.name == "demo.yaml":
        from guardrails_uq.provenance.evaldata import ensure_unsafe_index

        ensure_unsafe_index(ROOT / "policies" / "indexes" / "unsafe-corpus")
    return policy


@pytest.mark.slow
@pytest.mark.parametrize("cases", sorted((ROOT / "policies").glob("*_test.yaml")), ids=lambda p: p.name)
def test_shipped_policies_pass_their_cases(cases: Path) -> None:
    policy = load_policy(_prepare(cases.with_name(cases.name.replace("_test.yaml", ".yaml"))))
    results = run_cases(policy, cases)
    assert all(r.passed for r in results), [r.case.name for r in results if not r.passed]


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    sorted(p for p in (ROOT / "policies").glob("*.yaml") if not p.name.endswith("_test.yaml")),
    ids=lambda p: p.name,
)
def test_every_shipped_policy_loads(path: Path) -> None:
    load_policy(_prepare(path))


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """`make demo`'s job on its first requests: both apps, the audit log and the HTML report."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "guardrails_uq", "demo", "--out", str(tmp_path), "--limit", "4"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4/4" in result.stdout and "HTML report:" in result.stdout
    assert (tmp_path / "report.html").read_text().count('class="card ') >= 4
    assert (tmp_path / "audit.jsonl").stat().st_size > 0
