"""The Guard a proxy serves with, reloaded off the request path.

A background thread watches the policy file. A changed file is loaded there, never in a request, so a
slow or hostile policy cannot stall ``/healthz`` or a chat request; a new version replaces the old one only
once it has loaded completely (a broken edit keeps the old policy serving and is counted). Requests take a
*lease* on the Guard they start with; a replaced Guard is closed (audit log, escalation client) when its
last lease ends, so reloads neither leak file descriptors nor pull a log out from under a running stream.
Each policy of ``serve --policies`` has its own holder (and thread): an edit reloads that policy only.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from ..guard import Guard

log = logging.getLogger("guardrails_uq.server")


class PolicyHolder:
    """The current Guard, swapped for a new one when the policy file changes and loads cleanly.

    ``fixed_name``: a new version must keep the policy's ``name:`` (clients and the key file refer to it);
    one that renames it is refused like a broken edit."""

    def __init__(
        self, path: Path, guard: Guard | None = None, interval: float = 1.0, *, fixed_name: bool = False
    ) -> None:
        self.path = path
        self.fixed_name = fixed_name
        self.interval = max(interval, 0.01)
        self._guard = guard or Guard.from_policy(path)
        self._fixed = guard is not None
        self._stamp = self._file_stamp()
        self._seen = self._stamp
        self._lock = threading.Lock()
        self._leases: dict[int, int] = {}
        self._retired: dict[int, Guard] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reload_errors = 0
        self.reloads = 0

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
            return stat.st_mtime_ns, stat.st_size, stat.st_ino
        except OSError:
            return None

    def current(self) -> Guard:
        """The Guard serving now (no file access: never blocks)."""
        return self._guard

    @contextlib.contextmanager
    def lease(self) -> Iterator[Guard]:
        """The current Guard, kept open until the block ends even if a reload replaces it meanwhile."""
        with self._lock:
            guard = self._guard
            self._leases[id(guard)] = self._leases.get(id(guard), 0) + 1
        try:
            yield guard
        finally:
            self._release(guard)

    def _release(self, guard: Guard) -> None:
        with self._lock:
            left = self._leases[id(guard)] - 1
            if left:
                self._leases[id(guard)] = left
                return
            del self._leases[id(guard)]
            retired = self._retired.pop(id(guard), None)
        if retired is not None:
            retired.close()

    def start(self) -> None:
        """Start watching the file (no-op for a fixed Guard)."""
        if self._fixed or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="guardrails-policy-reload", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        """Load the file once it has changed and then held still between two looks (a file written in several
        steps is never loaded half-way); True when a new Guard now serves."""
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            self._seen = stamp
            return False
        if stamp != self._seen:  # still changing (a writer mid-way): load once it holds still for one interval
            self._seen = stamp
            return False
        self._stamp = stamp
        try:
            fresh = Guard.from_policy(self.path)
            self._check_name(fresh)
        except Exception as exc:  # a half-written or broken policy: keep serving the old one
            self.reload_errors += 1
            log.warning("policy %s changed but did not load; keeping the old one: %s", self.path, exc)
            return False
        with self._lock:
            old, self._guard = self._guard, fresh
            in_use = id(old) in self._leases
            if in_use:
                self._retired[id(old)] = old
        if not in_use:
            old.close()
        self.reloads += 1
        log.info("policy %s reloaded", self.path)
        return True

    def _check_name(self, fresh: Guard) -> None:
        """ValueError (the Guard closed) when a fixed name changed."""
        name, old = fresh.policy.name, self._guard.policy.name
        if self.fixed_name and name != old:
            fresh.close()
            raise ValueError(f"the new version renames policy {old!r} to {name!r}; a policy's name is fixed while "
                             "serving (keys and clients name it): restart the server to rename it")  # fmt: skip

    def close(self) -> None:
        """Stop watching and close the serving Guard (at shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self._fixed:
            self._guard.close()
