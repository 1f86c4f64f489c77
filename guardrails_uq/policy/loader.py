"""Load a policy file: validate, resolve paths, compile rules, lint. Every failure is a PolicyError."""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..audit import _SQLITE_SUFFIXES
from ..checks import OUTPUT_SIGNALS, CheckSpec, registry
from ..errors import PolicyError, RuleEvaluationError
from ..tools import TOOL_INJECTION_SIGNALS, tool_signals
from ..types import PHASES, Phase, SignalMap
from .analysis import MAX_COST
from .rules import CompiledRule, Matched, PhaseRules, compile_rule, nest
from .schema import PolicyBase, policy_model
from .source import YamlSource, parse_yaml, read_yaml

#: Typed stand-ins used to type-check conditions when the policy loads.
_SAMPLE_VALUES: dict[str, Any] = {"number": 1.0, "integer": 1, "bool": False, "string": "x", "list": [], "map": {}}

#: Most rules in one policy. Real policies have tens (the shipped ones 3 to 5, the benchmark 20). Loading compiles
#: and type-checks each rule (about 0.3 ms for a short one), and every call runs a phase's rules in order.
MAX_RULES = 256

#: Most characters in all conditions together. Real policies have a few thousand. Compiling and checking a
#: condition costs up to 20 us a character (long literal lists), so this keeps that part of loading near 1 s.
MAX_POLICY_CONDITION_CHARS = 64 * 1024

#: Upper bound on the estimated evaluation steps of all rules together (.analysis.MAX_COST is one rule's; a step
#: is 50 to 90 ns, so under 1 s). Loading evaluates every rule once on sample values, so this bounds load time.
MAX_POLICY_COST = 10 * MAX_COST

#: The first 16 bytes of every SQLite database file.
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class SignalInfo:
    """Where a signal comes from and its type: a check (with its phase) or the app (phase None)."""

    name: str
    type: str
    phase: Phase | None
    source: str
    description: str = ""


@dataclass
class CompiledPolicy:
    """A validated policy, its rules compiled per phase and its signal catalogue."""

    model: PolicyBase
    file: str
    base_dir: Path
    catalogue: dict[str, SignalInfo]
    phases: dict[Phase, PhaseRules]
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def observe_only(self) -> bool:
        """True for a ``mode: shadow`` policy: what it decides is recorded in Decision.shadow, never enforced."""
        return self.model.mode == "shadow"

    def shadow_rules(self) -> list[str]:
        """Names of the rules in shadow (every rule of a ``mode: shadow`` policy), in policy order."""
        return [c.name for rules in self.phases.values() for c in rules.rules if c.shadow]

    def section(self, name: str) -> BaseModel | None:
        """The configuration of check ``name``, or None when the policy does not configure it."""
        value = getattr(self.model, name, None)
        return value if isinstance(value, BaseModel) else None

    def configured_checks(self) -> list[CheckSpec]:
        """Registry entries of the checks this policy configures, in phase order."""
        specs = [spec for name, spec in registry().items() if self.section(name) is not None]
        return sorted(specs, key=lambda s: (PHASES.index(s.phase), s.name))

    def resolve(self, path: str) -> Path:
        """A path from the policy, resolved against the policy file's folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    def first_match(self, phase: Phase, signals: SignalMap) -> CompiledRule | None:
        """The first enforced rule of ``phase`` that matches ``signals`` (RuleEvaluationError when one fails)."""
        return self.phases[phase].first_match(signals, self.file)

    def match(self, phase: Phase, signals: SignalMap) -> tuple[Matched, Matched]:
        """``(enforced, shadow)`` of ``phase`` on ``signals`` (see :meth:`PhaseRules.match`)."""
        return self.phases[phase].match(signals, self.file)


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "allowed keys: " + ", ".join(sorted(options)) if options else "remove it"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the mapping at ``loc`` (for 'did you mean')."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        current = _unwrap(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if not args:
        return annotation
    for arg in args:
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        inner = _unwrap(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation


def _validation_error(exc: ValidationError, source: YamlSource, model: type[BaseModel]) -> PolicyError:
    errors = exc.errors(include_url=False)
    messages: list[tuple[int | None, str, str]] = []
    for err in errors:
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            options = list(owner.model_fields) if owner else []
            messages.append(
                (source.line_of(loc, key=True), f"unknown key {path!r}", _did_you_mean(str(loc[-1]), options))
            )
        elif err["type"] == "missing":
            messages.append((source.line_of(loc[:-1]), f"missing required key {path!r}", f"add '{loc[-1]}:'"))
        else:
            got = err.get("input")
            shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
            messages.append((source.line_of(loc), f"{path}: {err['msg']} (got {shown})", _type_fix(err)))
    messages.sort(key=lambda m: not m[1].startswith("unknown key"))  # a typo explains a 'missing' too
    line, problem, fix = messages[0]
    detail = None
    if len(messages) > 1:
        detail = "\n".join(f"  also line {ln}: {p}" for ln, p, _ in messages[1:6])
    return PolicyError(problem, file=source.file, line=line, fix=fix, detail=detail)


def _type_fix(err: Mapping[str, Any]) -> str:
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        return f"use one of {ctx['expected']}"
    return "see `guardrails-uq policy schema` for the expected type"


def load_policy(path: str | Path) -> CompiledPolicy:
    """Load and fully validate the policy at ``path``."""
    source = read_yaml(path)
    return compile_policy(source, base_dir=Path(path).resolve().parent)


def loads_policy(text: str, *, file: str = "<string>", base_dir: str | Path = ".") -> CompiledPolicy:
    """Load a policy from YAML text (paths resolve against ``base_dir``)."""
    return compile_policy(parse_yaml(text, file), base_dir=Path(base_dir).resolve())


def compile_policy(source: YamlSource, *, base_dir: Path) -> CompiledPolicy:
    """Validate a parsed policy and compile it."""
    if not isinstance(source.data, dict):
        raise PolicyError(
            "a policy must be a YAML mapping (version, name, rules, ...)",
            file=source.file,
            line=source.line_of(()),
            fix="start from policies/demo.yaml or `guardrails-uq policy schema`",
        )
    model_cls = policy_model()
    try:
        model = model_cls.model_validate(source.data)
    except ValidationError as exc:
        raise _validation_error(exc, source, model_cls) from None
    catalogue = _catalogue(model)
    policy = CompiledPolicy(model=model, file=source.file, base_dir=base_dir, catalogue=catalogue, phases={})
    _check_artifacts(policy, source)
    compiled = _compile_rules(policy, source)
    policy.phases = {phase: PhaseRules.build(phase, [c for c in compiled if c.rule.at == phase]) for phase in PHASES}
    _lint_reachability(policy, compiled, source)
    if any(r.action.value == "escalate" for r in model.rules) and model.escalation is None:
        policy.warnings.append(
            "rules escalate but the policy has no escalation target: integrations must pass one (escalate_to=)"
        )
    return policy


def _catalogue(model: PolicyBase) -> dict[str, SignalInfo]:
    catalogue: dict[str, SignalInfo] = {
        name: SignalInfo(name=name, type=kind, phase=None, source="app") for name, kind in model.signals.items()
    }
    for signal, info in OUTPUT_SIGNALS.items():
        catalogue[signal] = SignalInfo(
            name=signal, type=info.type, phase="output", source="guard", description=info.description
        )
    for signal, info in tool_signals(injection=getattr(model, "injection", None) is not None).items():
        source = "tool_injection" if signal in TOOL_INJECTION_SIGNALS else "tool"  # the check that publishes it
        catalogue[signal] = SignalInfo(
            name=signal, type=info.type, phase="tool", source=source, description=info.description
        )
    for name, spec in registry().items():
        if getattr(model, name, None) is None:
            continue
        for signal, info in spec.signals.items():
            catalogue[signal] = SignalInfo(
                name=signal, type=info.type, phase=spec.phase, source=name, description=info.description
            )
    return catalogue


def _check_artifacts(policy: CompiledPolicy, source: YamlSource) -> None:
    for spec in policy.configured_checks():
        config = policy.section(spec.name)
        for field_name, value in spec.artifacts(config).items():
            if value is None:
                continue
            resolved = policy.resolve(value)
            if not resolved.exists():
                raise PolicyError(
                    f"{spec.name}.{field_name}: artifact not found: {resolved}",
                    file=source.file,
                    line=source.line_of((spec.name, field_name)),
                    fix=f"build it first (see `guardrails-uq --help`) or fix the path; "
                    f"relative paths resolve against {policy.base_dir}",
                )
    _check_audit(policy, source)


def _check_audit(policy: CompiledPolicy, source: YamlSource) -> None:
    """The audit log can be opened when the Guard starts: read-only checks, nothing is created or written."""
    if policy.model.audit is None:
        return
    found = _audit_problem(policy.resolve(policy.model.audit.path))
    if found is not None:
        problem, fix = found
        raise PolicyError(f"audit.path: {problem}", file=source.file, line=source.line_of(("audit", "path")), fix=fix)


def _audit_problem(path: Path) -> tuple[str, str] | None:
    """What would stop the audit log at ``path`` from opening, with its fix; None when nothing would.

    JSONL needs a writable file, or a writable folder to create it in; SQLite (.sqlite, .sqlite3, .db) needs a
    writable folder (for its journal) and a file that is empty or a SQLite database.
    """
    folder, sqlite = path.parent, path.suffix in _SQLITE_SUFFIXES
    if path.is_dir():
        return f"{path} is a folder", f"name a file inside it, e.g. {path / 'audit.jsonl'}"
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        return f"folder {folder} {what}", "create the folder or point audit.path elsewhere"
    exists = path.exists()
    if exists and not path.is_file() and (sqlite or not path.is_char_device()):
        return f"{path} is not a regular file", "point audit.path at a file"
    if (sqlite or not exists) and not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable", "make it writable by this user or point audit.path elsewhere"
    if exists and not os.access(path, os.W_OK):
        return f"{path} is not writable", "make it writable by this user or point audit.path elsewhere"
    return _sqlite_problem(path) if sqlite and exists else None


def _sqlite_problem(path: Path) -> tuple[str, str] | None:
    """None when ``path`` is empty or starts with the SQLite header (reads 16 bytes, opens nothing else)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}", "make it readable by this user"
    if head and head != _SQLITE_MAGIC:
        return (
            f"{path} is not a SQLite database",
            f"point audit.path at a new file, or use a .jsonl name for a JSON Lines log "
            f"(the {path.suffix} suffix selects SQLite)",
        )
    return None


def _compile_rules(policy: CompiledPolicy, source: YamlSource) -> list[CompiledRule]:
    _check_rule_sizes(policy, source)
    compiled: list[CompiledRule] = []
    seen: dict[str, int | None] = {}
    known = sorted(policy.catalogue)
    total_cost = 0
    for index, rule in enumerate(policy.model.rules):
        line = source.line_of(("rules", index))
        if rule.name in seen:
            raise PolicyError(
                f"duplicate rule name {rule.name!r} (first at line {seen[rule.name]})",
                file=source.file,
                line=line,
                fix="rule names must be unique: Decisions and audit logs refer to rules by name",
            )
        seen[rule.name] = line
        when_line = source.line_of(("rules", index, "when"))
        item = dataclasses.replace(
            compile_rule(rule, file=source.file, line=when_line), shadow=_rule_in_shadow(policy, source, index)
        )
        total_cost += item.cost
        if total_cost > MAX_POLICY_COST:
            raise PolicyError(
                f"the rules up to this one may take too long to evaluate together: about {total_cost:,} steps "
                f"(limit {MAX_POLICY_COST:,}; this rule about {item.cost:,})",
                file=source.file,
                line=when_line,
                rule=rule.name,
                fix="simplify the costliest rules: long literal lists inside comprehensions, regexes with \\w{n}",
            )
        for signal in item.reads:
            info = policy.catalogue.get(signal)
            if info is None and signal in tool_signals(injection=True):
                raise PolicyError(
                    f"rule reads signal {signal!r}, which the injection check publishes in the tool phase",
                    file=source.file,
                    line=when_line,
                    rule=rule.name,
                    fix="add an 'injection:' section (calibration: an artifact from `guardrails-uq calibrate "
                    "injection`) so tool-call arguments are scored",
                )
            if info is None:
                hint = _did_you_mean(signal, known) if known else "no check is configured"
                raise PolicyError(
                    f"rule reads signal {signal!r}, which no configured check produces",
                    file=source.file,
                    line=when_line,
                    rule=rule.name,
                    fix=f"{hint}; configure the check that produces it, or declare app signals under 'signals:'",
                )
            if info.phase is not None and PHASES.index(info.phase) > PHASES.index(rule.at):
                raise PolicyError(
                    f"rule at {rule.at!r} reads {signal!r}, which is only known at {info.phase!r}",
                    file=source.file,
                    line=source.line_of(("rules", index, "at")),
                    rule=rule.name,
                    fix=f"move the rule to 'at: {info.phase}'",
                )
        _type_check(item, policy, source.file)
        compiled.append(item)
    return compiled


def _rule_in_shadow(policy: CompiledPolicy, source: YamlSource, index: int) -> bool:
    """Whether rule ``index`` is in shadow: its own ``mode``, else the policy's. ``mode: enforce`` on a rule of a
    ``mode: shadow`` policy is an error (a shadow policy enforces nothing)."""
    rule = policy.model.rules[index]
    if policy.observe_only and rule.mode == "enforce":
        raise PolicyError(
            "rule says mode: enforce in a policy with mode: shadow (every rule of a shadow policy is in shadow)",
            file=source.file,
            line=source.line_of(("rules", index, "mode")),
            rule=rule.name,
            fix="remove the rule's mode, or set the policy's mode: enforce and put mode: shadow on the rules to observe",
        )
    return (rule.mode or policy.model.mode) == "shadow"


def _check_rule_sizes(policy: CompiledPolicy, source: YamlSource) -> None:
    """At most MAX_RULES rules and MAX_POLICY_CONDITION_CHARS characters of conditions (before compiling any)."""
    rules = policy.model.rules
    if len(rules) > MAX_RULES:
        raise PolicyError(
            f"{len(rules)} rules (limit {MAX_RULES})",
            file=source.file,
            line=source.line_of(("rules", MAX_RULES)),
            fix="merge rules that share an action (a || b), or split the policy by application",
        )
    total = 0
    for index, rule in enumerate(rules):
        total += len(rule.when)
        if total > MAX_POLICY_CONDITION_CHARS:
            raise PolicyError(
                f"the conditions up to this rule are {total:,} characters long together "
                f"(limit {MAX_POLICY_CONDITION_CHARS:,})",
                file=source.file,
                line=source.line_of(("rules", index, "when")),
                rule=rule.name,
                fix="shorten the longest conditions: move long lists of values into app signals",
            )


def _type_check(item: CompiledRule, policy: CompiledPolicy, file: str) -> None:
    """Run the condition on typed sample values: catches type mismatches and non-bool results at load.

    A condition that reads no signal is left to the reachability lint, which evaluates it (once) anyway.
    """
    if not item.reads:
        return
    sample = {name: _SAMPLE_VALUES[policy.catalogue[name].type] for name in item.reads}
    try:
        item.evaluate(nest(sample), file)
    except RuleEvaluationError as exc:
        cause = exc.__cause__
        if cause is None or isinstance(cause, TypeError):
            types = ", ".join(f"{n}: {policy.catalogue[n].type}" for n in item.reads) or "none"
            raise PolicyError(
                exc.problem.replace("condition failed", "condition does not type-check"),
                file=file,
                line=item.line,
                rule=item.name,
                detail=f"    signal types: {types}",
                fix=exc.fix,
            ) from None
        # other runtime errors on sample values (an index, a division) may be fine on real values


def _lint_reachability(policy: CompiledPolicy, compiled: list[CompiledRule], source: YamlSource) -> None:
    """Reject rules that can never decide: hidden (in their phase) by an always-true or identical earlier rule.

    An enforced rule is hidden only by earlier enforced rules (a shadow rule never decides); a shadow rule, by
    any earlier rule (it is recorded only when it would have decided before every enforced rule)."""
    always: dict[tuple[str, bool], CompiledRule] = {}
    seen_when: dict[tuple[str, bool, str], CompiledRule] = {}
    for item in compiled:
        at = item.rule.at
        modes = (False, True) if item.shadow else (False,)  # the earlier rules that can hide this one
        first_always = next((always[(at, m)] for m in modes if (at, m) in always), None)
        if first_always is not None:
            raise PolicyError(
                f"rule can never be reached: rule {first_always.name!r} (line {first_always.line}) "
                f"always matches first in phase {at!r}",
                file=source.file,
                line=item.line,
                rule=item.name,
                fix=f"move it before {first_always.name!r} or give {first_always.name!r} a condition",
            )
        condition = " ".join(item.rule.when.split())
        first = next((seen_when[(at, m, condition)] for m in modes if (at, m, condition) in seen_when), None)
        if first is not None:
            raise PolicyError(
                f"rule can never be reached: rule {first.name!r} (line {first.line}) has the same condition",
                file=source.file,
                line=item.line,
                rule=item.name,
                fix="merge the two rules or change one condition",
            )
        seen_when.setdefault((at, item.shadow, condition), item)
        if not item.reads:
            try:
                value = item.evaluate({}, source.file)
            except RuleEvaluationError as exc:
                raise PolicyError(
                    "rule always fails: its condition reads no signal and errors",
                    file=source.file,
                    line=item.line,
                    rule=item.name,
                    detail=f"    {exc.problem}",
                    fix="fix the expression; a failing rule would make every call take on_error",
                ) from None
            if value is False:
                raise PolicyError(
                    "rule can never match: its condition is always false",
                    file=source.file,
                    line=item.line,
                    rule=item.name,
                    fix="delete the rule or give it a condition that reads a signal",
                )
            if value is True:
                always.setdefault((at, item.shadow), item)
