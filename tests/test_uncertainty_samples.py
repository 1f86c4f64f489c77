"""Samples where they are cheap: `uncertainty: {samples: N}`, the answer and N samples from one request
(OpenAI-compatible client) or one batched decoding loop (embedded SmolLM2), the proxy's helpers, and
sample scores that tell "you can" from "you cannot"."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest

from guardrails_uq import Action, Generation, Guard, ModelError, PolicyError, TokenLogprob, loads_policy
from guardrails_uq.models.openai_compat import OpenAIChatModel, combine_samples
from guardrails_uq.testing import ChatCompletionsServer
from guardrails_uq.uncertainty.samples import requested_samples, upstream_n, with_samples

USER = [{"role": "user", "content": "Can I cancel at any time?"}]
ANSWER = Generation(text="You can cancel at any time.", tokens=[TokenLogprob(token="You can cancel", logprob=-0.2)])
CONTRADICTION = "You cannot cancel at any time."


def replies(*texts: str):
    """A responder giving ANSWER (with logprobs) for choice 0, then ``texts`` in turn for the other choices."""
    queue = itertools.cycle([ANSWER, *(Generation(text=t, tokens=ANSWER.tokens) for t in texts)])
    return lambda request: next(queue)


def test_client_gets_answer_and_samples_from_one_request() -> None:
    with ChatCompletionsServer(replies("You can cancel anytime.", CONTRADICTION, "Yes, you can.")) as server:
        client = OpenAIChatModel(server.base_url, "small", backoff=0.01)
        generation = client.generate_with_samples(USER, 3, temperature=0.8, max_tokens=16)
        assert len(server.requests) == 1, "one request for the answer and its samples"
        request = server.requests[0]
        assert request["n"] == 4 and request["temperature"] == 0.8 and request["logprobs"] is True
    assert generation.text == ANSWER.text and generation.tokens == ANSWER.tokens
    assert generation.samples == ["You can cancel anytime.", CONTRADICTION, "Yes, you can."]


def test_client_async_and_a_server_that_ignores_n() -> None:
    with ChatCompletionsServer(replies("a", "b")) as server:
        client = OpenAIChatModel(server.base_url, "small", backoff=0.01)
        generation = asyncio.run(client.agenerate_with_samples(USER, 2))
        assert generation.samples == ["a", "b"] and server.requests[0]["n"] == 3
    with pytest.raises(ModelError, match=r"asked for 3 choices .* got 1; the server ignores `n`"):
        combine_samples([ANSWER], 2, "http://x/v1")


def test_proxy_helpers_split_shown_choices_from_samples() -> None:
    policy = loads_policy("version: 1\nname: s\nuncertainty: {samples: 3}\n")
    assert requested_samples(policy) == 3 and requested_samples(loads_policy("version: 1\nname: s\n")) == 0
    assert upstream_n(2, 3) == 5
    choices = [Generation(text=t) for t in ("shown 0", "shown 1", "s0", "s1", "s2")]
    shown = with_samples(choices, 2)
    assert [g.text for g in shown] == ["shown 0", "shown 1"]
    assert all(g.samples == ["s0", "s1", "s2"] for g in shown)
    assert with_samples(choices[:1], 1) == choices[:1], "no extra choices: no samples, no error"


@pytest.mark.parametrize(
    "section, message",
    [
        ("{samples: -1}", "greater than or equal to 0"),
        ("{samples: 1000}", "less than or equal to 32"),
        ("{similarity: nli}", "cosine"),
        ("{sar: maybe}", "bool"),
    ],
)
def test_policy_rejects_bad_sample_settings(section: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        loads_policy(f"version: 1\nname: s\nuncertainty: {section}\n")


class SameVector:
    """An embedder that cannot tell texts apart (every text the same vector), like MiniLM on 'can'/'cannot'."""

    name = "same-vector"

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.tile([[1.0, 0.0]], (len(texts), 1))


POLICY = """
version: 1
name: samples
uncertainty: {samples: 2, similarity: SIMILARITY}
rules:
  - {name: disagree, at: output, when: "uncertainty.num_sem_sets > 1.0", action: escalate}
"""


@pytest.mark.parametrize("similarity, action", [("cosine", Action.ALLOW), ("combined", Action.ESCALATE)])
def test_contradicting_samples_escalate_with_the_combined_similarity(similarity: str, action: Action) -> None:
    guard = Guard(loads_policy(POLICY.replace("SIMILARITY", similarity)), embedder=SameVector(), audit=False)
    generation = ANSWER.model_copy(update={"samples": ["You can cancel anytime.", CONTRADICTION]})
    decision = guard.after(generation)
    assert decision.action is action
    assert decision.signals["uncertainty.samples"] == 2
    assert decision.signals["uncertainty.semantic_volume"] is not None


@pytest.mark.slow
def test_local_model_samples_in_one_batched_loop() -> None:
    """Answer + N samples: one forward pass per step over N + 1 rows (not N + 1 generations); row 0 is
    the greedy answer; the samples are reproducible with the seed."""
    from guardrails_uq.models.local import _load, default_model

    model = default_model()
    torch_model, _ = _load()
    calls: list[int] = []
    hook = torch_model.register_forward_hook(lambda module, args, kwargs_out: calls.append(1))
    try:
        generation = model.generate_with_samples(USER, 4, max_tokens=6, seed=3)
    finally:
        hook.remove()
    assert len(calls) <= 1 + 6, f"{len(calls)} forward passes for 6 steps"
    assert len(generation.samples) == 4 and generation.tokens
    assert generation.text == model.generate(USER, max_tokens=6).text, "row 0 is the greedy answer"
    again = model.generate_with_samples(USER, 4, max_tokens=6, seed=3)
    assert again.samples == generation.samples
    answer, samples = model.answer_and_samples(USER, 2, max_tokens=4, seed=3)
    assert answer.tokens and answer.tokens[0].top, "the answer keeps its alternatives"
    assert all(s.tokens and all(t.logprob <= 0 and not t.top for t in s.tokens) for s in samples)
