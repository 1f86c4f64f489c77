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


@pytest.mark.parametrize("cases", sorted((ROOT / "policies").glob("*_test.yaml")), ids=lambda p: p.name)
def test_shipped_policies_pass_their_cases(cases: Path) -> None:
    policy = load_policy(cases.with_name(cases.name.replace("_test.yaml", ".yaml")))
    results = run_cases(policy, cases)
    assert all(r.passed for r in results), [r.case.name for r in results if not r.passed]


@pytest.mark.parametrize("path", sorted((ROOT / "policies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_policy_loads(path: Path) -> None:
    if path.name.endswith("_test.yaml"):
        pytest.skip("cases file")
    load_policy(path)
