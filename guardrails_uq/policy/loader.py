"""Load a policy file: validate, resolve paths, compile rules, lint. Every failure is a PolicyError."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..checks import CheckSpec, registry
from ..errors import PolicyError, RuleEvaluationError
from ..types import PHASES, Phase, SignalMap
from .rules import CompiledRule, PhaseRules, compile_rule, nest
from .schema import PolicyBase, policy_model
from .source import YamlSource, parse_yaml, read_yaml

#: Typed stand-ins used to type-check conditions when the policy loads.
_SAMPLE_VALUES: dict[str, Any] = {"number": 1.0, "integer": 1, "bool": False, "string": "x", "list": []}


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
        """The first rule of ``phase`` that matches ``signals`` (RuleEvaluationError when one fails)."""
        return self.phases[phase].first_match(signals, self.file)


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
    if policy.model.audit is not None:
        folder = policy.resolve(policy.model.audit.path).parent
        if not folder.is_dir():
            raise PolicyError(
                f"audit.path: folder {folder} does not exist",
                file=source.file,
                line=source.line_of(("audit", "path")),
                fix="create the folder or point audit.path elsewhere",
            )


def _compile_rules(policy: CompiledPolicy, source: YamlSource) -> list[CompiledRule]:
    compiled: list[CompiledRule] = []
    seen: dict[str, int | None] = {}
    known = sorted(policy.catalogue)
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
        item = compile_rule(rule, file=source.file, line=when_line)
        for signal in item.reads:
            info = policy.catalogue.get(signal)
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


def _type_check(item: CompiledRule, policy: CompiledPolicy, file: str) -> None:
    """Run the condition on typed sample values: catches type mismatches and non-bool results at load."""
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
    """Reject rules that can never decide: shadowed (in their phase) by an always-true or identical earlier rule."""
    always: dict[str, CompiledRule] = {}
    seen_when: dict[tuple[str, str], CompiledRule] = {}
    for item in compiled:
        if item.rule.at in always:
            first_always = always[item.rule.at]
            raise PolicyError(
                f"rule can never be reached: rule {first_always.name!r} (line {first_always.line}) "
                f"always matches first in phase {item.rule.at!r}",
                file=source.file,
                line=item.line,
                rule=item.name,
                fix=f"move it before {first_always.name!r} or give {first_always.name!r} a condition",
            )
        key = (item.rule.at, " ".join(item.rule.when.split()))
        if key in seen_when:
            first = seen_when[key]
            raise PolicyError(
                f"rule can never be reached: rule {first.name!r} (line {first.line}) has the same condition",
                file=source.file,
                line=item.line,
                rule=item.name,
                fix="merge the two rules or change one condition",
            )
        seen_when[key] = item
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
                always[item.rule.at] = item
