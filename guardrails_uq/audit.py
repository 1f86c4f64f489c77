"""The decision log: every Decision appended to a JSON text sequence file or a SQLite database.

**File format (any path not ending in .sqlite/.sqlite3/.db).** An RFC 7464 JSON text sequence
(``application/json-seq``): each record is RS (0x1E), one Decision as compact JSON, LF. A record is appended with a
single ``write`` on an ``O_APPEND`` descriptor, so concurrent writers (threads or processes) never interleave inside
a record. A writer killed in the middle of a large record leaves a torn prefix with no LF; the next record, from any
writer, still starts with its own RS, so readers resynchronise on it: the torn fragment is reported and skipped and
no other record is lost. (Plain JSONL could not do this: the next record landed on the torn line and both were lost.)
The suffix stays ``.jsonl`` so that existing policies keep their ``audit.path``; RS is not JSON whitespace, so read
the file with ``jq --seq``, or with :func:`read_audit`, not with a plain line-by-line JSON parser.
Logs written before this format (plain JSON lines, no RS) are still read, record by record, and appending to one
is safe: each line and each RS-framed record is judged on its own.

**Strict JSON.** Records never contain NaN, Infinity or -Infinity: non-finite floats are written as the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"``. Float fields (``timings_ms``, document scores) read them back as the
same floats; in free-form fields (signals, evidence, metadata) they stay strings (``null`` would have made the
record unreadable wherever a float is required; :mod:`guardrails_uq.jsonsafe`'s null suits responses, not
records that are read back as Decisions). Lone surrogates in text (invalid Unicode, which JSON escapes or a
``surrogateescape`` decoder can produce) are written as U+FFFD, as ``jsonsafe.clean_text`` does on the way in.

**Record size.** A record may be up to :data:`MAX_RECORD_BYTES` (256 MiB); a larger one is refused with InputError
before anything is written. The cap exists so that readers buffer a bounded amount on any input, however damaged,
and everything a writer accepts is readable. It is not small on purpose: no size makes an append atomic against
SIGKILL (even a small record may straddle a page boundary), framing is what makes torn records harmless, and
truncating a large record (a long answer with per-token evidence) would defeat the log's purpose.

**SQLite.** One row per Decision in WAL mode, each insert its own transaction; the ``record`` column holds the same
strict JSON as the file format.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO, Generic, Protocol, TypeVar

import pydantic_core

from .decision import Action, Decision
from .errors import ArtifactError, InputError
from .jsonsafe import clean_text, dumps

_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
RS = b"\x1e"
"""The record separator that starts every record of a JSON text sequence (RFC 7464)."""
MAX_RECORD_BYTES = 256 << 20
"""The largest record, in bytes of JSON, a writer accepts and a reader buffers."""
_READ_CHUNK = 1 << 20
_WRITE_ATTEMPTS = 3
_DELIMITERS = re.compile(rb"[\x1e\n]")
PROGRESS_EVERY = 64 << 20
"""A pass over a log larger than this many bytes reports its progress on stderr every this many bytes."""
MAX_SKIPPED_LISTED = 1000
"""How many positions of damaged records a ReadReport lists (it counts them all)."""


def encode_record(decision: Decision) -> bytes:
    """The Decision as compact, strict UTF-8 JSON (no RS, no LF): non-finite floats as strings, lone surrogates as
    U+FFFD. InputError (nothing written) when it exceeds MAX_RECORD_BYTES."""
    data = decision.model_dump()
    try:
        body = pydantic_core.to_json(data, inf_nan_mode="strings")
    except pydantic_core.PydanticSerializationError:
        body = pydantic_core.to_json(_without_surrogates(data), inf_nan_mode="strings")
    if len(body) > MAX_RECORD_BYTES:
        raise InputError(
            f"decision {decision.id} is too large to log ({len(body)} bytes of JSON, the limit is {MAX_RECORD_BYTES})"
        )
    return body


def _without_surrogates(value: object) -> object:
    """A copy of plain data (dicts, lists, tuples, strings) with every string, keys included, passed through
    :func:`~guardrails_uq.jsonsafe.clean_text`; other values, non-finite floats included, unchanged (unlike
    ``jsonsafe.sanitize``, which makes them null)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_surrogates(v) for v in value]
    return value


class AuditLog(Protocol):
    """Something that durably records Decisions. ``write`` must be thread-safe and either record the whole
    Decision or raise."""

    path: Path

    def write(self, decision: Decision) -> None: ...

    def close(self) -> None: ...


def _unusable(path: Path, exc: BaseException) -> ArtifactError:
    """The ArtifactError for a log that cannot be opened for writing: names the path, the cause and the fix."""
    if path.is_dir():
        fix = f"audit.path names a folder: point it at a file inside it, e.g. {path / 'audit.jsonl'}"
    elif not path.parent.is_dir():
        fix = f"create the folder {path.parent}, or point audit.path elsewhere"
    elif isinstance(exc, PermissionError) or (path.exists() and not os.access(path, os.W_OK)):
        fix = f"make {path} writable by this process, or point audit.path elsewhere"
    elif isinstance(exc, sqlite3.DatabaseError) and path.is_file():
        fix = "the file is not a SQLite database (or is damaged): move it away, or use a .jsonl path"
    else:
        fix = "point audit.path at a writable file"
    return ArtifactError(path, f"cannot open the audit log: {exc}", fix=fix)


class JsonlAuditLog:
    """Append-only JSON text sequence decision log (RFC 7464; see the module docstring)."""

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        """Open ``path`` for appending, creating it if needed. ArtifactError when that is impossible."""
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _unusable(self.path, exc) from exc

    def write(self, decision: Decision) -> None:
        """Append one record (RS, JSON, LF) with one ``write``. A short write (a full disk) leaves a torn fragment
        that readers skip; the record is then written again whole. OSError when that keeps failing."""
        record = b"".join((RS, encode_record(decision), b"\n"))
        with self._lock:
            self._append(record)
            if self.fsync:
                os.fsync(self._fd)

    def _append(self, record: bytes) -> None:
        for _ in range(_WRITE_ATTEMPTS):
            if os.write(self._fd, record) == len(record):
                return
        raise OSError(errno.EIO, f"short writes appending a record to the audit log {self.path}")

    def close(self) -> None:
        """Close the file; idempotent."""
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
        """Open (creating if needed) the database at ``path``. ArtifactError when it cannot be opened or is not a
        SQLite database."""
        self.path = Path(path)
        self._lock = threading.Lock()
        db = None
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            db.execute(self._SCHEMA)
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            raise _unusable(self.path, exc) from exc
        self._db = db

    def write(self, decision: Decision) -> None:
        """Insert (or replace, by id) one row; its ``record`` is the strict JSON of :func:`encode_record`."""
        row = (
            clean_text(decision.id),
            decision.time,
            clean_text(decision.policy),
            decision.phase,
            decision.action.value,
            None if decision.rule is None else clean_text(decision.rule),
            encode_record(decision).decode("utf-8"),
        )
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"SqliteAuditLog({str(self.path)!r})"


def open_audit(path: str | Path, *, fsync: bool = False) -> AuditLog:
    """Open (creating if needed) the log at ``path``: SQLite for .sqlite/.sqlite3/.db, a JSON text sequence
    otherwise. ArtifactError (naming the path and the fix) for a folder, a missing parent folder, a file that is
    not writable, or a SQLite-named file that is not a database."""
    path = Path(path)
    if path.suffix in _SQLITE_SUFFIXES:
        return SqliteAuditLog(path, fsync=fsync)
    return JsonlAuditLog(path, fsync=fsync)


@dataclass
class ReadReport:
    """How many records were read, and where damaged ones (torn, not JSON, not a Decision) were skipped: the line a
    skipped fragment starts on (JSON text sequence / JSONL) or its rowid (SQLite). ``position`` and ``size``:
    bytes read so far and the file's size (SQLite: rows read so far, and 0). Only the first
    :data:`MAX_SKIPPED_LISTED` skipped positions are listed; ``torn`` counts them all."""

    read: int = 0
    skipped: list[int] = field(default_factory=list)
    position: int = 0
    size: int = 0
    skipped_total: int = 0

    def skip(self, where: int) -> None:
        """Count one damaged record at ``where``."""
        self.skipped_total += 1
        if len(self.skipped) < MAX_SKIPPED_LISTED:
            self.skipped.append(where)

    @property
    def torn(self) -> int:
        """How many damaged records were skipped."""
        return self.skipped_total


def read_audit(
    path: str | Path, report: ReadReport | None = None, *, progress: str | None = None
) -> Iterator[Decision]:
    """Every readable Decision in the log at ``path``, in file order (SQLite: by time), streamed: memory does not
    grow with the log. Damaged records are skipped into ``report``, never raised, wherever they are. With
    ``progress`` (a label), a log larger than :data:`PROGRESS_EVERY` bytes reports its progress on stderr every
    that many bytes. InputError only when the log as a whole cannot be read: missing, a folder, not a SQLite
    database, a database without a decisions table."""
    path = Path(path)
    if not path.exists():
        raise InputError("audit log not found", source=str(path))
    report = report if report is not None else ReadReport()
    sqlite = path.suffix in _SQLITE_SUFFIXES
    records = _sqlite_records(path, report) if sqlite else _sequence_records(path, report)
    shown = _Progress(progress, report) if progress and not sqlite else None
    for where, data in records:
        decision = _decode(data)
        if decision is None:
            report.skip(where)
        else:
            report.read += 1
        if shown is not None:
            shown.tick()
        if decision is not None:
            yield decision
    if shown is not None:
        shown.done()


class _Progress:
    """Progress lines on stderr for a long pass over a log file: one every :data:`PROGRESS_EVERY` bytes."""

    def __init__(self, label: str, report: ReadReport) -> None:
        self.label, self.report = label, report
        self.next: int | None = 0  # 0: not started (the file's size is known once reading has begun)

    def tick(self) -> None:
        if self.next == 0:
            self.next = PROGRESS_EVERY if self.report.size > PROGRESS_EVERY else None
        if self.next is not None and self.report.position >= self.next:
            self.next = self.report.position + PROGRESS_EVERY
            self._line()

    def done(self) -> None:
        if self.next:
            self._line()

    def _line(self) -> None:
        report = self.report
        print(
            f"{self.label}: {report.position / 1e6:,.0f} of {report.size / 1e6:,.0f} MB "
            f"({100 * report.position / report.size:.0f}%), {report.read:,} decisions",
            file=sys.stderr,
            flush=True,
        )


def _decode(data: str | bytes | None) -> Decision | None:
    """The Decision in one record's JSON, or None when the record is damaged (``data`` None: torn)."""
    if data is None:
        return None
    try:
        return Decision.model_validate_json(data)
    except ValueError:
        return None


def _unreadable(path: Path, problem: object) -> InputError:
    return InputError(f"cannot read the audit log: {problem}", source=str(path))


def _sqlite_records(path: Path, report: ReadReport) -> Iterator[tuple[int, str | bytes | None]]:
    """(rowid, record column) for every row, by time (None for a record that is not text or a blob).
    InputError when the database cannot be read."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _unreadable(path, exc) from exc
    try:
        try:
            cursor = db.execute("SELECT rowid, record FROM decisions ORDER BY time, rowid")
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise _unreadable(path, "no decisions table: not a guardrails-uq audit database") from exc
            raise _unreadable(path, exc) from exc
        except sqlite3.Error as exc:
            raise _unreadable(path, f"{exc} (not a SQLite database, or damaged)") from exc
        while rows := _fetch(cursor, path):
            report.position += len(rows)
            for rowid, record in rows:
                yield rowid, record if isinstance(record, str | bytes) else None
    finally:
        db.close()


def _fetch(cursor: sqlite3.Cursor, path: Path) -> list[tuple[int, object]]:
    try:
        return cursor.fetchmany(512)
    except sqlite3.Error as exc:
        raise _unreadable(path, exc) from exc


def _sequence_records(path: Path, report: ReadReport) -> Iterator[tuple[int, bytes | None]]:
    """(line, record) for the file at ``path``, as :func:`_split_records`; ``report.position`` follows the bytes
    read. InputError when it cannot be opened."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed by the with below, when the generator is done)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    with handle:
        report.size = os.fstat(handle.fileno()).st_size
        splitter = _Splitter(MAX_RECORD_BYTES)
        for chunk in iter(partial(handle.read, _READ_CHUNK), b""):
            report.position += len(chunk)
            yield from splitter.feed(chunk)
        yield from splitter.finish()


def _split_records(
    handle: BinaryIO, limit: int = MAX_RECORD_BYTES, chunk_size: int = _READ_CHUNK
) -> Iterator[tuple[int, bytes | None]]:
    """Split a stream on RS and LF into fragments and yield (line it starts on, :func:`_fragment_record`) for each
    one that is not blank; a fragment longer than ``limit`` is torn. Holds at most about ``limit`` plus
    ``chunk_size`` bytes, however the stream is damaged."""
    splitter = _Splitter(limit)
    for chunk in iter(partial(handle.read, chunk_size), b""):
        yield from splitter.feed(chunk)
    yield from splitter.finish()


class _Splitter:
    """The state of :func:`_split_records` between chunks: lines are split on LF in C, and a line that is exactly
    one RS-framed record (the common case) is yielded without further work; any other line is split on RS."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.line = 1  # the line the pending bytes belong to
        self.pending: list[bytes] = []  # the unfinished line (or, if ``framed``, fragment) from earlier chunks
        self.size = 0  # bytes in pending
        self.framed = False  # pending starts right after an RS, not at the start of a line
        self.dropping = False  # the current fragment outgrew the limit: skip to the next RS or LF

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes | None]]:
        """(line, record) for every fragment that ends in ``chunk``."""
        if self.dropping:
            match = _DELIMITERS.search(chunk)
            if match is None:
                return
            yield self.line, None
            self.dropping, self.framed, start = False, False, match.start()
            if chunk[start] == 0x0A:
                self.line, start = self.line + 1, start + 1
            chunk = chunk[start:]  # an RS is kept: it starts the next fragment
        *lines, tail = chunk.split(b"\n")
        if lines and (self.pending or self.framed):
            yield from self._line(b"".join([*self.pending, lines.pop(0)]), self.line, self.framed, complete=True)
            self.pending, self.size, self.framed, self.line = [], 0, False, self.line + 1
        line, limit = self.line, self.limit + 1
        for raw in lines:
            if raw[:1] == RS and len(raw) <= limit and raw.find(RS, 1) < 0:
                record = raw[1:]
                if record and not record.isspace():
                    yield line, record
            else:
                yield from self._line(raw, line, framed=False, complete=True)
            line += 1
        self.line = line
        if tail:
            self.pending.append(tail)
            self.size += len(tail)
            if self.size > self.limit:
                yield from self._compact()

    def finish(self) -> Iterator[tuple[int, bytes | None]]:
        """The last, unfinished fragments at the end of the stream."""
        if self.dropping:
            yield self.line, None
        elif self.pending or self.framed:
            yield from self._line(b"".join(self.pending), self.line, self.framed, complete=False)

    def _compact(self) -> Iterator[tuple[int, bytes | None]]:
        """Emit the finished fragments of an over-long unfinished line; keep only the one after its last RS,
        or drop that too when it alone is over the limit."""
        joined = b"".join(self.pending)
        cut = joined.rfind(RS)
        if cut >= 0:
            yield from self._line(joined[:cut], self.line, self.framed, complete=False)
            joined, self.framed = joined[cut + 1 :], True
        if len(joined) > self.limit:
            self.pending, self.size, self.dropping = [], 0, True
        else:
            self.pending, self.size = [joined], len(joined)

    def _line(self, text: bytes, line: int, framed: bool, complete: bool) -> Iterator[tuple[int, bytes | None]]:
        """The fragments of ``text`` split on RS; the first starts a line unless ``framed``; the last ends with LF
        when ``complete``, the others all end with RS."""
        parts = text.split(RS)
        last = len(parts) - 1
        for i, part in enumerate(parts):
            data = None if len(part) > self.limit else part
            record = _fragment_record(data, framed or i > 0, complete and i == last)
            if record is None or record:
                yield line, record


def _fragment_record(data: bytes | None, framed: bool, complete: bool) -> bytes | None:
    """What one fragment holds: its JSON to parse; None when it cannot be a whole record (``data`` None: it was
    oversized; or started by RS but not ended by LF: torn, RFC 7464); b"" when blank (ignored, as RFC 7464 ignores
    consecutive RS). A fragment not started by RS is a line of an old plain-JSONL log: its parse decides."""
    if data is None:
        return None
    if not data or data.isspace():
        return b""
    return data if complete or not framed else None


T = TypeVar("T")


@dataclass
class VerdictState(Generic[T]):
    """What a request got, folded one Decision at a time (each Decision stands for an item ``T``: the Decision
    itself, or a compact summary of it): the outcome of its last escalation when it escalated, else its first
    final Decision that is not allow (a block, a replaced choice), else its last final allow; None when no
    phase decided finally. The one definition of a verdict, for :class:`RequestRecord` and for streaming
    summaries (:mod:`guardrails_uq.audit_stats`)."""

    escalation: T | None = None
    blocked: T | None = None
    allowed: T | None = None

    def add(self, decision: Decision, item: T) -> None:
        """Fold in ``decision`` (standing for ``item``), the next Decision of the request in log order."""
        if not decision.final:
            return
        if "escalation" in decision.evidence:  # the escalation's outcome (its answer, or its refusal)
            self.escalation = item
        if decision.action is not Action.ALLOW:
            if self.blocked is None:
                self.blocked = item
        else:
            self.allowed = item

    @property
    def verdict(self) -> T | None:
        if self.escalation is not None:
            return self.escalation
        return self.blocked if self.blocked is not None else self.allowed


@dataclass
class RequestRecord:
    """Every logged Decision of one request (same ``request_id``), in log order."""

    request_id: str
    decisions: list[Decision] = field(default_factory=list)

    @property
    def verdict(self) -> Decision | None:
        """What the request got: the outcome of its escalation when it escalated, else its first final
        Decision that is not allow (a block, a replaced choice), else its last final allow; None when no phase decided finally (a provisional pass only, e.g. a
        client that went away, or an app that never ran the output phase)."""
        state = VerdictState[Decision]()
        for decision in self.decisions:
            state.add(decision, decision)
        return state.verdict

    @property
    def action(self) -> str:
        """The verdict's action, or ``incomplete``."""
        verdict = self.verdict
        return verdict.action.value if verdict is not None else "incomplete"

    @property
    def rule_label(self) -> str:
        verdict = self.verdict
        return verdict.rule_label if verdict is not None else "(incomplete)"


def group_requests(decisions: Iterable[Decision]) -> list[RequestRecord]:
    """Decisions joined by ``request_id``, requests in order of first appearance (logs written before request
    ids existed give one request per Decision)."""
    requests: dict[str, RequestRecord] = {}
    for decision in decisions:
        requests.setdefault(decision.request_id, RequestRecord(decision.request_id)).decisions.append(decision)
    return list(requests.values())


class PolicyFilter:
    """Keeps the Decisions of the named policies (a log shared by several tenants' policies); remembers every
    policy it saw, so a caller can say which exist when a name matched nothing. ``names`` empty: keep all."""

    def __init__(self, names: Iterable[str] | None = None) -> None:
        self.names = frozenset(names or ())
        self.seen: set[str] = set()

    def __call__(self, decisions: Iterable[Decision]) -> Iterator[Decision]:
        for decision in decisions:
            self.seen.add(decision.policy)
            if not self.names or decision.policy in self.names:
                yield decision

    def unmatched(self) -> list[str]:
        """The requested names no Decision had (a typo, or the wrong log)."""
        return sorted(self.names - self.seen)

    def problem(self, log: str | Path) -> str | None:
        """The error to print when a requested name matched nothing, naming the policies the log holds."""
        missing = self.unmatched()
        if not missing:
            return None
        found = ", ".join(sorted(self.seen)) or "none"
        return f"{log}: no decision of policy {', '.join(missing)} (policies in the log: {found}); fix --policy"


def stats(decisions: Iterable[Decision]) -> dict[str, object]:
    """Requests (by verdict action and deciding rule), decisions (by action, rule and phase), and p50/p90/p99
    of every numeric signal; streamed through :class:`~guardrails_uq.audit_stats.LogSummary` (bounded memory:
    ``decisions`` is consumed once and nothing of it is kept in memory)."""
    from .audit_stats import LogSummary

    with LogSummary() as summary:
        for decision in decisions:
            summary.add(decision)
        return summary.to_dict()


def dumps_stats(summary: dict[str, object]) -> str:
    """Stats as indented strict JSON (a non-finite number, e.g. a percentile of an infinite signal, is null)."""
    return dumps(summary, indent=2, sort_keys=False)
