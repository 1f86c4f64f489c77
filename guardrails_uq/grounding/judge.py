"""A judge endpoint as grounding scorer: an OpenAI-compatible model asked, per claim, about the evidence.

For each claim two questions go to the model (all requests of a call concurrently, ``concurrency`` at a
time): "Do the documents support the claim?" and "Do the documents contradict the claim?", each answered
with one token. P(yes) is read from the first token's ``top_logprobs``: the probability mass of tokens
spelling "yes" over that of "yes" and "no" (case and spaces ignored). Then P(supported) = P(yes | support),
P(contradicted) = (1 - P(supported)) * P(yes | contradict), P(unsupported) = the rest. A reply that spells
neither yes nor no among its alternatives, a timeout or an HTTP error raises (the check fails and
``on_error`` decides). The aligned sentence reported as evidence is the one sharing most content words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..call import Generation
from ..errors import ModelError
from .align import coverage, profile
from .scorer import ClaimScores, EvidenceSet

SUPPORT_PROMPT = (
    "Documents:\n{documents}\n\nClaim: {claim}\n\n"
    "Is the claim supported by the documents? Answer with one word, yes or no."
)
CONTRADICT_PROMPT = (
    "Documents:\n{documents}\n\nClaim: {claim}\n\n"
    "Do the documents contradict the claim? Answer with one word, yes or no."
)


def yes_probability(generation: Generation) -> float:
    """P(yes) / (P(yes) + P(no)) at the first generated token; ModelError when neither is among the
    token and its alternatives, or when there are no logprobs."""
    if not generation.tokens:
        raise ModelError("the judge returned no token logprobs (it must support logprobs and top_logprobs)")
    first = generation.tokens[0]
    mass = {"yes": 0.0, "no": 0.0}
    seen: set[str] = set()
    for token, logprob in [(first.token, first.logprob), *((t.token, t.logprob) for t in first.top)]:
        word = token.strip().lower()
        if word in mass and token not in seen:
            seen.add(token)
            mass[word] += math.exp(logprob)
    total = mass["yes"] + mass["no"]
    if total <= 0:
        raise ModelError(f"the judge answered {first.token!r}: neither yes nor no among its top alternatives")
    return mass["yes"] / total


class JudgeScorer:
    """Grounding scorer backed by a chat model with logprobs (``OpenAIChatModel`` or any object with
    ``generate(messages, max_tokens=, temperature=, top_logprobs=)``). Thread-safe if the model is."""

    def __init__(self, model: Any, *, concurrency: int = 4, top_logprobs: int = 10) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.model = model
        self.concurrency = concurrency
        self.top_logprobs = top_logprobs
        self.name = f"judge:{getattr(model, 'name', type(model).__name__)}"

    def describe(self) -> dict[str, Any]:
        """What the calibration artifact records about the judge (never the key)."""
        return {"name": self.name, "support_prompt": SUPPORT_PROMPT, "contradict_prompt": CONTRADICT_PROMPT}

    def _ask(self, prompt: str) -> float:
        generation = self.model.generate(
            [{"role": "user", "content": prompt}], max_tokens=1, temperature=0.0, top_logprobs=self.top_logprobs
        )
        return yes_probability(generation)

    def score(self, claims: Sequence[str], evidence: EvidenceSet) -> ClaimScores:
        documents = "\n".join(f"[{doc_id}] {text}" for doc_id, text in zip(evidence.ids, evidence.texts, strict=True))
        prompts = [SUPPORT_PROMPT.format(documents=documents, claim=c) for c in claims]
        prompts += [CONTRADICT_PROMPT.format(documents=documents, claim=c) for c in claims]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(len(prompts), 1))) as pool:
            answers = list(pool.map(self._ask, prompts))
        n = len(claims)
        probs = np.zeros((n, 3))
        for i in range(n):
            support = answers[i]
            contradiction = (1.0 - support) * answers[n + i]
            probs[i] = (support, contradiction, max(0.0, 1.0 - support - contradiction))
        aligned = tuple(
            int(np.argmax([coverage(profile(c).content, profile(s.text).content) for s in evidence.spans]))
            for c in claims
        )
        return ClaimScores(probs=probs, aligned=aligned)
