"""`audit stats`, `report` and `replay` stream through a log: no Decision is kept once it has been read, peak
memory does not grow with the log, long runs report progress on stderr, and the report's cards are a bounded
sample that the page announces."""

from __future__ import annotations

import gc
import io
import json
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from guardrails_uq import Action, Decision
from guardrails_uq import audit as audit_module
from guardrails_uq.audit import group_requests, stats
from guardrails_uq.cli import main
from guardrails_uq.testing import synthetic_request, write_synthetic_audit_log

POLICY = (
    "version: 1\nname: stricter\nsignals: {app.toxicity: number}\nrules:\n"
    '  - {name: toxic, at: input, when: "app.toxicity > 0.5", action: abstain}\n'
)


class Tracked:
    """Decisions of ``requests`` synthetic requests, interleaved (request i's three phases are spread over the
    log), each watched through a weak reference; ``alive_at_end`` is how many earlier ones were still held by
    the consumer when it asked for the next one after the last."""

    def __init__(self, requests: int) -> None:
        self.requests = requests
        self.alive_at_end: int | None = None

    def __call__(self, *_: object) -> Iterator[Decision]:
        refs: list[weakref.ref[Decision]] = []
        phases = [synthetic_request(i) for i in range(self.requests)]
        order = [(phase, i) for phase in range(3) for i in range(self.requests)]
        for phase, i in order:
            decision = phases[i][phase]
            phases[i][phase] = None  # type: ignore[call-overload]
            refs.append(weakref.ref(decision))
            yield decision
            del decision
        gc.collect()
        self.alive_at_end = sum(ref() is not None for ref in refs)

    def all(self) -> list[Decision]:
        return [d for phase in range(3) for d in (synthetic_request(i)[phase] for i in range(self.requests))]


def test_stats_keeps_no_decision(tmp_path: Path) -> None:
    tracked = Tracked(300)
    summary = stats(tracked())
    assert tracked.alive_at_end is not None and tracked.alive_at_end <= 2, "decisions were kept in memory"
    requests = group_requests(tracked.all())
    assert summary["requests"]["total"] == 300  # type: ignore[index]
    expected = {
        "abstain": sum(r.action == "abstain" for r in requests),
        "allow": sum(r.action == "allow" for r in requests),
    }
    assert summary["requests"]["by_action"] == expected  # type: ignore[index]
    assert summary["total"] == 900 and summary["signals"]["app.toxicity"]["n"] == 900  # type: ignore[index]


def test_report_keeps_no_decision_and_announces_its_sample() -> None:
    from guardrails_uq.report import build_report

    tracked = Tracked(200)
    page = io.StringIO()
    outcome = build_report(tracked, page, max_requests=30)
    assert tracked.alive_at_end is not None and tracked.alive_at_end <= 2, "decisions were kept in memory"
    html = page.getvalue()
    assert (outcome.requests, outcome.shown, outcome.decisions) == (200, 30, 600)
    assert html.count('class="card ') == 30
    assert "Showing 30 of 200 requests" in html and "200 requests, 600 decisions" in html
    # the 25 abstained requests (one in eight) all get a card before any allowed one
    assert html.count('class="card abstain"') == 25 and html.count('class="card allow"') == 5


def test_replay_keeps_no_decision(tmp_path: Path) -> None:
    from guardrails_uq.replay import replay_decisions

    (tmp_path / "p.yaml").write_text(POLICY)
    tracked = Tracked(200)
    report = replay_decisions(tmp_path / "p.yaml", tracked())
    assert tracked.alive_at_end is not None and tracked.alive_at_end <= 2, "decisions were kept in memory"
    assert report["total"] == 600
    flagged = sum((i * 7919 % 1000) / 1000 > 0.5 for i in range(200))
    assert report["transitions"] == {
        "allow ((pass)) -> abstain (toxic)": flagged,  # inputs over the new threshold
        "abstain (memorized-unsafe-text) -> allow ((default))": 25,  # outputs: the new policy has no such rule
    }


def test_long_runs_report_progress_on_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    log = tmp_path / "audit.jsonl"
    write_synthetic_audit_log(log, 5)
    monkeypatch.setattr(audit_module, "PROGRESS_EVERY", 1 << 20)  # the log is read 1 MiB at a time
    (tmp_path / "p.yaml").write_text(POLICY)
    for argv, label in (
        (["audit", "stats", str(log)], "audit stats"),
        (["report", str(log), "-o", str(tmp_path / "r.html")], "report, pass 2 of 2"),
        (["replay", str(log), "--policy", str(tmp_path / "p.yaml")], "replay"),
    ):
        assert main(argv) == 0
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"{label}: ")]
        assert len(lines) >= 4, f"{label}: progress every MiB of a 5 MB log"
        assert lines[-1].split("(")[1].startswith("100%"), lines[-1]


def test_a_hostile_request_text_is_cut_in_the_card() -> None:
    from guardrails_uq.report import REQUEST_CHARS, render

    page = render([Decision(policy="p", phase="input", action=Action.ALLOW, metadata={"request": "x" * 10**6})])
    assert "x" * REQUEST_CHARS in page and "x" * (REQUEST_CHARS + 1) not in page


CHILD = """
import json, sys
from guardrails_uq.cli import main
rc = main(json.loads(sys.argv[1]))
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
print(json.dumps({"rc": rc, "peak_mb": peak}), file=sys.stderr)
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_log(tmp_path: Path) -> None:
    """Each command's peak RSS (VmHWM of a fresh child) on a 4 MB and a 60 MB log: the larger log may cost a
    little more (page cache of the temporary databases, Python's allocator), never in proportion (15x the log;
    the code before streaming took 8.6 MB of memory per MB of log: +500 MB here)."""
    (tmp_path / "p.yaml").write_text(POLICY)
    peaks: dict[str, list[float]] = {}
    for mb in (4, 60):
        log = tmp_path / f"audit{mb}.jsonl"
        write_synthetic_audit_log(log, mb)
        for name, argv in {
            "stats": ["audit", "stats", str(log), "--json"],
            "report": ["report", str(log), "-o", str(tmp_path / "r.html")],
            "replay": ["replay", str(log), "--policy", str(tmp_path / "p.yaml"), "--json"],
        }.items():
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv)], capture_output=True, text=True)
            result = json.loads(done.stderr.strip().splitlines()[-1])
            assert result["rc"] == 0, done.stderr[-2000:]
            peaks.setdefault(name, []).append(result["peak_mb"])
    for name, (small, large) in peaks.items():
        assert large - small < 60, f"{name}: peak {small:.0f} MB on 4 MB of log, {large:.0f} MB on 60 MB"


def test_a_log_of_junk_is_counted_without_listing_every_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from guardrails_uq.audit import MAX_SKIPPED_LISTED, ReadReport, encode_record, read_audit

    log = tmp_path / "audit.jsonl"
    junk = MAX_SKIPPED_LISTED + 500
    good = b"".join(b"\x1e" + encode_record(d) + b"\n" for d in synthetic_request(1))
    log.write_bytes(good + b"\x1e{not json\n" * junk + good)
    report = ReadReport()
    assert len(list(read_audit(log, report))) == 6
    assert report.torn == junk and len(report.skipped) == MAX_SKIPPED_LISTED, "counted, listed up to a bound"
    assert main(["report", str(log), "-o", str(tmp_path / "r.html")]) == 0
    assert f"{junk} record(s) skipped" in (tmp_path / "r.html").read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["audit", "stats", str(log), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["damaged_lines"] == junk
