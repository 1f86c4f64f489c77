"""Hostile policies fail fast with a PolicyError naming file, line and fix; they never hang or crash the loader.

Every test bounds its own runtime (pytest-timeout, thread method: a hang inside the CEL engine or libyaml holds
the GIL, so a signal could not interrupt it), and the ones about cost also assert how long loading took.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cel
import pytest
from conftest import APP_POLICY
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails_uq import Guard, PolicyError, load_policy, loads_policy
from guardrails_uq.cli import main
from guardrails_uq.policy import decide, run_cases
from guardrails_uq.policy.analysis import (
    ALLOWED_FUNCTIONS,
    MACROS,
    MAX_COMPREHENSION_NESTING,
    MAX_CONDITION_CHARS,
    MAX_COST,
    MAX_DEPTH,
    analyze,
    regex_cost,
)
from guardrails_uq.policy.loader import MAX_POLICY_CONDITION_CHARS, MAX_POLICY_COST, MAX_RULES
from guardrails_uq.policy.rules import compile_rule
from guardrails_uq.policy.schema import Rule
from guardrails_uq.policy.source import MAX_YAML_BYTES, MAX_YAML_DEPTH

pytestmark = pytest.mark.timeout(20, method="thread")

#: Loading a hostile policy must finish within this many seconds (the old loader took from 20 s to hours).
FAST = 5.0

POLICIES = Path(__file__).parent.parent / "policies"


@contextmanager
def fast(limit: float = FAST) -> Iterator[None]:
    """Fail when the block takes longer than ``limit`` seconds."""
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    assert elapsed < limit, f"took {elapsed:.1f} s (limit {limit} s)"


def _policy(*whens: str, signals: str = "{app.x: number, app.s: string, app.l: list}") -> str:
    rules = "\n".join(
        f"  - {{name: r{i}, at: input, when: {_quoted(when)}, action: abstain}}" for i, when in enumerate(whens)
    )
    return f"version: 1\nname: hostile\nsignals: {signals}\nrules:\n{rules}\n"


def _quoted(when: str) -> str:
    """A YAML single-quoted scalar (no escapes inside, so CEL's backslashes pass through unchanged)."""
    return "'" + when.replace("'", "''") + "'"


def _error(write_policy: Callable[..., Path], text: str) -> PolicyError:
    with fast(), pytest.raises(PolicyError) as info:
        load_policy(write_policy(text))
    return info.value


def _literal(n: int) -> str:
    return "[" + ",".join(str(i) for i in range(n)) + "]"


# -- YAML ---------------------------------------------------------------------------------------------------

ALIAS_BOMB = "version: 1\nname: bomb\na: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_alias_bomb_is_refused_before_it_expands(write_policy) -> None:
    assert len(ALIAS_BOMB) < 500
    err = _error(write_policy, ALIAS_BOMB)
    assert "anchors and aliases" in str(err)
    assert err.line == 3 and err.file and err.file.endswith("policy.yaml")
    assert err.fix == "policies may not use YAML anchors/aliases; write the value out"


def test_alias_bomb_fails_fast_in_guard_and_policy_check(write_policy, capsys) -> None:
    path = write_policy(ALIAS_BOMB)
    with fast(), pytest.raises(PolicyError, match="anchors and aliases"):
        Guard.from_policy(path, audit=False)
    with fast():
        assert main(["policy", "check", str(path)]) == 2
    assert "policy.yaml:3: YAML anchors and aliases" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nname: &n x\n",  # an anchor alone
        "version: 1\nname: x\nbase: &b {action: abstain}\nrules:\n  - {<<: *b, name: r, at: input, when: 'true'}\n",
    ],
)
def test_any_anchor_or_alias_is_refused(write_policy, text: str) -> None:
    assert "anchors and aliases" in str(_error(write_policy, text))


def test_aliases_are_refused_in_cases_files_too(write_policy, tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text("signals: &s {app.toxicity: 0.9}\ncases:\n  - {name: a, signals: *s, expect: abstain}\n")
    with fast(), pytest.raises(PolicyError, match="anchors and aliases") as info:
        run_cases(load_policy(write_policy(APP_POLICY)), cases)
    assert info.value.line == 1 and info.value.file == str(cases)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("!!python/object/apply:os.system ['echo pwned']", "!!python/object/apply:os.system"),
        ("!!python/name:os.system", "!!python/name:os.system"),
        ("!!binary aGVsbG8=", "!!binary"),
        ("!!set {a, b}", "!!set"),
        ("!custom x", "!custom"),
    ],
)
def test_yaml_tags_are_refused(write_policy, value: str, shown: str) -> None:
    err = _error(write_policy, f"version: 1\nname: {value}\n")
    assert f"YAML tag {shown} is not allowed" in str(err)
    assert err.line == 2


@pytest.mark.parametrize("depth", [MAX_YAML_DEPTH + 1, 2_000, 10_000])
def test_deep_flow_collections_are_a_policy_error(write_policy, depth: int) -> None:
    err = _error(write_policy, "version: 1\nname: deep\nx: " + "[" * depth + "]" * depth + "\n")
    assert f"nested more than {MAX_YAML_DEPTH} levels deep" in str(err)
    assert err.line == 3


def test_deep_block_collections_are_a_policy_error(write_policy) -> None:
    text = "version: 1\nname: deep\nx:\n" + "".join("  " * i + "-\n" for i in range(200))
    assert "nested more than" in str(_error(write_policy, text))


def test_oversize_policy_file_is_refused(write_policy) -> None:
    rule = "  - {name: r%d, at: input, when: 'app.x > %d.0', action: abstain}\n"
    text = _policy().replace("rules:\n", "rules:\n" + "".join(rule % (i, i) for i in range(MAX_YAML_BYTES // 40)))
    assert len(text) > MAX_YAML_BYTES
    err = _error(write_policy, text)
    assert "file too large" in str(err) and "1024 KiB" in str(err)
    with fast(), pytest.raises(PolicyError, match="file too large"):
        loads_policy(text)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_an_endless_file_is_refused_without_reading_it_all() -> None:
    with fast(), pytest.raises(PolicyError, match="file too large"):
        load_policy("/dev/zero")


# -- CEL: cost, length, nesting, rule count -------------------------------------------------------------------


def test_nested_comprehensions_are_refused_quickly(write_policy) -> None:
    items = _literal(40)
    when = f"{items}.all(a, {items}.all(b, {items}.exists(c, c == a + b)))"
    err = _error(write_policy, _policy(when))
    assert f"comprehensions nest more than {MAX_COMPREHENSION_NESTING} deep" in str(err)
    assert err.line == 5 and err.rule == "r0"
    assert "^" in str(err)  # the caret points at the innermost comprehension


@pytest.mark.parametrize(
    "when",
    [
        "size({L}.map(a, {L}.map(b, {L}))) > 0",  # builds a million values: 10 s in the engine
        "size({L}.map(a, {L}).map(b, b).map(c, c)) > 0",  # copies big lists quadratically
        "{L}.all(a, {L}.all(b, a != b || app.x > 0.0))",
    ],
)
def test_costly_conditions_are_refused_without_running_them(write_policy, when: str) -> None:
    items = "[" + ",".join(["1"] * (100 if "map(b" in when else 400)) + "]"
    err = _error(write_policy, _policy(when.replace("{L}", items)))
    assert "may take too long to evaluate" in str(err)
    assert f"limit {MAX_COST:,}" in str(err)
    assert err.line == 5 and err.rule == "r0"


def test_regexes_that_take_long_to_compile_are_refused(write_policy) -> None:
    err = _error(write_policy, _policy(r'app.s.matches("\\w{300}")'))
    assert "may take too long" in str(err)
    assert "matches" in (err.detail or "")


def test_regex_pattern_must_be_a_literal(write_policy) -> None:
    err = _error(write_policy, _policy("app.l.exists(p, app.s.matches(p))", signals="{app.s: string, app.l: list}"))
    assert "matches() needs a literal pattern" in str(err)


def test_regex_cost_counts_expanded_repetitions() -> None:
    assert regex_cost(r"\d{3}-\d{2}-\d{4}") < 20_000
    assert regex_cost(r"(\w{10}){10}") == 100 * regex_cost(r"\w")
    assert regex_cost(r"a{2,}") == 3 * regex_cost("a")


def test_long_conditions_are_refused_before_compiling(write_policy) -> None:
    when = f"app.x in {_literal(MAX_CONDITION_CHARS)}"
    err = _error(write_policy, _policy(when))
    assert f"characters long (limit {MAX_CONDITION_CHARS})" in str(err)
    assert err.line == 5


@pytest.mark.parametrize(
    "when",
    [
        "(" * 40 + "app.x" + ")" * 40 + " > 1.0",
        "app.x" + ".y" * 40 + " > 1",
        "[" * 40 + "app.x" + "]" * 40 + " == []",
    ],
)
def test_deeply_nested_conditions_are_refused(write_policy, when: str) -> None:
    err = _error(write_policy, _policy(when))
    assert f"nests more than {MAX_DEPTH} levels deep" in str(err) or "CEL syntax error" in str(err)
    assert err.line == 5


def test_long_chains_of_one_operator_are_not_deep(write_policy) -> None:
    when = " || ".join(f"app.x == {i}.0" for i in range(120))
    assert len(when) < MAX_CONDITION_CHARS
    load_policy(write_policy(_policy(when)))


def test_too_many_rules(write_policy) -> None:
    err = _error(write_policy, _policy(*(f"app.x > {i}.0" for i in range(MAX_RULES + 1))))
    assert f"{MAX_RULES + 1} rules (limit {MAX_RULES})" in str(err)
    assert err.line == 5 + MAX_RULES


def test_too_many_characters_of_conditions(write_policy) -> None:
    whens = [f"app.x in {_literal(400)} || app.x == {i}.0" for i in range(MAX_POLICY_CONDITION_CHARS // 1500 + 1)]
    err = _error(write_policy, _policy(*whens))
    assert "characters long together" in str(err)
    assert err.rule is not None


def test_rules_that_are_costly_together_are_refused_quickly(write_policy) -> None:
    items = "[" + ",".join(["1"] * 240) + "]"
    whens = [f"{items}.all(a, {items}.all(b, a != b || app.x > {i}.0))" for i in range(20)]
    assert MAX_COST > analyze(whens[0]).cost > MAX_POLICY_COST / 20
    err = _error(write_policy, _policy(*whens))
    assert "may take too long to evaluate together" in str(err)


def test_many_long_rules_load_and_decide_like_a_loop(write_policy) -> None:
    """More rules than one fused program holds, some of them as long as allowed: no engine crash, same answers."""
    long = f"app.x in {_literal(450)} && app.x < 0.0"
    whens = [long + f" || app.x == {i}.0" if i % 10 == 0 else f"app.x == {i}.0" for i in range(MAX_RULES)]
    with fast():
        policy = load_policy(write_policy(_policy(*whens)))
    for x in (0.0, 5.0, 30.0, 77.0, 255.0, 300.0):
        expected = f"r{int(x)}" if x < MAX_RULES else None
        assert decide(policy, {"app.x": x}, ["input"]).rule == expected


# -- CEL: functions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "message", "hint"),
    [
        ("nosuchfn(app.x) > 1.0", "unknown CEL function 'nosuchfn'", "supported: "),
        ("sise(app.l) > 1", "unknown CEL function 'sise'", "did you mean 'size'?"),
        ("len(app.l) > 1", "unknown CEL function 'len'", "did you mean size?"),
        ('app.s.startswith("a")', "unknown CEL function 'startswith'", "did you mean 'startsWith'?"),
        ("max(app.x, 1.0) > 2.0", "unknown CEL function 'max'", ""),
        ('app.s.lowerAscii() == "a"', "unknown CEL function 'lowerAscii'", ""),
        ('matches(app.s, "a")', "unknown CEL function 'matches'", "write x.matches(...)"),
        ("app.l.exist(x, x > 1)", "unknown CEL function 'exist'", "did you mean 'exists'?"),
        ("exists(app.l, x, x > 1)", "unknown CEL function 'exists'", "list.exists(x, condition)"),
        ("app.l.all(x)", "all() takes a variable name and a condition", "list.all(x, x > 0)"),
    ],
)
def test_unknown_functions_are_refused_at_load(write_policy, when: str, message: str, hint: str) -> None:
    err = _error(write_policy, _policy(when))
    assert message in str(err)
    assert hint in (err.fix or "")
    assert err.line == 5 and err.rule == "r0"
    assert "^" in (err.detail or "")


#: One condition per allowed function or macro; each must run on the engine (checked by experiment, not trust).
ALLOWED_EXAMPLES = {
    "size": 'size([1]) == 1 && "ab".size() == 2',
    "int": 'int("3") == 3',
    "uint": "uint(1) == 1u",
    "double": "double(1) == 1.0",
    "string": 'string(1) == "1"',
    "bytes": 'bytes("a") == b"a"',
    "type": "type(1) == type(2)",
    "dyn": "dyn(1) == 1",
    "timestamp": 'timestamp("2020-01-01T00:00:00Z") < timestamp("2021-01-01T00:00:00Z")',
    "duration": 'duration("1s") < duration("2s")',
    "contains": '"abc".contains("b")',
    "startsWith": '"abc".startsWith("a")',
    "endsWith": '"abc".endsWith("c")',
    "matches": '"abc".matches("^a.c$")',
    "has": 'has({"a": 1}.a)',
    "all": "[1, 2].all(x, x > 0)",
    "exists": "[1, 2].exists(x, x > 1)",
    "exists_one": "[1, 2].exists_one(x, x > 1)",
    "map": "[1, 2].map(x, x * 2) == [2, 4] && [1, 2].map(x, x > 1, x) == [2]",
    "filter": "[1, 2].filter(x, x > 1) == [2]",
    **{
        f"get{part}": f'timestamp("2020-01-01T00:00:00Z").get{part}() >= 0'
        for part in ("FullYear", "Month", "Date", "DayOfMonth", "DayOfWeek", "DayOfYear", "Hours", "Minutes")
    },
    "getSeconds": 'duration("3s").getSeconds() == 3',
    "getMilliseconds": 'duration("1s").getMilliseconds() == 1000',
}


def test_every_allowed_function_runs_on_the_engine() -> None:
    assert set(ALLOWED_EXAMPLES) == ALLOWED_FUNCTIONS
    for name, when in ALLOWED_EXAMPLES.items():
        assert name in analyze(when).functions
        compiled = compile_rule(Rule(name=name, at="input", when=when, action="allow"), file=None, line=None)
        assert compiled.program.execute({}) is True, name


_ATOMS = ["1", "-2", "3u", "0x1F", "1.5", ".5", "1e3", "true", "null", '"a"', "'b'", 'r"\\d"', 'b"x"']
_ATOMS += ["'''t'''", '"\\""', "app.x", "app.l", "x", "[]", "[,]", "{}", "has(app.x.y)"]
_CEL = st.recursive(
    st.sampled_from(_ATOMS),
    lambda inner: st.one_of(
        st.tuples(
            inner, st.sampled_from(["+", "-", "*", "/", "%", "==", "!=", "<", ">=", "&&", "||", " in "]), inner
        ).map("".join),
        st.tuples(st.sampled_from(["!", "-", "!!"]), inner).map("".join),
        st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} ? {t[1]} : {t[2]}"),
        inner.map(lambda e: f"({e})"),
        st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(inner, inner), max_size=2).map(lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
        st.tuples(st.sampled_from(["size", "int", "string", "dyn"]), inner).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(inner, st.sampled_from(["size()", 'contains("a")', 'matches("a+")', "y", "z.w"])).map(".".join),
        st.tuples(inner, st.sampled_from(sorted(MACROS)), inner).map(lambda t: f"{t[0]}.{t[1]}(v, {t[2]})"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(inner, st.sampled_from([" ", "\n  ", " // note\n"])).map("".join),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(_CEL)
def test_whatever_the_engine_compiles_the_checker_can_read(source: str) -> None:
    """No syntax slips past the limits: a condition the engine accepts is never one the checker cannot read."""
    try:
        cel.compile(source)
    except Exception:
        return
    try:
        analyze(source)
    except PolicyError as exc:
        assert "cannot analyse" not in exc.problem and "unexpected character" not in exc.problem, source


# -- the limits leave real policies alone -----------------------------------------------------------------

REALISTIC = [
    'guidelines.count > 0 && guidelines.top_score > 0.37 && guidelines.categories[0] != "quality"',
    "uncertainty.available && uncertainty.mean_nll > 0.9",
    "!uncertainty.available",
    '"weapons" in guidelines.categories && guidelines.top_score > 0.45',
    "guidelines.categories.exists(c, c in [" + ", ".join(f'"category-{i}"' for i in range(40)) + "])",
    "guidelines.ids.exists(i, guidelines.categories.all(c, c != i))",
    "size(guidelines.ids) > 2 ? guidelines.top_score > 0.5 : guidelines.top_score > 0.7",
    r'guidelines.categories.exists(c, c.matches("^(?i)[a-z]+-\\d{3}-\\d{2}-\\d{4}$"))',
    'guidelines.categories.filter(c, c.startsWith("pii")).map(c, size(c)).exists(n, n > 3)',
    'has(guidelines.ids) && int(guidelines.top_score * 100.0) > 40 && string(guidelines.count) != "0"',
    "// a comment\nguidelines.count >= 0x2 && guidelines.top_score > .5e-1",
]


def test_realistic_conditions_fit_the_limits_with_room() -> None:
    for when in REALISTIC:
        assert cel.compile(when)
        analysis = analyze(when)
        assert analysis.cost < MAX_COST // 20, when
        assert analysis.depth <= MAX_DEPTH // 2, when


@pytest.mark.parametrize("name", ["demo.yaml", "starter.yaml"])
def test_shipped_policies_load_fast(name: str) -> None:
    with fast(1.0):
        policy = load_policy(POLICIES / name)
    assert all(r.cost < MAX_COST // 100 for phase in policy.phases.values() for r in phase.rules)


# -- audit.path --------------------------------------------------------------------------------------------


def _audit(write_policy, path: str) -> PolicyError:
    err = _error(write_policy, APP_POLICY + f"audit: {{path: {path!r}}}\n")
    assert err.problem.startswith("audit.path: ")
    assert err.line == 9 and err.fix
    return err


def test_audit_path_that_is_a_folder(write_policy, tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    err = _audit(write_policy, "logs")
    assert "is a folder" in str(err) and "audit.jsonl" in (err.fix or "")


def test_audit_path_under_a_file(write_policy, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert "is not a folder" in str(_audit(write_policy, "notes.txt/audit.jsonl"))


def test_audit_folder_must_be_writable(write_policy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ro").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p).name == "ro" else real_access(p, mode))
    assert "folder" in str(_audit(write_policy, "ro/audit.jsonl")) and "not writable" in str(
        _audit(write_policy, "ro/audit.jsonl")
    )


def test_audit_file_must_be_writable(write_policy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "audit.jsonl").write_text("")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p).suffix == ".jsonl" else real_access(p, mode))
    assert "audit.jsonl is not writable" in str(_audit(write_policy, "audit.jsonl"))


@pytest.mark.parametrize("name", ["audit.sqlite", "audit.db", "audit.sqlite3"])
def test_sqlite_audit_path_that_is_not_a_database(write_policy, tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text('{"not": "a database"}\n')
    err = _audit(write_policy, name)
    assert "is not a SQLite database" in str(err)
    assert ".jsonl" in (err.fix or "")


def test_good_audit_paths_load_and_nothing_is_created(write_policy, tmp_path: Path) -> None:
    (tmp_path / "empty.sqlite").write_bytes(b"")
    with sqlite3.connect(tmp_path / "real.db") as db:
        db.execute("create table t (x)")
    db.close()
    (tmp_path / "old.jsonl").write_text('{"a": 1}\n')
    for name in ("empty.sqlite", "real.db", "old.jsonl", "new.jsonl", "new.sqlite"):
        load_policy(write_policy(APP_POLICY + f"audit: {{path: {name}}}\n"))
    assert not (tmp_path / "new.jsonl").exists() and not (tmp_path / "new.sqlite").exists()


def test_policy_check_reports_a_bad_audit_path(write_policy, tmp_path: Path, capsys) -> None:
    (tmp_path / "audit.db").write_text("hello")
    assert main(["policy", "check", str(write_policy(APP_POLICY + "audit: {path: audit.db}\n"))]) == 2
    err = capsys.readouterr().err
    assert "policy.yaml:9: audit.path:" in err and "not a SQLite database" in err
