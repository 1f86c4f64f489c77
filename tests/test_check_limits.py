"""Time limits per check (``timeout_ms``) and concurrent checks in the async path (issue 24, item 4).

A check that hangs must not hang the request (sync and async), a timed-out check is recorded and ``on_error``
decides, independent checks of a phase really run at once in the async path (two checks that wait for each
other at a barrier), checks after a rewriting check still see what it wrote, and concurrency never changes a
Decision (the demo policy's real checks on the demo requests, sequential vs async)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from guardrails_uq import Action, Call, Generation, Guard, PolicyError, ScoredDocument, Signals, loads_policy
from guardrails_uq.checks import CheckSpec, SignalSpec, register, unregister
from guardrails_uq.policy.schema import CheckConfig

ROOT = Path(__file__).resolve().parent.parent


class Probe:
    """A check whose run is ``behave(call)``; the test decides what it does (hang, wait at a barrier, ...)."""

    def __init__(self, name: str, phase: str, behave: Callable[[Call], Signals]) -> None:
        self.name, self.phase, self._behave = name, phase, behave

    def run(self, call: Call) -> Signals:
        return self._behave(call)


BEHAVIOUR: dict[str, Callable[[Call], Signals]] = {}


def _spec(
    name: str, phase: str = "output", rewrites: frozenset[str] | None = frozenset(), waits: bool | None = None
) -> CheckSpec:
    class Config(CheckConfig):
        pass

    Config.__name__ = f"{name.title()}Config"
    return CheckSpec(
        name=name,
        phase=phase,  # type: ignore[arg-type]
        config=Config,
        signals={f"{name}.score": SignalSpec("number", "the probe's number")},
        build=lambda config, base_dir, deps: Probe(name, phase, lambda call: BEHAVIOUR[name](call)),
        rewrites=rewrites,
        waits=waits,
    )


@pytest.fixture
def probes() -> Iterator[dict[str, Callable[[Call], Signals]]]:
    """Register output checks ``slow``, ``left``, ``right`` and retrieval checks ``cut`` (rewrites documents)
    and ``count`` (reads them); the test sets what each does in the returned dict."""
    specs = [_spec("slow"), _spec("left"), _spec("right"), _spec("cut", "retrieval", frozenset({"documents"}))]
    specs += [_spec("compute", waits=False), _spec("fetch", waits=True)]
    specs.append(_spec("zcount", "retrieval"))  # sorted after "cut": runs after it in the phase
    for spec in specs:
        register(spec)
    BEHAVIOUR.clear()
    yield BEHAVIOUR
    for spec in specs:
        unregister(spec.name)


def score(value: float) -> Callable[[Call], Signals]:
    def run(call: Call) -> Signals:
        return Signals(values={"slow.score": value})

    return run


def hang(release: threading.Event, name: str = "slow") -> Callable[[Call], Signals]:
    def run(call: Call) -> Signals:
        release.wait(30)
        return Signals(values={f"{name}.score": 99.0})

    return run


SLOW_POLICY = """
version: 1
name: limits
slow: {{timeout_ms: {timeout}}}
rules:
  - {{name: high, at: output, when: "slow.score > 5.0", action: escalate}}
on_error: {on_error}
"""


@pytest.mark.timeout(20)
def test_a_hanging_check_does_not_hang_the_request_and_fails_closed(probes) -> None:
    release = threading.Event()
    probes["slow"] = hang(release)
    guard = Guard(loads_policy(SLOW_POLICY.format(timeout=50, on_error="abstain")), audit=False)
    try:
        decision = guard.after("an answer")
        assert decision.action is Action.ABSTAIN and decision.rule is None
        [failure] = decision.errors
        assert (failure.check, failure.phase, failure.type) == ("slow", "output", "CheckTimeoutError")
        assert "timeout_ms of 50 ms" in failure.error
        assert "slow.score" not in decision.signals, "a timed-out check's signals are missing"
        assert decision.timings_ms["slow"] >= 50
        again = asyncio.run(guard.aafter("an answer"))  # the async path too
        assert again.action is Action.ABSTAIN and [e.type for e in again.errors] == ["CheckTimeoutError"]
    finally:
        release.set()


@pytest.mark.timeout(20)
def test_a_timed_out_check_with_on_error_allow_is_recorded_and_its_late_result_discarded(probes) -> None:
    release = threading.Event()
    probes["slow"] = hang(release)
    guard = Guard(loads_policy(SLOW_POLICY.format(timeout=30, on_error="allow")), audit=False)
    decision = guard.after("an answer")
    release.set()  # the check now returns 99.0, which would have escalated: too late, discarded
    assert decision.action is Action.ALLOW and decision.rule_label == "(on_error)"
    # the rule reading the missing signal fails too, recorded after the timeout (on_error decides both)
    assert [(e.check, e.type) for e in decision.errors] == [
        ("slow", "CheckTimeoutError"),
        ("rules", "RuleEvaluationError"),
    ]
    assert "slow.score" not in decision.signals
    probes["slow"] = score(9.0)  # a check that answers in time still decides as before
    assert guard.after("an answer").rule == "high"


def test_a_check_within_its_time_limit_decides_as_without_one(probes) -> None:
    probes["slow"] = score(9.0)
    decision = Guard(loads_policy(SLOW_POLICY.format(timeout=5000, on_error="abstain")), audit=False).after("x")
    assert decision.rule == "high" and decision.signals["slow.score"] == 9.0 and not decision.errors


@pytest.mark.timeout(30)
def test_many_hung_checks_never_hold_a_request_past_its_limit(probes) -> None:
    """More hung checks than the worker pool has threads: later requests still end (queued, then timed out)."""
    from guardrails_uq import checkrun

    release = threading.Event()
    probes["slow"] = hang(release)
    guard = Guard(loads_policy(SLOW_POLICY.format(timeout=20, on_error="abstain")), audit=False)
    try:
        decisions = [guard.after("x") for _ in range(checkrun.MAX_WORKERS + 5)]
        assert all(d.action is Action.ABSTAIN and d.errors[0].type == "CheckTimeoutError" for d in decisions)
    finally:
        release.set()


@pytest.mark.parametrize(
    "section, problem",
    [("{timeout_ms: 0}", "greater than 0"), ("{timeout_ms: -5}", "greater than 0"), ("{timeout_ms: soon}", "number")],
)
def test_a_bad_timeout_is_a_policy_error_naming_the_field(probes, section: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=rf"slow\.timeout_ms.*{problem}") as caught:
        loads_policy(f"version: 1\nname: p\nslow: {section}\n", file="limits.yaml")
    assert "limits.yaml:3" in str(caught.value)


BARRIER_POLICY = """
version: 1
name: together
left: {}
right: {}
rules:
  - {name: both, at: output, when: "left.score + right.score > 1.0", action: escalate}
"""


@pytest.mark.timeout(30)
def test_independent_checks_of_a_phase_run_at_once_in_the_async_path(probes) -> None:
    """``left`` and ``right`` each wait for the other at a barrier: run one after the other, the first breaks
    the barrier (an error, on_error); run at once, both pass it and the rule decides."""
    barrier = threading.Barrier(2, timeout=3)

    def meet(name: str) -> Callable[[Call], Signals]:
        def run(call: Call) -> Signals:
            barrier.wait()
            return Signals(values={f"{name}.score": 1.0})

        return run

    probes["left"], probes["right"] = meet("left"), meet("right")
    guard = Guard(loads_policy(BARRIER_POLICY), audit=False)
    together = asyncio.run(guard.aafter("an answer"))
    assert not together.errors and together.rule == "both"
    barrier.reset()
    alone = guard.after("an answer")  # the sync path stays sequential: the first check waits alone
    assert alone.errors and alone.errors[0].type == "BrokenBarrierError"


WHERE_POLICY = """
version: 1
name: where
compute: {}
fetch: {}
left: {}
rules:
  - {name: all, at: output, when: "compute.score + fetch.score + left.score == 3.0", action: escalate}
"""


def test_the_async_path_sends_only_checks_that_may_wait_to_workers(probes) -> None:
    """A check that computes (``waits=False``, as every built-in check without an endpoint) runs in the phase's
    own thread, where it would hold the GIL anyway; one that waits on an endpoint (``waits=True``), or that
    nobody vouches for (``left``: no ``waits``), runs in a worker meanwhile. Same Decision as the sync path."""
    threads: dict[str, str] = {}

    def note(name: str) -> Callable[[Call], Signals]:
        def run(call: Call) -> Signals:
            threads[name] = threading.current_thread().name
            return Signals(values={f"{name}.score": 1.0})

        return run

    probes.update(compute=note("compute"), fetch=note("fetch"), left=note("left"))
    guard = Guard(loads_policy(WHERE_POLICY), audit=False)

    async def decide() -> tuple[object, str]:
        decision = await guard.aafter("an answer")
        return decision, threads["compute"]

    decision, _ = asyncio.run(decide())
    assert decision.rule == "all" and not decision.errors
    assert threads["fetch"].startswith("guardrails-check-") and threads["left"].startswith("guardrails-check-")
    assert not threads["compute"].startswith("guardrails-check-"), threads
    threads.clear()
    assert guard.after("an answer").rule == "all"
    assert len(set(threads.values())) == 1, "the sync path runs every check in the caller's thread"


def test_a_stage_where_no_check_waits_runs_in_order_in_one_thread(probes) -> None:
    order: list[tuple[str, str]] = []

    def note(name: str) -> Callable[[Call], Signals]:
        def run(call: Call) -> Signals:
            order.append((name, threading.current_thread().name))
            return Signals(values={f"{name}.score": 1.0})

        return run

    probes.update(compute=note("compute"))
    text = "version: 1\nname: one\ncompute: {}\nrules: [{name: c, at: output, when: 'compute.score == 1.0', action: abstain}]\n"
    decision = asyncio.run(Guard(loads_policy(text), audit=False).aafter("an answer"))
    assert decision.rule == "c" and [name for name, _ in order] == ["compute"]
    assert not order[0][1].startswith("guardrails-check-")


def test_every_built_in_check_says_whether_it_waits() -> None:
    """A built-in check that forgot to declare ``waits`` would be sent to a worker for nothing."""
    from guardrails_uq.checks import registry

    undeclared = [name for name, spec in registry().items() if spec.waits is None]
    assert not undeclared, f"declare waits= in the CheckSpec of {undeclared}"


REWRITE_POLICY = """
version: 1
name: rewrite
cut: {}
zcount: {}
rules:
  - {name: none-left, at: retrieval, when: "zcount.score == 0.0", action: abstain}
"""


def test_a_check_after_a_rewriting_check_sees_what_it_wrote_in_the_async_path(probes) -> None:
    probes["cut"] = lambda call: Signals(values={"cut.score": 0.0}, documents=[])
    probes["zcount"] = lambda call: Signals(values={"zcount.score": float(len(call.documents or []))})
    guard = Guard(loads_policy(REWRITE_POLICY), audit=False)
    docs = [ScoredDocument(id="a", text="alpha", score=0.9), ScoredDocument(id="b", text="beta", score=0.8)]
    sequential = guard.retrieve("q", docs)
    concurrent = asyncio.run(guard.aretrieve("q", docs))
    assert sequential.rule == concurrent.rule == "none-left"
    assert concurrent.documents == [] and concurrent.signals["zcount.score"] == 0.0


def test_a_check_nobody_vouches_for_runs_alone() -> None:
    """A check with no registry entry and no ``rewrites`` may rewrite the call: it ends its stage."""
    from guardrails_uq.checkrun import may_rewrite

    assert may_rewrite(Probe("unknown-check", "output", score(1.0)))
    vouched = Probe("unknown-check", "output", score(1.0))
    vouched.rewrites = frozenset()  # type: ignore[attr-defined]
    assert not may_rewrite(vouched)


@pytest.mark.slow
def test_concurrency_never_changes_a_decision_on_the_demo_policy() -> None:
    """The demo policy's real checks (MiniLM, FAISS, suffix arrays, grounding) on the demo requests with answers
    that allow, abstain and escalate: the async (concurrent) Decision equals the sequential one, every phase."""
    import yaml

    from guardrails_uq import Message, TokenLogprob
    from guardrails_uq.testing import read_jsonl

    guard = Guard.from_policy(ROOT / "policies" / "demo.yaml", audit=False)
    kb = read_jsonl(ROOT / "examples" / "data" / "nimbus_kb.jsonl")
    chunks = [ScoredDocument(id=row["id"], text=row["text"], score=0.8 - 0.01 * i) for i, row in enumerate(kb[:6])]

    def sure(text: str) -> Generation:
        return Generation(text=text, tokens=[TokenLogprob(token=w + " ", logprob=-0.05) for w in text.split(" ")])

    answers = [
        sure(chunks[0].text),  # grounded in the kept chunks
        sure("Nimbus Pro costs 3 dollars a year and runs only on typewriters."),  # not in the evidence
        Generation(text="I think so."),  # no logprobs: escalate
    ]
    requests = yaml.safe_load((ROOT / "examples" / "demo_requests.yaml").read_text(encoding="utf-8"))
    seen = set()
    for request in requests[:8]:
        messages = [Message(role="user", content=request["text"])]
        before = guard.before(messages)
        assert before.model_dump(exclude={"id", "time", "request_id", "timings_ms"}) == asyncio.run(
            guard.abefore(messages)
        ).model_dump(exclude={"id", "time", "request_id", "timings_ms"})
        retrieved = guard.retrieve(request["text"], chunks, context=before)
        for answer in answers:
            one = guard.after(answer, context=retrieved)
            other = asyncio.run(guard.aafter(answer, context=retrieved))
            same = {"id", "time", "timings_ms"}
            assert one.model_dump(exclude=same) == other.model_dump(exclude=same)
            seen.add((one.action, one.rule))
    assert len({action for action, _ in seen}) == 3, f"the cases should allow, abstain and escalate: {seen}"


def test_grounding_waits_only_when_a_judge_endpoint_scores() -> None:
    from guardrails_uq.checkrun import may_wait
    from guardrails_uq.checks import CheckDeps, registry
    from guardrails_uq.embeddings import as_embedder

    spec = registry()["grounding"]
    judged = loads_policy('version: 1\nname: j\ngrounding: {judge: {url: "http://127.0.0.1:9/v1", model: judge}}\n')
    assert may_wait(spec.build(judged.section("grounding"), judged.base_dir, CheckDeps()))
    demo = loads_policy((ROOT / "policies" / "demo.yaml").read_text(), base_dir=ROOT / "policies")
    offline = spec.build(demo.section("grounding"), demo.base_dir, CheckDeps(embedder=as_embedder()))
    assert not may_wait(offline)
