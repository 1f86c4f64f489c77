"""Summaries of a decision log in bounded memory, one Decision at a time (``audit stats``, ``report``).

A log can be far larger than memory, and its requests interleave (their Decisions are spread over the log), so
:class:`LogSummary` keeps what grows with the log in a private temporary SQLite database on disk (deleted when
closed; its page cache is capped): each request's verdict state (the same fold as
:attr:`guardrails_uq.audit.RequestRecord.verdict`, :class:`~guardrails_uq.audit.VerdictState`) and every numeric
signal value, from which exact percentiles and histograms are read with an index (the state of the most recent
requests is cached in memory: a log's requests are mostly contiguous). Counters by action, rule and
phase stay in memory: they grow with the number of distinct rule names, not with the log.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .audit import VerdictState
from .decision import Decision

_SEP = "\x1f"
_BATCH = 20_000
CACHE_KIB = 16 << 10
"""The page cache of each temporary database, in KiB."""
CACHED_REQUESTS = 4096
"""Requests whose state is kept in memory (the most recent); older ones are spilled to the database."""


def temp_database() -> sqlite3.Connection:
    """A private temporary SQLite database on disk (SQLite deletes it on close), tuned for bulk writes by one
    thread: no journal, no fsync, a capped page cache, temporary sorts on disk."""
    db = sqlite3.connect("", isolation_level=None)
    for pragma in (f"cache_size=-{CACHE_KIB}", "temp_store=FILE", "journal_mode=OFF", "synchronous=OFF"):
        db.execute(f"PRAGMA {pragma}")
    db.execute("BEGIN")
    return db


@dataclass
class _Entry:
    """A request being summarised: where it first appeared, how many Decisions so far, its verdict state."""

    seq: int
    decisions: int
    state: VerdictState[str]


@dataclass(frozen=True)
class RequestRow:
    """One request of a summarised log: where it first appears, how many Decisions it has, its verdict."""

    request_id: str
    seq: int
    decisions: int
    action: str
    rule_label: str


def _number(value: object) -> float | None:
    """``value`` as a float when it is a number (not a bool, not NaN); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return None if math.isnan(number) else number


class LogSummary:
    """Counts, request verdicts and signal percentiles of the Decisions passed to :meth:`add`."""

    def __init__(self) -> None:
        self.total = 0
        self.by_action: Counter[str] = Counter()
        self.by_rule: Counter[str] = Counter()
        self.by_phase: Counter[str] = Counter()
        self.by_policy: Counter[str] = Counter()
        self.shadow_by_rule: dict[str, Counter[str]] = {}
        self.shadow_changes: Counter[str] = Counter()
        self._db = temp_database()
        self._db.execute(
            "CREATE TABLE requests (id TEXT PRIMARY KEY, seq INTEGER, n INTEGER, escalation TEXT, blocked TEXT, "
            "allowed TEXT)"
        )
        self._db.execute("CREATE TABLE signals (name TEXT, value REAL)")
        self._pending: list[tuple[str, float]] = []
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._spilled = False
        self._requests = 0
        self._indexed = False

    def add(self, decision: Decision) -> None:
        """Count one Decision and fold it into its request's verdict."""
        self.total += 1
        self.by_action[decision.action.value] += 1
        self.by_rule[decision.rule_label] += 1
        self.by_phase[decision.phase] += 1
        self.by_policy[decision.policy] += 1
        if decision.shadow is not None:
            shadow = decision.shadow
            self.shadow_by_rule.setdefault(shadow.label, Counter())[shadow.action.value] += 1
            if shadow.action is not decision.action:
                self.shadow_changes[f"{decision.action.value} -> {shadow.action.value}"] += 1
        entry = self._entry(decision.request_id)
        entry.decisions += 1
        entry.state.add(decision, f"{decision.action.value}{_SEP}{decision.rule_label}")
        pending = self._pending
        for name, value in decision.signals.items():
            if type(value) is float:  # the common case, checked inline (this loop dominates the cost of add)
                if value == value:  # not NaN
                    pending.append((name, value))
            elif (number := _number(value)) is not None:
                pending.append((name, number))
        if len(self._pending) >= _BATCH:
            self._flush()

    def _entry(self, request_id: str) -> _Entry:
        """The request's state: from the in-memory cache of recent requests, else from the database (when it
        was spilled there), else new. The least recent request beyond :data:`CACHED_REQUESTS` is spilled."""
        entry = self._cache.pop(request_id, None)
        if entry is None:
            row = None
            if self._spilled:
                row = self._db.execute(
                    "SELECT seq, n, escalation, blocked, allowed FROM requests WHERE id = ?", (request_id,)
                ).fetchone()
            if row is None:
                entry = _Entry(self._requests, 0, VerdictState[str]())
                self._requests += 1
            else:
                entry = _Entry(row[0], row[1], VerdictState[str](row[2], row[3], row[4]))
        self._cache[request_id] = entry
        if len(self._cache) > CACHED_REQUESTS:
            self._spill(*self._cache.popitem(last=False))
        return entry

    def _spill(self, request_id: str, entry: _Entry) -> None:
        self._spilled = True
        state = entry.state
        self._db.execute(
            "INSERT OR REPLACE INTO requests VALUES (?, ?, ?, ?, ?, ?)",
            (request_id, entry.seq, entry.decisions, state.escalation, state.blocked, state.allowed),
        )

    def _flush(self) -> None:
        self._db.executemany("INSERT INTO signals VALUES (?, ?)", self._pending)
        self._pending.clear()

    def _index(self) -> None:
        if not self._indexed:
            self._flush()
            self._db.execute("CREATE INDEX signal_values ON signals (name, value)")
            self._indexed = True

    @property
    def request_count(self) -> int:
        return self._requests

    def requests(self) -> Iterator[RequestRow]:
        """Every request in order of first appearance, with its verdict (``incomplete`` when no phase decided
        finally)."""
        while self._cache:
            self._spill(*self._cache.popitem(last=False))
        cursor = self._db.execute("SELECT id, seq, n, escalation, blocked, allowed FROM requests ORDER BY seq")
        while rows := cursor.fetchmany(1024):
            for request_id, seq, n, escalation, blocked, allowed in rows:
                verdict = VerdictState[str](escalation, blocked, allowed).verdict
                action, label = verdict.split(_SEP, 1) if verdict is not None else ("incomplete", "(incomplete)")
                yield RequestRow(request_id, seq, n, action, label)

    def signal_names(self) -> list[str]:
        self._index()
        return [name for (name,) in self._db.execute("SELECT DISTINCT name FROM signals ORDER BY name")]

    def percentiles(self, name: str, levels: Iterable[float] = (50, 90, 99)) -> dict[str, float]:
        """``n`` and the linear-interpolated percentiles of signal ``name`` (exact, read through the index)."""
        self._index()
        (n,) = self._db.execute("SELECT count(*) FROM signals WHERE name = ?", (name,)).fetchone()
        result: dict[str, float] = {"n": n}
        for q in levels:
            position = (n - 1) * q / 100.0
            low = math.floor(position)
            high = min(low + 1, n - 1)
            a, b = self._value_at(name, low), self._value_at(name, high)
            result[f"p{q:g}"] = a if position == low or a == b else a + (b - a) * (position - low)
        return result

    def _value_at(self, name: str, offset: int) -> float:
        (value,) = self._db.execute(
            "SELECT value FROM signals WHERE name = ? ORDER BY value LIMIT 1 OFFSET ?", (name, offset)
        ).fetchone()
        return float(value)

    def histogram(self, name: str, bins: int) -> tuple[float, float, list[int]] | None:
        """(low, high, counts of ``bins`` equal bins) of the finite values of signal ``name``; None without any."""
        self._index()
        where = "name = ? AND value BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308"
        low, high = self._db.execute(f"SELECT min(value), max(value) FROM signals WHERE {where}", (name,)).fetchone()
        if low is None:
            return None
        half_span = (high / 2 - low / 2) or 1.0  # halves: high - low overflows for values near the float limits
        counts = [0] * bins
        rows = self._db.execute(
            "SELECT min(?, CAST((value / 2 - ? / 2) / ? * ? AS INTEGER)), count(*) "
            f"FROM signals WHERE {where} GROUP BY 1",
            (bins - 1, low, half_span, bins, name),
        )
        for index, count in rows:
            counts[max(0, min(bins - 1, int(index)))] += count
        return float(low), float(high), counts

    def to_dict(self) -> dict[str, object]:
        """The ``audit stats`` summary: requests (by verdict action and rule), decisions (by action, rule, phase
        and policy), shadow outcomes, and p50/p90/p99 of every numeric signal.

        ``shadow_by_rule`` counts the Decisions that carry a shadow outcome, ``{shadow rule: {action it would
        have taken: count}}`` (the rule ``(default)`` or ``(on_error)`` in a ``mode: shadow`` policy), beside
        ``by_rule``, which counts what was enforced; ``shadow_changes`` counts those whose shadow action differs
        from the enforced one, ``{"enforced -> shadow": count}``: what switching the shadow rules on would change."""
        actions: Counter[str] = Counter()
        rules: Counter[str] = Counter()
        for row in self.requests():
            actions[row.action] += 1
            rules[row.rule_label] += 1
        return {
            "requests": {
                "total": self._requests,
                "by_action": dict(actions.most_common()),
                "by_rule": dict(rules.most_common()),
            },
            "total": self.total,
            "by_action": dict(self.by_action.most_common()),
            "by_rule": dict(self.by_rule.most_common()),
            "by_phase": dict(self.by_phase.most_common()),
            "by_policy": dict(self.by_policy.most_common()),
            "shadow_by_rule": {
                rule: dict(counts.most_common())
                for rule, counts in sorted(self.shadow_by_rule.items(), key=lambda item: -item[1].total())
            },
            "shadow_changes": dict(self.shadow_changes.most_common()),
            "signals": {name: self.percentiles(name) for name in self.signal_names()},
        }

    def close(self) -> None:
        """Close (and so delete) the temporary database."""
        self._db.close()

    def __enter__(self) -> LogSummary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
