"""The decision log: every Decision appended to a JSONL file or a SQLite database.

JSONL: one record per line, written with a single ``write`` on an ``O_APPEND`` descriptor, so concurrent
writers (threads or processes) never interleave inside a line. A process killed mid-write can leave a torn
last line; readers skip it (and report it), and the next writer starts on a fresh line.
SQLite: one row per Decision in WAL mode; each insert is its own transaction.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from .decision import Decision
from .errors import InputError

_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


class AuditLog(Protocol):
    """Something that durably records Decisions. ``write`` must be thread-safe."""

    path: Path

    def write(self, decision: Decision) -> None: ...

    def close(self) -> None: ...


class JsonlAuditLog:
    """Append-only JSONL decision log."""

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._heal_torn_tail()

    def _heal_torn_tail(self) -> None:
        """If a killed writer left a line without its newline, end it so our records start clean."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as handle:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                os.write(self._fd, b"\n")

    def write(self, decision: Decision) -> None:
        line = decision.model_dump_json().encode("utf-8") + b"\n"
        with self._lock:
            os.write(self._fd, line)
            if self.fsync:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __repr__(self) -> str:
        return f"JsonlAuditLog({str(self.path)!r})"


class SqliteAuditLog:
    """Decision log in a SQLite database (WAL mode), queryable with SQL."""

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS decisions (id TEXT PRIMARY KEY, time REAL, policy TEXT, phase TEXT, "
        "action TEXT, rule TEXT, record TEXT NOT NULL)"
    )

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.execute(self._SCHEMA)

    def write(self, decision: Decision) -> None:
        row = (
            decision.id,
            decision.time,
            decision.policy,
            decision.phase,
            decision.action.value,
            decision.rule,
            decision.model_dump_json(),
        )
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SqliteAuditLog({str(self.path)!r})"


def open_audit(path: str | Path, *, fsync: bool = False) -> AuditLog:
    """Open (creating if needed) the log at ``path``: SQLite for .sqlite/.sqlite3/.db, JSONL otherwise."""
    path = Path(path)
    if path.suffix in _SQLITE_SUFFIXES:
        return SqliteAuditLog(path, fsync=fsync)
    return JsonlAuditLog(path, fsync=fsync)


@dataclass
class ReadReport:
    """How many records were read and how many damaged lines were skipped (with their line numbers)."""

    read: int = 0
    skipped: list[int] = field(default_factory=list)


def read_audit(path: str | Path, report: ReadReport | None = None) -> Iterator[Decision]:
    """Every Decision in the log at ``path``, oldest first. Damaged JSONL lines are skipped into ``report``."""
    path = Path(path)
    if not path.exists():
        raise InputError("audit log not found", source=str(path))
    report = report if report is not None else ReadReport()
    if path.suffix in _SQLITE_SUFFIXES:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            for (record,) in db.execute("SELECT record FROM decisions ORDER BY time, rowid"):
                report.read += 1
                yield Decision.model_validate_json(record)
        finally:
            db.close()
        return
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                decision = Decision.model_validate_json(raw)
            except (ValidationError, ValueError):
                report.skipped.append(number)
                continue
            report.read += 1
            yield decision


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of already sorted values."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def stats(decisions: Iterable[Decision]) -> dict[str, object]:
    """Counts by action, by rule and by phase, and p50/p90/p99 of every numeric signal."""
    by_action: Counter[str] = Counter()
    by_rule: Counter[str] = Counter()
    by_phase: Counter[str] = Counter()
    numeric: dict[str, list[float]] = {}
    total = 0
    for decision in decisions:
        total += 1
        by_action[decision.action.value] += 1
        by_rule[decision.rule_label] += 1
        by_phase[decision.phase] += 1
        for name, value in decision.signals.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                continue
            numeric.setdefault(name, []).append(float(value))
    percentiles = {}
    for name, values in sorted(numeric.items()):
        values.sort()
        percentiles[name] = {
            "n": len(values),
            "p50": _percentile(values, 50),
            "p90": _percentile(values, 90),
            "p99": _percentile(values, 99),
        }
    return {
        "total": total,
        "by_action": dict(by_action.most_common()),
        "by_rule": dict(by_rule.most_common()),
        "by_phase": dict(by_phase.most_common()),
        "signals": percentiles,
    }


def dumps_stats(summary: dict[str, object]) -> str:
    """Stats as indented JSON."""
    return json.dumps(summary, indent=2, sort_keys=False)
