"""CEL rules: compiled once at load, evaluated per phase with one CEL call.

The rules of a phase are fused into one CEL program ``r0 ? 0 : r1 ? 1 : ... : -1`` that returns the index
of the first matching rule: the signals cross into CEL once per phase instead of once per rule. CEL's
ternary evaluates conditions in order and stops at the first true one, which is exactly "first match
decides". When the fused program fails, rules are re-run one by one to name the rule that failed.
A phase with more than FUSE_CHUNK rules gets one fused program per FUSE_CHUNK rules.

Shadow rules (``mode: shadow``) sit in the same order: :meth:`PhaseRules.match` returns the first matching
enforced rule and the first shadow rule that would have decided before it (see the README's "Shadow mode").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cel

from ..errors import PolicyError, RuleEvaluationError
from ..types import Phase, SignalMap
from .analysis import GLOBAL_FUNCTIONS, MEMBER_FUNCTIONS, Analysis, analyze, check_length
from .schema import Rule

_STRING_LITERAL = re.compile(
    r'[rRbB]{0,2}("""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\')'
)
_REFERENCE = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\b((?:\.[A-Za-z_]\w*\b)*)(?!\s*\()")
_COMPREHENSION_VAR = re.compile(r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_]\w*)\s*,")
_CEL_WORDS = frozenset({"true", "false", "null", "in"})

#: Rules per fused program. The engine's parser gives up at about 50 chained ternaries, and a program over
#: 64K characters with a syntax error crashes it (a Rust panic): 24 rules of at most MAX_CONDITION_CHARS stay
#: under both.
FUSE_CHUNK = 24
#: What the engine reports as called (Program.functions()) for allowed conditions: functions, and operators and
#: expanded macros under their internal names. A second, independent check beside .analysis.
_ENGINE_NAMES = GLOBAL_FUNCTIONS | MEMBER_FUNCTIONS | {
    "!_", "-_", "@in", "@not_strictly_false", "_?_:_", "_[_]", "_&&_", "_||_",
    "_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_", "_+_", "_-_", "_*_", "_/_", "_%_",
}  # fmt: skip


def signal_references(source: str) -> list[str]:
    """Signal names an expression reads, in order of first use (``ns.name``; deeper access is trimmed).

    A bare identifier that is not a comprehension variable is returned as is, so the linter can reject it.
    """
    without_strings = _STRING_LITERAL.sub('""', source)
    local_vars = set(_COMPREHENSION_VAR.findall(without_strings))
    found: dict[str, None] = {}
    for match in _REFERENCE.finditer(without_strings):
        root, rest = match.group(1), match.group(2)
        if root in _CEL_WORDS or root in local_vars:
            continue
        parts = [root, *[p for p in rest.split(".") if p]]
        found[".".join(parts[:2])] = None
    return list(found)


def nest(signals: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Turn flat ``{"ns.name": v}`` into CEL's ``{"ns": {"name": v}}``."""
    context: dict[str, dict[str, Any]] = {}
    for name, value in signals.items():
        namespace, _, leaf = name.partition(".")
        context.setdefault(namespace, {})[leaf] = value
    return context


def _caret(source: str, message: str) -> str:
    """Keep the parser's caret lines (CEL reports them) as the error's detail."""
    lines = [line for line in message.splitlines() if line.startswith("|")]
    if lines:
        return "\n".join("    " + line for line in lines)
    return "    | " + source


@dataclass(frozen=True)
class CompiledRule:
    """A rule with its compiled CEL program, the signals it reads and its YAML line."""

    rule: Rule
    program: Any
    reads: tuple[str, ...]
    line: int | None
    cost: int = 0
    shadow: bool = False  # evaluated and recorded, never enforced

    @property
    def name(self) -> str:
        return self.rule.name

    def evaluate(self, context: Mapping[str, Any], file: str | None) -> bool:
        """True when the condition holds; RuleEvaluationError when it fails or is not a bool."""
        try:
            result = self.program.execute(context)
        except Exception as exc:  # CEL raises KeyError, TypeError, RuntimeError, ZeroDivisionError...
            raise RuleEvaluationError(
                f"condition failed: {type(exc).__name__}: {exc}",
                file=file,
                line=self.line,
                rule=self.name,
                fix="check that the signals it reads are produced in this phase and have the types it expects",
            ) from exc
        if not isinstance(result, bool):
            raise RuleEvaluationError(
                f"condition returned {type(result).__name__} {result!r}, not a bool",
                file=file,
                line=self.line,
                rule=self.name,
                fix="write a comparison, e.g. 'provenance.bci_max > 20.0'",
            )
        return result


def compile_rule(rule: Rule, *, file: str | None, line: int | None) -> CompiledRule:
    """Compile one rule's condition and hold it to the limits of :mod:`.analysis`, without evaluating it.

    A syntax error is a PolicyError with the caret under the mistake; so is a condition that is too long, too
    deep, may cost too much to evaluate, or calls a function the engine does not implement.
    """
    try:
        check_length(rule.when)  # before the engine parses it
        program = _compile(rule.when)
        analysis = analyze(rule.when)
        _check_engine_functions(program, analysis)
    except PolicyError as exc:
        raise PolicyError(exc.problem, file=file, line=line, rule=rule.name, detail=exc.detail, fix=exc.fix) from None
    return CompiledRule(
        rule=rule, program=program, reads=tuple(signal_references(rule.when)), line=line, cost=analysis.cost
    )


def _compile(source: str) -> Any:
    try:
        return cel.compile(source)
    except Exception as exc:
        raise PolicyError(
            "CEL syntax error in 'when'",
            detail=_caret(source, str(exc)),
            fix='see https://github.com/google/cel-spec for the syntax; strings take quotes, e.g. x == "a"',
        ) from None


def _check_engine_functions(program: Any, analysis: Analysis) -> None:
    """Refuse what the engine itself says the condition calls, when it is not on the allow-list."""
    unknown = sorted(set(program.functions()) - _ENGINE_NAMES)
    if unknown:
        raise PolicyError(
            f"unknown CEL function {unknown[0]!r}",
            detail=f"    functions: {', '.join(sorted(analysis.functions)) or 'none'}",
            fix="use the CEL standard functions: " + ", ".join(sorted(GLOBAL_FUNCTIONS | MEMBER_FUNCTIONS)),
        )


#: What a rule lookup found: the rule, the error of the rule that failed, or nothing.
Matched = CompiledRule | RuleEvaluationError | None


@dataclass(frozen=True)
class PhaseRules:
    """The compiled rules of one phase, fused for speed: ``fused`` holds one program per FUSE_CHUNK rules
    (empty when a chunk would not compile; the rules then run one by one). ``enforced`` holds the enforced
    rules alone, fused too, when the phase has shadow rules (None otherwise)."""

    phase: Phase
    rules: tuple[CompiledRule, ...]
    fused: tuple[Any, ...]
    enforced: PhaseRules | None = None

    @classmethod
    def build(cls, phase: Phase, rules: Sequence[CompiledRule]) -> PhaseRules:
        chunks = [rules[start : start + FUSE_CHUNK] for start in range(0, len(rules), FUSE_CHUNK)]
        programs = [_fuse(chunk) for chunk in chunks]
        fused = tuple(programs) if all(p is not None for p in programs) else ()
        enforced = cls.build(phase, [r for r in rules if not r.shadow]) if any(r.shadow for r in rules) else None
        return cls(phase=phase, rules=tuple(rules), fused=fused, enforced=enforced)

    def first_match(self, signals: SignalMap, file: str | None) -> CompiledRule | None:
        """The first enforced rule whose condition holds, or None. Raises RuleEvaluationError naming the failing
        enforced rule (a failing shadow rule is left to :meth:`match`)."""
        enforced, _ = self.match(signals, file)
        if isinstance(enforced, RuleEvaluationError):
            raise enforced
        return enforced

    def match(self, signals: SignalMap, file: str | None) -> tuple[Matched, Matched]:
        """``(enforced, shadow)``, rules read in order: the first enforced rule that matches (or fails: its
        RuleEvaluationError), and the first shadow rule that matches or fails before it (None when none does:
        a shadow rule after the enforced match is never reached). One fused CEL call when no shadow rule
        matches first, two when one does (the second over the enforced rules alone); the rules one by one
        only to name a rule that fails."""
        if not self.rules:
            return None, None
        return self._match(nest(signals), file)

    def _match(self, context: Mapping[str, Any], file: str | None) -> tuple[Matched, Matched]:
        if not self.rules:
            return None, None
        if self.fused:
            try:
                first = self._first_fused(context)
            except Exception:
                pass  # find and name the failing rule below
            else:
                if first is None or not first.shadow:
                    return first, None
                if self.enforced is not None:  # always, when a shadow rule exists
                    # the enforced rules before ``first`` did not match: the first enforced match comes after it
                    return self.enforced._match(context, file)[0], first
        shadow: Matched = None
        for compiled in self.rules:
            if compiled.shadow and shadow is not None:
                continue
            try:
                matched = compiled.evaluate(context, file)
            except RuleEvaluationError as exc:
                if not compiled.shadow:
                    return exc, shadow
                shadow = exc
                continue
            if matched and compiled.shadow:
                shadow = compiled
            elif matched:
                return compiled, shadow
        return None, shadow

    def _first_fused(self, context: Mapping[str, Any]) -> CompiledRule | None:
        for start, program in zip(range(0, len(self.rules), FUSE_CHUNK), self.fused, strict=True):
            index = program.execute(context)
            if index >= 0:
                return self.rules[start + index]
        return None


def _fuse(rules: Sequence[CompiledRule]) -> Any:
    """One program returning the index of the first matching rule (-1: none), or None if it does not compile."""
    source = " : ".join(f"({compiled.rule.when}) ? {index}" for index, compiled in enumerate(rules)) + " : -1"
    try:
        return cel.compile(source)
    except Exception:  # the engine's parser depth limit: fall back to one call per rule
        return None
