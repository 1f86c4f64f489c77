"""The decision log: every Decision recorded, readable after a kill mid-write, stats correct."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import APP_POLICY

from guardrails_uq import Action, Guard, load_policy, open_audit, read_audit
from guardrails_uq.audit import ReadReport, stats

SIGNALS = {"app.toxicity": 0.9, "app.user_tier": "free", "app.flags": []}


@pytest.mark.parametrize("suffix", [".jsonl", ".sqlite"])
def test_guard_logs_every_decision(write_policy, tmp_path: Path, suffix: str) -> None:
    path = write_policy(APP_POLICY + f"audit: {{path: audit{suffix}}}\n")
    with Guard.from_policy(path) as guard:
        made = [guard.before([], signals=SIGNALS), guard.after("x", signals={**SIGNALS, "app.toxicity": 0.1})]
    logged = list(read_audit(tmp_path / f"audit{suffix}"))
    assert [d.id for d in logged] == [d.id for d in made]
    assert logged[0] == made[0]


def test_jsonl_survives_a_process_killed_mid_write(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    writer = textwrap.dedent(
        f"""
        import sys
        from guardrails_uq import Decision, Action, open_audit
        audit = open_audit({str(log)!r})
        big = "x" * 200_000
        i = 0
        while True:
            audit.write(Decision(policy="p", phase="output", action=Action.ALLOW, message=big, metadata={{"i": i}}))
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", writer])
    deadline = time.time() + 30
    while time.time() < deadline and (not log.exists() or log.stat().st_size < 5_000_000):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # simulate the worst case as well: a record cut in half
    with open(log, "ab") as handle:
        handle.write(b'{"format": 1, "id": "torn", "poli')
    report = ReadReport()
    before = list(read_audit(log, report))
    assert len(before) >= 10
    assert [d.metadata["i"] for d in before] == list(range(len(before)))
    assert report.skipped, "the torn record is reported"
    # a new writer's record starts with its own RS, so it is readable right after the torn one
    audit = open_audit(log)
    from guardrails_uq import Decision

    audit.write(Decision(policy="p", phase="input", action=Action.ABSTAIN, metadata={"i": "after"}))
    audit.close()
    after = list(read_audit(log))
    assert after[-1].metadata == {"i": "after"}
    assert len(after) == len(before) + 1


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from guardrails_uq import Decision

    audit = open_audit(tmp_path / "a.jsonl")
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: audit.write(Decision(policy="p", phase="input", action=Action.ALLOW, message="y" * 5000)),
                range(300),
            )
        )
    audit.close()
    report = ReadReport()
    assert len(list(read_audit(tmp_path / "a.jsonl", report))) == 300
    assert report.skipped == []


def test_stats_counts_and_percentiles(write_policy, tmp_path: Path) -> None:
    path = write_policy(APP_POLICY + "audit: {path: audit.jsonl}\n")
    guard = Guard(load_policy(path))
    for i in range(100):
        guard.before([], signals={**SIGNALS, "app.toxicity": i / 100})
    guard.close()
    summary = stats(read_audit(tmp_path / "audit.jsonl"))
    assert summary["total"] == 100
    assert summary["by_action"] == {"allow": 81, "abstain": 19}
    assert summary["by_rule"] == {"(pass)": 81, "toxic": 19}
    p50 = summary["signals"]["app.toxicity"]["p50"]
    assert p50 == pytest.approx(0.495)


def test_stats_count_requests_not_records() -> None:
    from guardrails_uq import Action, Decision
    from guardrails_uq.audit import stats

    log = [
        Decision(policy="p", phase="input", action=Action.ALLOW, final=False, request_id="a"),
        Decision(policy="p", phase="retrieval", action=Action.ALLOW, final=False, request_id="a"),
        Decision(policy="p", phase="output", action=Action.ALLOW, request_id="a"),
        Decision(policy="p", phase="input", action=Action.ABSTAIN, rule="harmful", request_id="b"),
        Decision(policy="p", phase="output", action=Action.ALLOW, request_id="c"),
        Decision(policy="p", phase="output", action=Action.ABSTAIN, rule="copied", request_id="c"),
        Decision(policy="p", phase="input", action=Action.ALLOW, final=False, request_id="d"),
    ]
    summary = stats(log)
    assert summary["total"] == 7
    assert summary["requests"] == {
        "total": 4,
        "by_action": {"abstain": 2, "allow": 1, "incomplete": 1},
        "by_rule": {"(default)": 1, "harmful": 1, "copied": 1, "(incomplete)": 1},
    }


def test_an_escalated_requests_verdict_is_the_escalation_outcome() -> None:
    from guardrails_uq import Action, Decision
    from guardrails_uq.audit import group_requests

    log = [
        Decision(policy="p", phase="output", action=Action.ESCALATE, rule="unsure", request_id="a"),
        Decision(
            policy="p",
            phase="output",
            action=Action.ESCALATE,
            rule="unsure",
            answer="Paris.",
            evidence={"escalation": {"target": "large"}},
            request_id="a",
        ),
    ]
    (request,) = group_requests(log)
    assert request.verdict is log[1] and request.verdict.answer == "Paris."
