"""Running one phase's checks: in order, or (the async path) the independent ones at once; each within its time limit.

**Time limits.** A check whose policy section sets ``timeout_ms`` runs in a worker thread, and the phase waits
for it until its deadline (counted from when the phase handed it over), then goes on without it: its signals
are missing, a :class:`~.errors.CheckTimeoutError` is its recorded failure and ``on_error`` decides. Python
cannot stop a thread, so an overrunning check keeps running in its worker until it returns, and its late
result is discarded. The workers are daemon threads (a check that never returns never holds up interpreter
exit), at most :data:`MAX_WORKERS` of them: once every one is stuck in an overrunning check, timed checks wait
in the queue and time out, so requests still end on time, failing closed. A check without ``timeout_ms`` runs
in the phase's own thread (sequential path) and is waited for however long it takes.

**Concurrency.** The checks of a phase run in stages: a check that may rewrite the call
(:attr:`.CheckSpec.rewrites`: guidelines injects messages, injection and retrieval filter documents) ends its
stage, so the checks after it see what it wrote, exactly as in sequential order. In concurrent mode (the
Guard's ``a*`` methods, :func:`concurrently`) the checks of a stage that may wait on something outside the
process (:attr:`.CheckSpec.waits`: a judge endpoint, an app's check nobody vouches for) or have a time limit
run in worker threads, while the stage's other checks run meanwhile in the phase's thread. Checks that compute
in Python hold the GIL, so running two of them at once gains nothing and costs thread hand-offs (measured in
``bench/concurrency.py``). Results are returned in the phase's order either way, so the Decision is the same
as the sequential one.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .call import Call
from .checks import Check, Signals, registry
from .decision import Decision
from .errors import CheckTimeoutError
from .types import SignalMap

#: Most worker threads for timed and concurrent checks, all Guards together.
MAX_WORKERS = 64

_CONCURRENT: contextvars.ContextVar[bool] = contextvars.ContextVar("guardrails_uq_concurrent_checks", default=False)

T = TypeVar("T")


def concurrently(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with the independent checks of every phase it runs run at once (the Guard's
    async methods call their sync twin through this, in a worker thread)."""
    token = _CONCURRENT.set(True)
    try:
        return fn(*args, **kwargs)
    finally:
        _CONCURRENT.reset(token)


@dataclass(frozen=True)
class CheckRun:
    """One check's run in a phase: its signals, or the error it raised (or its timeout), and its time."""

    check: Check
    signals: Signals | None
    error: Exception | None
    elapsed_ms: float
    #: when the run ended (``time.perf_counter()``), so a result is judged against its deadline whenever the
    #: phase gets round to reading it
    finished: float = 0.0


class CheckTrace(Protocol):
    """What an observer (telemetry) keeps of one check's run. :meth:`finish` gets the verdict the phase keeps:
    from the run itself in the phase's thread, or for a worker's run from the phase once it has read the result
    (a late result is finished as its timeout); should it come twice, only the first call counts."""

    def activate(self) -> Any:
        """A context manager made current around ``check.run`` (nested spans of the check belong to it)."""
        ...

    def finish(self, run: CheckRun) -> None: ...


class CheckObserver(Protocol):
    """Sees every check run (telemetry): :meth:`check` is called in the phase's thread before the run."""

    def check(self, check: Check, timeout_ms: float | None) -> CheckTrace: ...


def may_rewrite(check: Check) -> bool:
    """True unless the check's registry entry (or a ``rewrites`` attribute of the check) says it rewrites
    nothing of the call: a check nobody vouches for ends its stage."""
    declared = getattr(check, "rewrites", None)
    if declared is None:
        spec = registry().get(check.name)
        declared = spec.rewrites if spec is not None else None
    return declared is None or bool(declared)


def may_wait(check: Check) -> bool:
    """True unless the check (a ``waits`` attribute) or its registry entry says it waits on nothing outside the
    process: a check nobody vouches for may wait (an app's check calling a moderation API, say)."""
    declared = getattr(check, "waits", None)
    if declared is None:
        spec = registry().get(check.name)
        declared = spec.waits if spec is not None else None
    return declared is None or bool(declared)


def rewritten(call: Call, signals: Signals | Decision) -> Call:
    """The call as the next checks of the phase (``signals``), or the next phase (a ``Decision``), see it:
    the injected prompt and the kept chunks replace the originals."""
    update: dict[str, Any] = {}
    if signals.messages is not None:
        update["messages"] = signals.messages
    if signals.documents is not None:
        update["documents"] = signals.documents
    return call.model_copy(update=update) if update else call


class CheckRunner:
    """Runs a phase's checks with their time limits (``timeouts_ms`` by check name) and stages (built once
    per Guard from the check names; ``validate(check, values)`` raises when a result breaks its spec)."""

    def __init__(
        self,
        timeouts_ms: Mapping[str, float],
        validate: Callable[[Check, SignalMap], None],
        stage_ends: frozenset[str],
    ) -> None:
        self.timeouts_ms = dict(timeouts_ms)
        self._validate = validate
        self._stage_ends = stage_ends

    @classmethod
    def for_checks(
        cls, checks: Sequence[Check], timeouts_ms: Mapping[str, float], validate: Callable[[Check, SignalMap], None]
    ) -> CheckRunner:
        """A runner for these checks (their names decide the stages)."""
        return cls(timeouts_ms, validate, frozenset(c.name for c in checks if may_rewrite(c)))

    def run(self, checks: Sequence[Check], call: Call, *, observer: CheckObserver | None = None) -> Iterator[CheckRun]:
        """Each check's run, in the order of ``checks``; the mode (sequential or concurrent) is the caller's
        (:func:`concurrently`)."""
        concurrent = _CONCURRENT.get()
        for stage in self._stages(checks):
            if concurrent and len(stage) > 1:
                runs = self._at_once(stage, call, observer)
            else:
                runs = [self._one(check, call, observer) for check in stage]
            for ran in runs:
                if ran.signals is not None:
                    call = rewritten(call, ran.signals)
                yield ran

    def _stages(self, checks: Sequence[Check]) -> list[list[Check]]:
        stages: list[list[Check]] = [[]]
        for check in checks:
            stages[-1].append(check)
            if check.name in self._stage_ends:
                stages.append([])
        return [stage for stage in stages if stage]

    def _one(self, check: Check, call: Call, observer: CheckObserver | None) -> CheckRun:
        limit = self.timeouts_ms.get(check.name)
        trace = observer.check(check, limit) if observer is not None else None
        if limit is None:
            return self._attempt(check, call, trace)
        future = _submit(self._attempt, check, call, trace, False)
        return self._wait(check, future, limit, time.perf_counter(), trace)

    def _at_once(self, stage: list[Check], call: Call, observer: CheckObserver | None) -> list[CheckRun]:
        """The stage's runs in its order: the checks that may wait (:func:`may_wait`) or have a time limit go to
        workers first, the others run meanwhile in this thread, one after the other (they hold the GIL: at once
        they would only add hand-offs). With no check that waits the stage is simply sequential."""
        away = [may_wait(check) or check.name in self.timeouts_ms for check in stage]
        if not any(away):
            return [self._one(check, call, observer) for check in stage]
        started = time.perf_counter()
        pending: dict[int, tuple[CheckTrace | None, Future[CheckRun]]] = {}
        for i, check in enumerate(stage):
            if away[i]:
                trace = observer.check(check, self.timeouts_ms.get(check.name)) if observer is not None else None
                pending[i] = (trace, _submit(self._attempt, check, call, trace, False))
        here = {i: self._one(check, call, observer) for i, check in enumerate(stage) if not away[i]}
        return [
            here[i] if i not in pending else self._wait(check, pending[i][1], self.timeouts_ms.get(check.name),
                                                        started, pending[i][0])
            for i, check in enumerate(stage)
        ]  # fmt: skip

    def _wait(
        self,
        check: Check,
        future: Future[CheckRun],
        limit: float | None,
        started: float,
        trace: CheckTrace | None,
    ) -> CheckRun:
        """The run's result, or a timeout once ``limit`` ms have passed since ``started``. A result that came
        after its deadline is a timeout too, though it waited done: the async path reads it only once the
        phase's own-thread checks have run, and the sync path would have stopped waiting for it."""
        left = None if limit is None else max(0.0, limit / 1e3 - (time.perf_counter() - started))
        try:
            ran = future.result(timeout=left)
        except FutureTimeout:
            future.cancel()  # still queued (every worker busy): it never starts
            ran = None
        if limit is not None and (ran is None or ran.finished - started > limit / 1e3):
            ran = CheckRun(check, None, CheckTimeoutError(check.name, limit), (time.perf_counter() - started) * 1e3)
        assert ran is not None
        if trace is not None:  # the verdict the phase keeps, so span and metric agree with the Decision
            trace.finish(ran)
        return ran

    def _attempt(self, check: Check, call: Call, trace: CheckTrace | None, finish: bool = True) -> CheckRun:
        """Run and validate one check (in whichever thread runs it); never raises an Exception. ``finish``
        False (a worker's run): :meth:`_wait` finishes the trace with the verdict the phase keeps."""
        t0 = time.perf_counter()
        signals: Signals | None = None
        error: Exception | None = None
        try:
            if trace is not None:
                with trace.activate():
                    signals = check.run(call)
            else:
                signals = check.run(call)
            self._validate(check, signals.values)
        except Exception as exc:
            signals, error = None, exc
        finished = time.perf_counter()
        ran = CheckRun(check, signals, error, (finished - t0) * 1e3, finished)
        if trace is not None and finish:
            trace.finish(ran)
        return ran


# -- daemon workers --------------------------------------------------------------------------------------


class _Workers:
    """A pool of daemon threads that grows on demand up to MAX_WORKERS (ThreadPoolExecutor's workers are joined
    at interpreter exit, so one check that never returns would hang the process's exit)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._count = 0

    def submit(self, job: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._idle:
                self._idle -= 1  # this job is that idle worker's
            elif self._count < self._limit:
                self._count += 1
                threading.Thread(target=self._work, name=f"guardrails-check-{self._count}", daemon=True).start()
            self._jobs.put((future, job))
        return future

    def _work(self) -> None:
        while True:
            future, job = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as exc:  # delivered to the waiting phase, which re-raises it
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1


_workers: _Workers | None = None
_workers_lock = threading.Lock()


def _submit(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Run ``fn(*args)`` in a worker, in a copy of the caller's context (its current span, its settings)."""
    global _workers
    if _workers is None:
        with _workers_lock:
            if _workers is None:
                _workers = _Workers(MAX_WORKERS)
    context = contextvars.copy_context()
    return _workers.submit(lambda: context.run(fn, *args))
