"""The Check protocol and the registry that maps policy sections to checks.

A check is one small object built from its policy section. Adding a check means adding one module that
defines a :class:`CheckSpec` named ``SPEC`` (in ``guardrails_uq/<name>/spec.py``, found automatically, or
published by a third-party package under the entry-point group ``guardrails_uq.checks``) and nothing else:
the policy schema, the linter and the Guard all read the registry.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from .call import Call, Message, ScoredDocument
from .types import Evidence, Phase, SignalMap

SignalType = Literal["number", "integer", "bool", "string", "list", "map"]


@dataclass(frozen=True)
class SignalSpec:
    """A signal a check promises to produce: its type (for rule linting) and what it means."""

    type: SignalType
    description: str


@dataclass
class Signals:
    """What one run of a check returns.

    ``values`` holds every signal the check declares (dotted names, numbers/strings/bools/lists; None only
    where the spec says the value can be unavailable). ``evidence`` is JSON-compatible detail for the
    Decision. A check that rewrites the prompt sets ``messages``; one that filters chunks sets ``documents``.
    """

    values: SignalMap
    evidence: Evidence = field(default_factory=dict)
    messages: list[Message] | None = None
    documents: list[ScoredDocument] | None = None


@runtime_checkable
class Check(Protocol):
    """One measurement the Guard runs in one phase.

    Contract of ``run``:
      * it may read only the ``call`` it is given and the state it was built with;
      * it returns :class:`Signals` holding exactly the signals its spec declares;
      * it must not mutate ``call`` (calls are frozen), write files, or decide an action: rules decide;
      * it must be safe to call from many threads at once (build any lazy state under a lock);
      * it raises on failure (any exception); the Guard records the error and applies ``on_error``.
    """

    name: str
    phase: Phase

    def run(self, call: Call) -> Signals: ...


CheckFactory = Callable[[Any, Path, "CheckDeps"], Check]

#: Signals the Guard itself publishes in the output phase, whatever checks a policy configures.
OUTPUT_SIGNALS: Mapping[str, SignalSpec] = {
    "output.kind": SignalSpec(
        "string",
        'What the output phase checks: "answer" (text for the user) or "tool_call" (an agent step calling '
        "tools, from Generation.kind; the integrations and the proxy set it). Tool calls carry no logprobs: "
        'rules on uncertainty.* should read output.kind == "answer".',
    ),
}


@dataclass(frozen=True)
class CheckSpec:
    """Registry entry: the policy section ``name``, its phase, its config model, its signals, its factory."""

    name: str
    phase: Phase
    config: type[BaseModel]
    signals: Mapping[str, SignalSpec]
    build: CheckFactory
    description: str = ""
    #: Artifact paths a config names, by field name, checked for existence when the policy loads.
    artifacts: Callable[[Any], Mapping[str, str | None]] = lambda config: {}
    #: Where each threshold of the section comes from (target, n, achieved rate), one line each, for
    #: ``policy check``: ``explain(config, base_dir)``; reads artifacts only, never loads a model.
    explain: Callable[[Any, Path], list[str]] = lambda config, base_dir: []
    #: Verify every artifact the section names (checksums, manifests, the embedder they were made with) with
    #: the loaders the factory uses, loading no model and writing nothing: ``verify(config, base_dir, deps)``
    #: returns warnings and raises ArtifactError (or InputError) naming the file and the fix. None: building
    #: the check with ``deps`` (whose embedder is an :class:`~.embeddings.EmbedderIdentity`) is the verification.
    verify: Callable[[Any, Path, CheckDeps], list[str]] | None = None
    #: What of the call the check may replace for the checks after it in its phase ("messages", "documents"):
    #: the Guard's async path runs a phase's checks at once except across a check that may rewrite. None
    #: (the default for a check that does not say) counts as "may rewrite anything": such a check runs alone.
    rewrites: frozenset[str] | None = None
    #: Whether the check waits on something outside the process (an endpoint). The async path runs the checks
    #: that may wait in worker threads, while the others run one after the other in the phase's own thread:
    #: a check that computes in Python holds the GIL, so running it beside another only adds thread hand-offs.
    #: A ``waits`` attribute of the check itself overrides this (grounding waits only with a judge). None (the
    #: default for a check that does not say) counts as "may wait".
    waits: bool | None = None


@dataclass
class CheckDeps:
    """Shared objects a Guard hands to every check factory (computed once, shared by all checks)."""

    embedder: Any = None


_lock = threading.Lock()
_registry: dict[str, CheckSpec] | None = None


def _discover() -> dict[str, CheckSpec]:
    found: dict[str, CheckSpec] = {}
    package_dir = Path(__file__).parent
    for info in sorted(pkgutil.iter_modules([str(package_dir)]), key=lambda i: i.name):
        if not info.ispkg or not (package_dir / info.name / "spec.py").exists():
            continue
        module = importlib.import_module(f"{__package__}.{info.name}.spec")
        spec = module.SPEC
        found[spec.name] = spec
    for ep in entry_points(group="guardrails_uq.checks"):
        spec = ep.load()
        if spec.name in found:
            raise RuntimeError(f"entry point {ep.value} registers check {spec.name!r}, which already exists")
        found[spec.name] = spec
    return found


def registry() -> dict[str, CheckSpec]:
    """All known checks by policy section name (discovered once per process)."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = _discover()
        return dict(_registry)


def register(spec: CheckSpec) -> None:
    """Add a check at run time (tests, plugins loaded by hand). Must run before policies are loaded."""
    global _registry
    from .policy import schema

    with _lock:
        if _registry is None:
            _registry = _discover()
        _registry[spec.name] = spec
    schema.policy_model.cache_clear()


def unregister(name: str) -> None:
    """Remove a check added with :func:`register` (tests)."""
    from .policy import schema

    with _lock:
        if _registry is not None:
            _registry.pop(name, None)
    schema.policy_model.cache_clear()


def verify_section(spec: CheckSpec, config: Any, base_dir: Path, embedder: str) -> list[str]:
    """What ``policy check`` runs for one configured check: every artifact the section names verified exactly as
    the Guard's factory verifies it when it starts, against the embedder named ``embedder`` (nothing is embedded
    or written). Returns warnings; ArtifactError (or InputError) naming the file and the fix on a failure."""
    from .embeddings import EmbedderIdentity

    deps = CheckDeps(embedder=EmbedderIdentity(embedder))
    if spec.verify is not None:
        return list(spec.verify(config, base_dir, deps))
    spec.build(config, base_dir, deps)
    return []
