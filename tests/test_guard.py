"""The Guard: phases, first-match, default, on_error, signal carrying, thread and task safety."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import APP_POLICY

from guardrails_uq import Action, Call, Generation, Guard, InputError, Message, ScoredDocument, loads_policy
from guardrails_uq.checks import CheckSpec, SignalSpec, register, registry, unregister
from guardrails_uq.testing import FailingCheck, StaticCheck, assert_conforms

USER = [Message(role="user", content="hello")]


@pytest.fixture
def guard() -> Guard:
    return Guard(loads_policy(APP_POLICY), audit=False)


def test_input_rule_abstains_with_its_message(guard: Guard) -> None:
    decision = guard.before(USER, signals={"app.toxicity": 0.9, "app.user_tier": "free", "app.flags": []})
    assert decision.action is Action.ABSTAIN
    assert decision.rule == "toxic"
    assert decision.message == "No."
    assert decision.inputs == {"app.toxicity": 0.9}


def test_no_match_before_last_phase_is_provisional_allow(guard: Guard) -> None:
    decision = guard.before(USER, signals={"app.toxicity": 0.1, "app.user_tier": "free", "app.flags": []})
    assert decision.action is Action.ALLOW and decision.rule is None


def test_output_phase_applies_default() -> None:
    policy = loads_policy(APP_POLICY.replace("default: allow", "default: abstain"))
    guard = Guard(policy, audit=False)
    decision = guard.after("fine", signals={"app.toxicity": 0.1, "app.user_tier": "free", "app.flags": []})
    assert decision.action is Action.ABSTAIN and decision.rule is None
    assert decision.message == policy.model.messages.abstain


def test_check_runs_phases_in_order_and_stops_at_first_decision(guard: Guard) -> None:
    call = Call(
        messages=USER,
        documents=[ScoredDocument(id="d1", score=0.5)],
        generation=Generation(text="hi"),
        signals={"app.toxicity": 0.6, "app.user_tier": "vip", "app.flags": ["pii"]},
    )
    decision = guard.check(call)
    assert decision.phase == "retrieval" and decision.rule == "flagged"
    decision = guard.check(call.model_copy(update={"signals": {**call.signals, "app.flags": []}}))
    assert decision.phase == "output" and decision.rule == "vip-review"
    assert decision.action is Action.ESCALATE


def test_undeclared_or_mistyped_app_signal_is_a_clear_error(guard: Guard) -> None:
    with pytest.raises(InputError, match=r"'app\.unknown' is not declared"):
        guard.before(USER, signals={"app.unknown": 1})
    with pytest.raises(InputError, match="must be a number"):
        guard.before(USER, signals={"app.toxicity": "high"})


def test_failing_check_fails_closed_and_is_recorded() -> None:
    policy = loads_policy(APP_POLICY)
    guard = Guard(policy, audit=False, checks=[FailingCheck("broken", "output", ValueError("model down"))])
    decision = guard.after("x", signals={"app.toxicity": 0.0, "app.user_tier": "free", "app.flags": []})
    assert decision.action is Action.ABSTAIN
    assert decision.rule is None
    assert decision.errors[0].check == "broken" and "model down" in decision.errors[0].error
    assert decision.message == policy.model.messages.error


def test_on_error_allow_still_runs_rules() -> None:
    policy = loads_policy(APP_POLICY.replace("default: allow", "default: allow\non_error: allow"))
    guard = Guard(policy, audit=False, checks=[FailingCheck("broken", "output")])
    decision = guard.after("x", signals={"app.toxicity": 0.6, "app.user_tier": "vip", "app.flags": []})
    assert decision.rule == "vip-review"
    assert decision.errors


def test_rule_error_yields_on_error_labelled_on_error_and_names_the_rule() -> None:
    text = APP_POLICY.replace('"app.toxicity > 0.8"', '"app.flags[0] == \\"x\\""')
    guard = Guard(loads_policy(text), audit=False)
    decision = guard.before(USER, signals={"app.toxicity": 0.1, "app.user_tier": "free", "app.flags": []})
    assert decision.action is Action.ABSTAIN
    assert decision.errors[0].check == "rules"
    assert "'toxic'" in decision.errors[0].error  # the failing rule is named in the error...
    assert decision.rule is None  # ...but it did not decide: metrics, stats and the report say (on_error)
    assert decision.rule_label == "(on_error)"


@pytest.fixture
def probe():
    """Register a tiny 'probe' check for the test, and remove it afterwards."""

    class ProbeConfig(__import__("pydantic").BaseModel):
        limit: float = 1.0

    def build(config, base_dir, deps):
        return StaticCheck("probe", "output", compute=lambda call: {"probe.length": float(len(call.generation.text))})

    register(
        CheckSpec(
            name="probe",
            phase="output",
            config=ProbeConfig,
            signals={"probe.length": SignalSpec("number", "characters in the answer")},
            build=build,
        )
    )
    yield registry()["probe"]
    unregister("probe")


def test_registered_check_is_built_from_its_section_and_feeds_rules(probe) -> None:
    policy = loads_policy(
        "version: 1\nname: p\nprobe: {limit: 3}\nrules:\n"
        '  - {name: long, at: output, when: "probe.length > 3.0", action: abstain}\n'
    )
    guard = Guard(policy, audit=False)
    assert guard.after("ab").action is Action.ALLOW
    long = guard.after("abcdef")
    assert long.rule == "long" and long.signals["probe.length"] == 6.0
    assert_conforms(guard.checks["output"][0], probe, [Call(generation=Generation(text="abc"))])


def test_check_that_omits_a_declared_signal_fails_closed(probe) -> None:
    policy = loads_policy("version: 1\nname: p\nprobe: {}\n")
    guard = Guard(policy, audit=False, checks=[StaticCheck("probe", "output", values={})])
    decision = guard.after("abc")
    assert decision.action is Action.ABSTAIN
    assert "did not produce" in decision.errors[0].error


def test_one_guard_is_safe_across_threads(guard: Guard) -> None:
    def run(i: int) -> tuple[int, str | None]:
        signals = {
            "app.toxicity": (i % 10) / 10,
            "app.user_tier": "vip" if i % 3 == 0 else "free",
            "app.flags": [],
        }
        d = guard.after("x", signals=signals)
        return i, d.rule

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(400)))
    for i, rule in results:
        expected = "vip-review" if i % 3 == 0 and (i % 10) / 10 > 0.5 else None
        assert rule == expected


def test_async_variants_run_concurrently(guard: Guard) -> None:
    async def main() -> list[str | None]:
        signals = {"app.toxicity": 0.9, "app.user_tier": "free", "app.flags": []}
        decisions = await asyncio.gather(*(guard.abefore(USER, signals=signals) for _ in range(50)))
        return [d.rule for d in decisions]

    assert asyncio.run(main()) == ["toxic"] * 50


def test_decision_json_round_trip(guard: Guard) -> None:
    decision = guard.after("x", signals={"app.toxicity": 0.6, "app.user_tier": "vip", "app.flags": ["a"]})
    again = type(decision).model_validate_json(decision.model_dump_json())
    assert again == decision
    assert "vip-review" in decision.explain()


def test_one_request_one_id_and_an_earlier_abstain_is_the_verdict(guard: Guard) -> None:
    calm = {"app.toxicity": 0.1, "app.user_tier": "free", "app.flags": []}
    before = guard.before(USER, signals=calm)
    retrieved = guard.retrieve("hello", [ScoredDocument(id="d", score=0.5)], context=before)
    after = guard.after("hi", context=retrieved)
    assert before.request_id == retrieved.request_id == after.request_id
    assert len({before.id, retrieved.id, after.id}) == 3
    assert guard.before(USER, signals=calm).request_id != before.request_id, "a new request, a new id"
    assert guard.after("x", request_id="req-7").request_id == "req-7"
    # an app that carries on after an input abstain still gets the abstain, and the log keeps what it generated
    blocked = guard.before(USER, signals={**calm, "app.toxicity": 0.95})
    carried = guard.after(Generation(text="Sure, here is how..."), context=blocked)
    assert carried.action is Action.ABSTAIN and carried.rule == "toxic" and carried.message == "No."
    assert carried.phase == "output" and carried.request_id == blocked.request_id
    assert carried.generated == "Sure, here is how..." and carried.metadata["decided_at"] == "input"
