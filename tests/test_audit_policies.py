"""One audit log, several tenants' policies (``serve --policies``): ``audit stats``, ``audit tail`` and ``report``
take ``--policy NAME`` (repeatable) to read one tenant's decisions, ``audit stats`` counts decisions by policy,
and a name that matches nothing is an error naming the policies the log holds (a typo must not look like a
tenant with no traffic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardrails_uq import Action, Decision, open_audit
from guardrails_uq.cli import main


@pytest.fixture
def shared_log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    log = open_audit(path)
    for i in range(3):
        log.write(Decision(policy="tenant-a", phase="input", action=Action.ALLOW, request_id=f"a{i}"))
    log.write(Decision(policy="tenant-b", phase="input", action=Action.ABSTAIN, rule="harmful", request_id="b0"))
    log.write(Decision(policy="tenant-b", phase="output", action=Action.ESCALATE, rule="unsure", request_id="b1"))
    log.close()
    return path


def test_audit_stats_counts_by_policy_and_reads_one_tenant(shared_log: Path, capsys) -> None:
    assert main(["audit", "stats", str(shared_log), "--json"]) == 0
    everything = json.loads(capsys.readouterr().out)
    assert everything["by_policy"] == {"tenant-a": 3, "tenant-b": 2}
    assert main(["audit", "stats", str(shared_log), "--json", "--policy", "tenant-b"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["total"] == 2 and one["by_policy"] == {"tenant-b": 2}
    assert one["requests"]["by_action"] == {"abstain": 1, "escalate": 1}
    assert main(["audit", "stats", str(shared_log), "--json", "--policy", "tenant-a", "--policy", "tenant-b"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 5


def test_audit_tail_reads_one_tenant(shared_log: Path, capsys) -> None:
    assert main(["audit", "tail", str(shared_log), "--json", "--policy", "tenant-a"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line)["policy"] for line in lines] == ["tenant-a"] * 3


def test_report_reads_one_tenant(shared_log: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(shared_log), "-o", str(out), "--policy", "tenant-b"]) == 0
    assert "(2 decisions, 2 requests" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    assert "harmful" in page and "tenant-a" not in page


@pytest.mark.parametrize("command", [["audit", "stats"], ["audit", "tail"], ["report"]])
def test_a_policy_name_that_matches_nothing_names_the_policies_in_the_log(
    shared_log: Path, tmp_path: Path, capsys, command: list[str]
) -> None:
    extra = ["-o", str(tmp_path / "r.html")] if command == ["report"] else []
    assert main([*command, str(shared_log), *extra, "--policy", "tenant-c"]) == 2
    err = capsys.readouterr().err
    assert "no decision of policy tenant-c" in err and "tenant-a, tenant-b" in err and "--policy" in err
