"""Fuzzing hostile model output through the library and through the proxy.

Every generated answer is malformed on purpose (an impossible logprob, a content of the wrong type, a broken
choice or logprobs object), mixed with unicode junk. The only acceptable outcomes: a Decision that is not
allow, or a clear HTTP error carrying one; and every body the proxy sends is strict JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve import Running, make_folder

from guardrails_uq import Generation, Guard, TokenLogprob, TopLogprob, load_policy
from guardrails_uq.server import ServeConfig, create_app
from guardrails_uq.testing import ChatCompletionsServer, ScriptedReply

JUNK = st.text(
    alphabet=st.sampled_from(["a", " ", "\u200b", "\u200f", "\u00ad", "\x00", "ｈ", "\ud800", "é", "\n", "\u202e"]),
    max_size=20,
)
#: Values a logprob can never be: positive beyond rounding, infinite, not a number.
IMPOSSIBLE = st.one_of(
    st.floats(min_value=1e-3, max_value=1e6),
    st.sampled_from([math.inf, -math.inf, math.nan]),
)
#: Values of the wrong type for a logprob on the wire.
WRONG_TYPE = st.one_of(st.text(max_size=5), st.lists(st.integers(), max_size=3), st.booleans(), st.none(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))  # fmt: skip


def valid_token(text: str) -> dict:
    return {"token": text, "logprob": -0.1, "top_logprobs": [{"token": text, "logprob": -0.1}]}


@st.composite
def malformed_choice(draw: st.DrawFn) -> dict:
    """A choice with exactly one kind of damage, chosen at random."""
    text = "Open Settings " + draw(JUNK)
    tokens = [valid_token(w) for w in text.split(" ") if w] or [valid_token("x")]
    damage = draw(st.sampled_from(["impossible", "wrong_type", "content", "logprobs_shape", "message", "top"]))
    message: object = {"role": "assistant", "content": text}
    logprobs: object = {"content": tokens}
    position = draw(st.integers(min_value=0, max_value=len(tokens) - 1))
    if damage == "impossible":
        tokens[position]["logprob"] = draw(IMPOSSIBLE)
    elif damage == "top":
        tokens[position]["top_logprobs"][0]["logprob"] = draw(IMPOSSIBLE)
    elif damage == "wrong_type":
        tokens[position]["logprob"] = draw(WRONG_TYPE)
    elif damage == "content":
        message = {"role": "assistant", "content": draw(st.one_of(st.integers(), st.lists(st.integers(), min_size=1), st.dictionaries(st.text(max_size=3), st.integers(), min_size=1)))}  # fmt: skip
    elif damage == "logprobs_shape":
        logprobs = draw(st.one_of(st.lists(st.floats(allow_nan=False), min_size=1, max_size=3), st.text(min_size=1, max_size=5), st.just({"content": "abc"}), st.just({"content": [1, 2]})))  # fmt: skip
    else:
        message = draw(st.one_of(st.none(), st.text(max_size=5), st.lists(st.integers(), max_size=2)))
    return {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": "stop"}


@st.composite
def malformed_body(draw: st.DrawFn) -> object:
    if draw(st.integers(min_value=0, max_value=9)) == 0:  # the whole body is wrong
        return draw(st.one_of(st.just({"choices": []}), st.just({"choices": "x"}), st.just([]), st.just({})))
    return {"id": "x", "object": "chat.completion", "choices": [draw(malformed_choice())]}


def strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


def test_hostile_output_through_the_proxy_never_allows(folder: Path) -> None:
    with ChatCompletionsServer() as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base, httpx.Client(timeout=20) as client:

            @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(body=malformed_body())
            def run(body: object) -> None:
                upstream.script.append(ScriptedReply(200, json.dumps(body).encode()))
                response = client.post(
                    f"{base}/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "How do I export?"}]},
                )
                payload = strict(response.text)
                assert isinstance(payload, dict)
                decision = payload["guardrails"]
                assert decision["action"] != "allow", (body, payload)
                assert decision["errors"], "the failure is recorded in the Decision"
                if response.status_code != 200:
                    assert 400 <= response.status_code < 600 and payload["error"]["message"]

            run()


@settings(max_examples=150, deadline=None, database=None)
@given(
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=8),
    junk=JUNK,
    bad=st.integers(min_value=0, max_value=7),
    impossible=IMPOSSIBLE,
    in_top=st.booleans(),
)
def test_hostile_logprobs_in_the_library_never_allow(values, junk, bad, impossible, in_top, tmp_path_factory) -> None:
    guard = _guard(tmp_path_factory)
    values = [v if math.isfinite(v) and v <= 0 else -0.1 for v in values]
    position = bad % len(values)
    tokens = []
    for i, value in enumerate(values):
        chosen = impossible if (i == position and not in_top) else value
        top = impossible if (i == position and in_top) else value
        tokens.append(TokenLogprob(token=f"w{i}{junk}", logprob=chosen, top=[TopLogprob(token="t", logprob=top)]))
    decision = guard.after(Generation(text="".join(t.token for t in tokens), tokens=tokens))
    assert decision.action.value != "allow" and decision.rule_label == "(on_error)"
    json.loads(decision.model_dump_json())  # serialisable, whatever the junk


_GUARDS: dict[str, Guard] = {}


def _guard(factory: pytest.TempPathFactory) -> Guard:
    if "guard" not in _GUARDS:
        folder = make_folder(factory.mktemp("fuzz"))
        _GUARDS["guard"] = Guard(load_policy(folder / "policy.yaml"), audit=False)
    return _GUARDS["guard"]
