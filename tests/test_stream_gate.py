"""The stream gate: output rules decide on the answer so far and cut before the user reads a violation;
``buffer`` mode releases nothing until the whole answer is decided."""

from __future__ import annotations

import pytest

from guardrails_uq import Action, Guard, Message, TokenLogprob, loads_policy
from guardrails_uq.streaming import StreamGate

POLICY = """
version: 1
name: stream
uncertainty: {score: max_nll}
rules:
  - {name: unsure-token, at: output, when: "uncertainty.available && uncertainty.max_nll > 5.0", action: abstain}
"""
PROMPT = [Message(role="user", content="What is the support phone number?")]


def pieces(unsure_at: int | None, n: int = 40) -> list[tuple[str, TokenLogprob]]:
    out = []
    for i in range(n):
        text = f" w{i}"
        out.append((text, TokenLogprob(token=text, logprob=-9.0 if i == unsure_at else -0.05)))
    return out


def run(gate: StreamGate, stream: list[tuple[str, TokenLogprob]]) -> tuple[list[str], Action]:
    released: list[str] = []
    for text, token in stream:
        released += gate.push(text, text, [token])
        if gate.cut is not None:
            break
    tail, decision = gate.finish()
    return released + tail, decision.action


@pytest.fixture
def guard() -> Guard:
    return Guard(loads_policy(POLICY), audit=False)


def test_an_unsure_token_is_cut_before_it_is_released(guard: Guard) -> None:
    gate = StreamGate(guard, PROMPT, window=4)
    released, action = run(gate, pieces(unsure_at=10))
    assert action is Action.ABSTAIN and gate.cut is not None
    assert " w10" not in released, "the user never reads the unsure token"
    assert len(released) <= 10 and gate.cut.metadata["stream_prefix_tokens"] <= 14
    assert gate.checks_run <= 3, "decided on the prefix at the window's cadence"


def test_without_incremental_rules_the_violation_is_only_caught_at_the_end(guard: Guard) -> None:
    gate = StreamGate(guard, PROMPT, window=4, incremental=False)
    released, action = run(gate, pieces(unsure_at=10))
    assert action is Action.ABSTAIN and " w10" in released, "the old behaviour: read first, refused after"


def test_a_clean_stream_is_released_whole(guard: Guard) -> None:
    gate = StreamGate(guard, PROMPT, window=4)
    released, action = run(gate, pieces(unsure_at=None))
    assert action is Action.ALLOW and "".join(released) == "".join(t for t, _ in pieces(None))


def test_buffer_mode_releases_nothing_until_decided(guard: Guard) -> None:
    gate = StreamGate(guard, PROMPT, mode="buffer")
    for text, token in pieces(unsure_at=None):
        assert gate.push(text, text, [token]) == []
    released, decision = gate.finish()
    assert decision.action is Action.ALLOW and len(released) == 40
    gate = StreamGate(guard, PROMPT, mode="buffer")
    for text, token in pieces(unsure_at=39):
        assert gate.push(text, text, [token]) == []
    assert gate.finish() == ([], gate.cut)


def test_unknown_mode_is_refused(guard: Guard) -> None:
    with pytest.raises(ValueError, match="'cut' or 'buffer'"):
        StreamGate(guard, PROMPT, mode="lazy")  # type: ignore[arg-type]


def test_prefix_decisions_never_reread_the_prefix(tmp_path, monkeypatch) -> None:
    """The cost of a stream grows linearly with its length: the prefix decisions read the incremental
    matcher and running token scores; the full checks read the answer once, at the end."""
    import json

    from guardrails_uq.provenance import build_index
    from guardrails_uq.provenance.check import ProvenanceCheck
    from guardrails_uq.uncertainty.check import UncertaintyCheck

    (tmp_path / "unsafe.jsonl").write_text(json.dumps({"id": "x", "text": "grind castor beans finely " * 3}) + "\n")
    build_index(tmp_path / "unsafe.jsonl", tmp_path / "index")
    policy = POLICY.replace(
        "uncertainty: {score: max_nll}", "uncertainty: {score: max_nll}\nprovenance: {index: index}"
    )
    guard = Guard(loads_policy(policy, base_dir=tmp_path), audit=False)
    read: list[int] = []
    for cls in (ProvenanceCheck, UncertaintyCheck):
        original = cls.run
        monkeypatch.setattr(
            cls, "run", lambda self, call, _run=original: read.append(len(call.generation.text)) or _run(self, call)
        )
    gate = StreamGate(guard, PROMPT, window=4)
    stream = pieces(unsure_at=None, n=400)
    released, action = run(gate, stream)
    answer = "".join(t for t, _ in stream)
    assert action is Action.ALLOW and "".join(released) == answer
    assert gate.checks_run >= 400 // 4 - 1, "decided on the prefix at the window's cadence"
    assert sum(read) <= 2 * len(answer), (
        f"the checks read {sum(read):,} characters of a {len(answer):,}-character answer"
    )


def test_a_prefix_that_fails_is_cut_with_the_full_decision(guard: Guard) -> None:
    gate = StreamGate(guard, PROMPT, window=4)
    released, action = run(gate, pieces(unsure_at=30, n=60))
    assert action is Action.ABSTAIN and " w30" not in released
    assert gate.cut is not None and "tokens" in gate.cut.evidence["uncertainty"], "the cut record has the evidence"
