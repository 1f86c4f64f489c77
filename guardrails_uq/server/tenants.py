"""A policy per tenant: the policies a proxy serves, which client key may use which, and the choice per request.

``serve --policies DIR`` serves every policy file in DIR; ``serve --policy FILE`` is the same with one. A
policy is known by its ``name:`` field (the name its Decisions, audit records and metrics carry), so it is
fixed while serving: a reload that renames a policy is refused like a broken edit. Names are header-safe
(:data:`NAME`) and unique, compared without case, so ``Support`` and ``support`` never both serve.

The API-keys file maps each key to the policies it may use (:func:`parse_key_line`)::

    # key              policies (comma-separated names; * = every policy served)
    sk-acme-7f3a       support
    sk-globex-91bc     support, billing
    sk-ops-0000        *

A bare key (the format before tenants) may use the one policy of ``--policy``; with ``--policies`` it is a
start error naming its line. Without ``--api-keys`` every caller may use every policy. A request names its
policy with ``X-Guardrails-Policy: NAME`` (exact, case-sensitive); a key with one policy needs no header.
A name the key may not use, or that nothing serves, is refused alike (403, ``policy-forbidden``): a key learns
nothing about other tenants' policies; the Decision goes to the audit log of the key's first policy that
keeps one (:meth:`Tenants.home`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..decision import Action, Decision
from ..errors import GuardrailsError, InputError
from ..guard import Guard
from ..policy.source import read_yaml
from .holder import PolicyHolder
from .limits import RequestRefused

log = logging.getLogger("guardrails_uq.server")

#: The header a request names its policy with.
POLICY_HEADER = "X-Guardrails-Policy"

#: A policy name a tenant can send in a header and a metric can carry as a label.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: In the key file: every policy served.
EVERY = "*"

#: The longest requested name kept in an audit record (a header can be kilobytes).
_MAX_RECORDED = 200


@dataclass(frozen=True)
class KeyGrant:
    """The policies one client key may use: names, ``("*",)`` for every policy, or None when its line names
    none. ``source`` says where the key is (``keys.txt:3``), for errors and audit records: never the key."""

    policies: tuple[str, ...] | None
    source: str


def parse_key_line(line: str, source: str) -> tuple[str, KeyGrant]:
    """(key, grant) from one line of the API-keys file: ``KEY`` or ``KEY NAME[, NAME...]`` or ``KEY *``.
    InputError naming ``source`` (file:line, never the key) for a malformed list."""
    key, *rest = line.split(maxsplit=1)
    if not rest:
        return key, KeyGrant(None, source)
    names = tuple(name.strip() for name in rest[0].split(","))
    fix = "write the key, blanks, then policy names separated by commas (or * for every policy)"
    if names == (EVERY,):
        return key, KeyGrant(names, source)
    for name in names:
        if not NAME.fullmatch(name):
            shown = "an empty name" if not name else f"{name[:40]!r} is not a policy name"
            raise InputError(f"{shown}; {fix}", source=source)
    return key, KeyGrant(tuple(dict.fromkeys(names)), source)


def policy_files(folder: Path) -> list[Path]:
    """The policy files of ``folder``: each ``*.yaml`` at its top level whose document is a mapping with
    ``version`` or ``rules``, in name order. ``*_test.yaml`` (policy test cases) and other YAML (a guideline
    library) are skipped; a file that does not parse is a PolicyError naming it (it may be a broken policy)."""
    if not folder.is_dir():
        raise InputError("is not a folder; pass --policies the folder that holds the policy files",
                         source=f"--policies {folder}")  # fmt: skip
    found = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name.endswith("_test.yaml") or not path.is_file():
            continue
        data = read_yaml(path).data
        if isinstance(data, Mapping) and ("version" in data or "rules" in data):
            found.append(path)
        else:
            log.info("%s is not a policy (no version or rules at its top level); not served", path)
    if not found:
        raise InputError("holds no policy file (*.yaml with version: and rules:)", source=f"--policies {folder}")
    return found


def check_names(named: Sequence[tuple[str, Path]]) -> None:
    """InputError naming the file for a name a header cannot carry, and both files for a name two policies
    share (compared without case)."""
    seen: dict[str, Path] = {}
    for name, path in named:
        if not NAME.fullmatch(name):
            raise InputError(
                f"policy name {name[:80]!r} cannot be sent in {POLICY_HEADER}; use letters, digits, '.', '_', '-' "
                "(at most 64, starting with a letter or digit)", source=f"{path}: name",
            )  # fmt: skip
        other = seen.setdefault(name.casefold(), path)
        if other != path:
            raise InputError(f"policy name {name!r} is also the name of {other} (names are compared without case); "
                             "give each policy its own name", source=str(path))  # fmt: skip


class PolicyRefused(RequestRefused):
    """A request for a policy its key may not use (or none, when it may use several)."""

    def __init__(self, status: int, message: str, kind: str, *, rule: str, reason: str, requested: str | None) -> None:
        super().__init__(status, message, kind)
        self.rule = rule
        self.reason = reason
        self.requested = requested

    @property
    def code(self) -> str:
        return self.rule.replace("-", "_")


def _holder(path: Path, interval: float) -> PolicyHolder:
    """The holder of one policy of a folder (its name fixed while serving); an error names the file."""
    try:
        return PolicyHolder(path, None, interval, fixed_name=True)
    except Exception as exc:
        if isinstance(exc, GuardrailsError) and str(path) in str(exc):
            raise
        raise InputError(f"policy did not load: {type(exc).__name__}: {exc}", source=str(path)) from exc


class Tenants:
    """The policies a proxy serves (one :class:`PolicyHolder` each, reloading on its own) and the policies each
    client key may use. Built at start: a policy that does not load, a duplicate name or a key naming a
    policy not served raises (the server never starts half-configured)."""

    def __init__(
        self,
        holders: Mapping[str, PolicyHolder],
        grants: Mapping[str, KeyGrant] | None,
        *,
        single: bool,
    ) -> None:
        self.holders = dict(holders)
        self.single = single
        self.everyone = tuple(self.holders.values())
        self.open = grants is None  # no client keys: every caller may use every policy
        self._allowed: dict[str, tuple[PolicyHolder, ...]] = {}
        self._may_use: dict[str, frozenset[PolicyHolder]] = {}  # the same, for a constant-time check
        self._everyone_set = frozenset(self.everyone)
        self._sources: dict[str, str] = {}
        for key, grant in (grants or {}).items():
            self._allowed[key] = self._resolve(grant, self.everyone)
            self._may_use[key] = frozenset(self._allowed[key])
            if all(holder.current().audit is None for holder in self._allowed[key]):
                log.warning("%s: none of this key's policies keeps an audit log: its refused requests are logged "
                            "by the access log only", grant.source)  # fmt: skip
            self._sources[key] = grant.source

    def _resolve(self, grant: KeyGrant, everyone: tuple[PolicyHolder, ...]) -> tuple[PolicyHolder, ...]:
        if grant.policies is None:
            if self.single:
                return everyone
            raise InputError("this key names no policy; with --policies each key lists the policies it may use "
                             f"(`KEY name[, name...]`, or `KEY *`); served: {', '.join(self.holders)}",
                             source=grant.source)  # fmt: skip
        if grant.policies == (EVERY,):
            return everyone
        for name in grant.policies:
            if name not in self.holders:
                raise InputError(f"policy {name!r} is not served (served: {', '.join(self.holders)}); fix the name "
                                 "or add the policy", source=grant.source)  # fmt: skip
        return tuple(self.holders[name] for name in grant.policies)

    @classmethod
    def load(
        cls,
        policy: Path | None,
        folder: Path | None,
        grants: Mapping[str, KeyGrant] | None,
        *,
        guard: Guard | None = None,
        interval: float = 1.0,
    ) -> Tenants:
        """Load every policy (``policy``: that one; ``folder``: each of :func:`policy_files`); on any error the
        Guards built so far are closed and the error names the file (or the key file's line)."""
        built: list[PolicyHolder] = []
        try:
            if folder is None:
                if policy is None:
                    raise InputError("no policy to serve; pass --policy FILE or --policies DIR", source="serve")
                built.append(PolicyHolder(policy, guard, interval))
            else:
                for path in policy_files(folder):
                    built.append(_holder(path, interval))
                check_names([(h.current().policy.name, h.path) for h in built])
            return cls({h.current().policy.name: h for h in built}, grants, single=folder is None)
        except BaseException:
            for holder in built:
                holder.close()
            raise

    def start(self) -> None:
        for holder in self.holders.values():
            holder.start()

    def close(self) -> None:
        for holder in self.holders.values():
            holder.close()

    def __iter__(self) -> Iterator[PolicyHolder]:
        return iter(self.holders.values())

    def allowed(self, key: str) -> tuple[PolicyHolder, ...]:
        """The policies ``key`` may use, in the key file's order (none for a key the file does not hold)."""
        return self.everyone if self.open else self._allowed.get(key, ())

    def home(self, key: str) -> PolicyHolder:
        """The policy whose audit log records what a key was refused: the first of the key's policies that keeps
        an audit log (for ``*``, or without keys, in file-name order), else its first."""
        mine = self.allowed(key) or self.everyone
        return next((holder for holder in mine if holder.current().audit is not None), mine[0])

    def source(self, key: str) -> str:
        """Where the key is written (file:line), never the key; ``anonymous`` without keys."""
        return self._sources.get(key, "anonymous")

    def _named(self, name: str) -> PolicyHolder | None:
        """The holder serving policy ``name`` now (a dict lookup: names are fixed in a folder; the one policy of
        ``--policy`` may be renamed by a reload)."""
        holder = self.everyone[0] if self.single else self.holders.get(name)
        return holder if holder is not None and holder.current().policy.name == name else None

    def select(self, key: str, requested: Sequence[str]) -> PolicyHolder:
        """The policy a request runs under: the one its ``X-Guardrails-Policy`` names (``requested``: every
        value of the header, as sent), or the key's only policy. PolicyRefused otherwise: 403 for a name the
        key may not use or that nothing serves (alike), a repeated header or an empty name; 400 for no header
        when the key may use several."""
        allowed = self.allowed(key)
        if not requested and allowed:
            if len(allowed) == 1:
                return allowed[0]
            raise PolicyRefused(400, f"this key may use several policies; name one with the {POLICY_HEADER} "
                                "header", "invalid_request_error", rule="policy-required", reason="missing",
                                requested=None)  # fmt: skip
        if len(requested) == 1:
            holder = self._named(requested[0])
            may_use = self._everyone_set if self.open else self._may_use.get(key, frozenset())
            if holder is not None and holder in may_use:
                return holder
        reason = (
            "repeated" if len(requested) > 1
            else "none-allowed" if not requested  # a key the file does not hold (never passes client_key)
            else "forbidden" if self._named(requested[0]) is not None
            else "unknown"
        )  # fmt: skip
        raise PolicyRefused(403, f"the policy named in {POLICY_HEADER} is not available to this API key",
                            "permission_error", rule="policy-forbidden", reason=reason,
                            requested=", ".join(requested)[:_MAX_RECORDED])  # fmt: skip

    def record_refusal(self, key: str, refused: PolicyRefused) -> Decision:
        """The Decision recording a refused policy choice (rule ``policy-forbidden`` or ``policy-required``, the
        reason, the name as sent, the key's file:line), logged by the key's first policy and returned."""
        with self.home(key).lease() as guard:
            decision = Decision(
                policy=guard.policy.name,
                phase="input",
                action=Action.ABSTAIN,
                rule=refused.rule,
                message=str(refused),
                metadata={"reason": refused.reason, "requested_policy": refused.requested, "key": self.source(key)},
            )
            guard.record(decision)
        return decision

    def health(self) -> dict[str, dict[str, int]]:
        """Reload counts per policy."""
        return {h.current().policy.name: {"reloads": h.reloads, "reload_errors": h.reload_errors} for h in self}
