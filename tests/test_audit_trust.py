"""The decision log under abuse: writers killed mid-record, non-standard floats, lone surrogates, unusable
paths, and garbage in the middle of a log. Real processes and real files; no mocks."""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails_uq import Action, Decision, open_audit, read_audit
from guardrails_uq.audit import MAX_RECORD_BYTES, ReadReport, _split_records, encode_record
from guardrails_uq.call import Message, ScoredDocument
from guardrails_uq.cli import main
from guardrails_uq.errors import ArtifactError, InputError

RS = b"\x1e"

# Writes small records tagged i=0,1,2... until the stop file appears, then prints how many write() calls returned.
HEALTHY_WRITER = """
import os, sys, time
from guardrails_uq import Action, Decision, open_audit
log, stop = sys.argv[1], sys.argv[2]
audit = open_audit(log)
i = 0
while not os.path.exists(stop):
    audit.write(Decision(policy="p", phase="input", action=Action.ALLOW, metadata={"writer": "healthy", "i": i}))
    i += 1
    time.sleep(0.0005)
audit.close()
print(i, flush=True)
"""

# Imports once, then for every line on stdin forks a victim that appends a multi-MB record in a loop, prints the
# victim's pid and reaps it once the test has killed it (forking avoids paying the import on every round).
VICTIM_SPAWNER = """
import os, sys
from guardrails_uq import Action, Decision, open_audit
big = Decision(policy="p", phase="output", action=Action.ALLOW, message="x" * 4_000_000, metadata={"writer": "victim"})
for _ in sys.stdin:
    pid = os.fork()
    if pid == 0:
        audit = open_audit(sys.argv[1])
        while True:
            audit.write(big)
    print(pid, flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


def _decision(**fields: object) -> Decision:
    return Decision(policy="p", phase="output", action=Action.ALLOW, **fields)  # type: ignore[arg-type]


def _strict_json(text: str | bytes) -> object:
    """json.loads that refuses NaN, Infinity and -Infinity."""

    def refuse(constant: str) -> object:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _raw_records(path: Path) -> list[bytes]:
    """The JSON texts of a log, parsed the RFC 7464 way: split on RS, every complete text ends with LF."""
    data = path.read_bytes()
    assert data.startswith(RS)
    texts = data.split(RS)[1:]
    assert all(text.endswith(b"\n") for text in texts)
    return [text[:-1] for text in texts]


def _kill_mid_write(pid: int, log: Path, size: int) -> None:
    """SIGKILL ``pid`` as soon as the log has grown to ``size`` bytes: the file grows page by page while a big
    write is copied in, so this lands inside the victim's write (a random sleep mostly hits the JSON encoding)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (not log.exists() or log.stat().st_size < size):
        pass
    os.kill(pid, signal.SIGKILL)


# -- 1. a writer killed mid-record never takes another writer's record with it --------------------------------


def _kill_rounds(log: Path, rounds: int, rng: random.Random) -> int:
    """Run the healthy writer while ``rounds`` victims are SIGKILLed mid-write; how many records it wrote."""
    stop = log.with_name("stop")
    with (
        subprocess.Popen(
            [sys.executable, "-c", HEALTHY_WRITER, str(log), str(stop)], stdout=subprocess.PIPE
        ) as healthy,
        subprocess.Popen(
            [sys.executable, "-c", VICTIM_SPAWNER, str(log)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as spawner,
    ):
        assert spawner.stdin is not None and spawner.stdout is not None
        victim = None  # the pid of a victim not yet reaped, killed on the way out if the test fails
        try:
            for _ in range(rounds):
                start = log.stat().st_size if log.exists() else 0
                spawner.stdin.write("go\n")
                spawner.stdin.flush()
                victim = int(spawner.stdout.readline())
                _kill_mid_write(victim, log, start + rng.randrange(64 << 10, 3 << 20))
                assert spawner.stdout.readline().strip() == "reaped"
                victim = None
                time.sleep(0.01)  # the healthy writer appends right behind the torn record
        finally:
            stop.touch()
            if victim is not None:
                os.kill(victim, signal.SIGKILL)
            spawner.kill()
        return int(healthy.communicate(timeout=30)[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_writer_killed_mid_record_never_swallows_another_writers_record(tmp_path: Path) -> None:
    log, rounds = tmp_path / "audit.jsonl", 16
    written = _kill_rounds(log, rounds, random.Random(7))
    report = ReadReport()
    seen = [d.metadata["i"] for d in read_audit(log, report) if d.metadata["writer"] == "healthy"]
    lost = sorted(set(range(written)) - set(seen))  # type: ignore[arg-type]
    print(f"{rounds} rounds: {written} healthy records written, {len(lost)} lost, {report.torn} torn records skipped")
    assert lost == []
    assert seen == list(range(written)), "each healthy record read exactly once, in order"
    assert report.torn >= 1, "at least one kill must land mid-write, or this test proves nothing"


def test_log_is_an_rfc7464_json_text_sequence(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    audit = open_audit(log)
    made = [_decision(metadata={"i": i}) for i in range(3)]
    for decision in made:
        audit.write(decision)
    audit.close()
    assert [_strict_json(text)["id"] for text in _raw_records(log)] == [d.id for d in made]  # type: ignore[index]
    if shutil.which("jq") is None:
        pytest.skip("jq not installed")
    out = subprocess.run(["jq", "--seq", "-c", ".id"], input=log.read_bytes(), capture_output=True, check=True)
    assert [json.loads(line.strip(RS)) for line in out.stdout.splitlines()] == [d.id for d in made]


def test_old_plain_jsonl_logs_still_read_and_can_be_appended_to(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    old = [_decision(metadata={"i": i}) for i in range(3)]
    log.write_text("".join(d.model_dump_json() + "\n" for d in old))
    audit = open_audit(log)
    new = _decision(metadata={"i": 3})
    audit.write(new)
    audit.close()
    report = ReadReport()
    assert [d.id for d in read_audit(log, report)] == [d.id for d in [*old, new]]
    assert report.torn == 0


# -- 2. strict JSON only, and text that is not valid Unicode is still written ---------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".sqlite"])
def test_non_finite_floats_are_written_as_strict_json_and_read_back(tmp_path: Path, suffix: str) -> None:
    nan, inf = float("nan"), float("inf")
    decision = _decision(
        signals={"u.nan": nan, "u.inf": inf, "u.list": [1.0, -inf]},
        evidence={"spans": {"bci": [nan, inf, -inf], "best": nan}},
        timings_ms={"output": nan},
        documents=[ScoredDocument(id="d", score=-inf)],
        metadata={"m": inf},
    )
    log = tmp_path / f"audit{suffix}"
    audit = open_audit(log)
    audit.write(decision)
    audit.close()
    if suffix == ".jsonl":
        (text,) = _raw_records(log)
    else:
        with sqlite3.connect(log) as db:
            (text,) = db.execute("SELECT record FROM decisions").fetchone()
        db.close()
    record = _strict_json(text)
    assert isinstance(record, dict)
    assert record["signals"] == {"u.nan": "NaN", "u.inf": "Infinity", "u.list": [1.0, "-Infinity"]}
    assert record["evidence"] == {"spans": {"bci": ["NaN", "Infinity", "-Infinity"], "best": "NaN"}}
    report = ReadReport()
    (back,) = read_audit(log, report)
    assert report.torn == 0, "a record the writer produced is always readable"
    assert back.id == decision.id
    # float fields read the strings back as the same floats; free-form fields keep the strings
    assert str(back.timings_ms["output"]) == "nan"
    assert back.documents is not None and back.documents[0].score == -inf
    assert back.signals["u.list"] == [1.0, -inf]
    assert back.signals["u.nan"] == "NaN"


@pytest.mark.parametrize("suffix", [".jsonl", ".sqlite"])
def test_lone_surrogates_are_written_as_replacement_characters(tmp_path: Path, suffix: str) -> None:
    decision = Decision(
        policy="p\ud800",
        phase="input",
        action=Action.ABSTAIN,
        rule="r\udfff",
        messages=[Message(role="user", content="a\ud800b")],
        signals={"app.x\udc00": "v\ud800"},
        evidence={"k": {"t\ud800": ["\udbff", "\ud83d\ude00"]}},
        metadata={"m": ("\udfff",)},
    )
    log = tmp_path / f"audit{suffix}"
    audit = open_audit(log)
    audit.write(decision)
    audit.close()
    (back,) = read_audit(log)
    assert back.id == decision.id
    assert back.policy == "p\ufffd" and back.rule == "r\ufffd"
    assert back.messages is not None and back.messages[0].content == "a\ufffdb"
    assert back.signals == {"app.x\ufffd": "v\ufffd"}
    assert back.evidence == {"k": {"t\ufffd": ["\ufffd", "\ufffd\ufffd"]}}
    assert back.metadata == {"m": ["\ufffd"]}


def test_an_oversized_record_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    assert len(encode_record(_decision(message="x" * 1000))) < 2000
    big = _decision(message="x" * (MAX_RECORD_BYTES + 1))
    audit = open_audit(tmp_path / "audit.jsonl")
    with pytest.raises(InputError, match="too large"):
        audit.write(big)
    audit.close()
    assert (tmp_path / "audit.jsonl").stat().st_size == 0


# -- 3. unusable paths raise the library's error, naming the path and the fix ---------------------------------


def _directory(tmp_path: Path, name: str) -> Path:
    (tmp_path / name).mkdir()
    return tmp_path / name


def _text_file(tmp_path: Path, name: str) -> Path:
    (tmp_path / name).write_text("not a database\n" * 100)
    return tmp_path / name


UNUSABLE = {
    "jsonl-is-a-directory": (lambda tmp: _directory(tmp, "audit.jsonl"), "folder"),
    "sqlite-is-a-directory": (lambda tmp: _directory(tmp, "audit.sqlite"), "folder"),
    "jsonl-in-a-missing-folder": (lambda tmp: tmp / "missing" / "audit.jsonl", "create the folder"),
    "sqlite-in-a-missing-folder": (lambda tmp: tmp / "missing" / "audit.sqlite", "create the folder"),
    "sqlite-is-a-text-file": (lambda tmp: _text_file(tmp, "audit.sqlite"), "not a SQLite database"),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE))
def test_open_audit_on_an_unusable_path_raises_artifact_error(tmp_path: Path, case: str) -> None:
    make, fix = UNUSABLE[case]
    path = make(tmp_path)
    with pytest.raises(ArtifactError) as caught:
        open_audit(path)
    assert caught.value.path == str(path)
    assert caught.value.fix and fix in caught.value.fix
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("case", ["jsonl-is-a-directory", "sqlite-is-a-directory", "sqlite-is-a-text-file"])
def test_read_audit_on_an_unusable_path_raises_input_error(tmp_path: Path, case: str) -> None:
    path = UNUSABLE[case][0](tmp_path)
    with pytest.raises(InputError, match="audit log"):
        list(read_audit(path))


def test_read_audit_on_a_database_of_another_app_raises_input_error(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    with pytest.raises(InputError, match="no decisions table"):
        list(read_audit(path))


# -- 4. garbage in the middle of a log: counted, skipped, never raised ----------------------------------------

GARBAGE = {
    "binary-junk": bytes(range(256)) * 4 + b"\xff\xfe\x00",
    "truncated-record": RS + b'{"format": 1, "id": "torn", "policy": "p", "pha',
    "truncated-legacy-line": b'{"format": 1, "id": "torn", "policy": "p", "pha\n',
    "json-but-not-a-decision": RS + b'{"hello": "world"}\n',
    "json-array": RS + b"[1, 2, 3]\n",
    "deeply-nested": RS + b"[" * 100_000 + b"\n",
}


def _log_with_garbage(path: Path, garbage: bytes) -> list[Decision]:
    """Two good records, the garbage, two more good records (written by the library's own writer)."""
    made = [_decision(metadata={"i": i}) for i in range(4)]
    audit = open_audit(path)
    for decision in made[:2]:
        audit.write(decision)
    with open(path, "ab") as handle:
        handle.write(garbage)
    for decision in made[2:]:
        audit.write(decision)
    audit.close()
    return made


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_garbage_in_the_middle_is_skipped_and_counted(tmp_path: Path, case: str) -> None:
    log = tmp_path / "audit.jsonl"
    made = _log_with_garbage(log, GARBAGE[case])
    report = ReadReport()
    assert [d.id for d in read_audit(log, report)] == [d.id for d in made]
    assert report.read == 4
    assert report.torn >= 1
    assert all(line >= 1 for line in report.skipped)


def test_records_with_nan_constants_from_other_writers_are_still_read(tmp_path: Path) -> None:
    """The writer never produces NaN/Infinity, but the reader is lenient, as Python's json is, so that such records
    (hand-written, or from other tools) are not lost."""
    log = tmp_path / "audit.jsonl"
    _log_with_garbage(log, RS + b'{"policy": "p", "phase": "input", "action": "allow", "timings_ms": {"x": NaN}}\n')
    report = ReadReport()
    decisions = list(read_audit(log, report))
    assert len(decisions) == 5 and report.torn == 0
    assert str(decisions[2].timings_ms["x"]) == "nan"


def test_a_complete_record_missing_its_newline_is_torn(tmp_path: Path) -> None:
    """RFC 7464: a text not followed by LF may be truncated, so it is reported, not trusted."""
    log = tmp_path / "audit.jsonl"
    made = _log_with_garbage(log, RS + _decision().model_dump_json().encode())
    report = ReadReport()
    assert [d.id for d in read_audit(log, report)] == [d.id for d in made]
    assert report.torn == 1


def _record_line(decision: Decision) -> bytes:
    return RS + encode_record(decision) + b"\n"


def test_a_record_being_written_at_the_end_is_torn_not_an_error(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    made = _decision()
    log.write_bytes(_record_line(made) + _record_line(_decision())[:-200])
    report = ReadReport()
    assert [d.id for d in read_audit(log, report)] == [made.id]
    assert report.skipped == [2]


def test_garbage_rows_in_sqlite_are_skipped_and_counted(tmp_path: Path) -> None:
    log = tmp_path / "audit.sqlite"
    made = [_decision(metadata={"i": i}) for i in range(3)]
    audit = open_audit(log)
    for decision in made:
        audit.write(decision)
    audit.close()
    with sqlite3.connect(log) as db:
        db.execute("INSERT INTO decisions VALUES ('x', 0, 'p', 'input', 'allow', NULL, '{\"not\": \"a decision\"}')")
        db.execute("INSERT INTO decisions VALUES ('y', 1, 'p', 'input', 'allow', NULL, X'00ff1e')")
    db.close()
    report = ReadReport()
    assert [d.id for d in read_audit(log, report)] == [d.id for d in made]
    assert report.torn == 2


def test_audit_stats_reports_damaged_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.jsonl"
    _log_with_garbage(log, GARBAGE["truncated-record"] + GARBAGE["json-but-not-a-decision"])
    assert main(["audit", "stats", str(log), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] == 4
    assert summary["damaged_lines"] == 2


def test_a_log_of_only_junk_reads_as_empty(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(os.urandom(3_000_000))
    report = ReadReport()
    assert list(read_audit(log, report)) == []
    assert report.torn >= 1


# -- the streaming reader keeps that contract however the file is chunked -------------------------------------


def _reference_split(data: bytes, limit: int) -> list[tuple[int, bytes | None]]:
    """The reader's contract on a whole buffer: fragments between RS/LF; blank ones ignored; one that is longer than
    ``limit``, or started by RS and not ended by LF, is torn (None); any other is parsed."""
    out: list[tuple[int, bytes | None]] = []
    line, framed = 1, False
    pieces = [*re.split(rb"([\x1e\n])", data), b""]  # fragment, delimiter, ..., fragment, end of data
    for fragment, delimiter in zip(pieces[::2], pieces[1::2], strict=True):
        complete = delimiter == b"\n"
        if len(fragment) > limit:
            out.append((line, None))
        elif fragment.strip():
            out.append((line, fragment if complete or not framed else None))
        line, framed = (line + 1, False) if complete else (line, delimiter == RS)
    return out


@settings(max_examples=400, deadline=None)
@given(
    tokens=st.lists(st.sampled_from([RS, b"\n", b"{}", b"x", b"yyyyyyy", b" ", b"\x00\xff"]), max_size=40),
    limit=st.integers(1, 12),
    chunk_size=st.integers(1, 9),
)
def test_streaming_split_matches_the_contract_for_any_chunking(
    tokens: list[bytes], limit: int, chunk_size: int
) -> None:
    data = b"".join(tokens)
    got = list(_split_records(io.BytesIO(data), limit=limit, chunk_size=chunk_size))
    assert got == _reference_split(data, limit)
