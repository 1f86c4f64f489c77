"""Sampled answers for the sample-based scores, obtained in the same call as the answer.

``uncertainty: {samples: N}`` asks every path that calls the model to request N extra samples in the same
request: the OpenAI-compatible client (:meth:`~guardrails_uq.models.openai_compat.OpenAIChatModel.generate_with_samples`,
``n = 1 + N``), the embedded model (:meth:`~guardrails_uq.models.local.LocalModel.generate_with_samples`,
one batched decoding loop) and the proxy (the helpers below). The samples reach the check as
``Generation.samples``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..call import Generation


def requested_samples(policy: Any) -> int:
    """N from the policy's ``uncertainty: {samples: N}`` (0 without the section or the key)."""
    section = policy.section("uncertainty") if hasattr(policy, "section") else getattr(policy, "uncertainty", None)
    return int(getattr(section, "samples", 0) or 0)


def upstream_n(shown: int, samples: int) -> int:
    """Choices to request upstream: the ``shown`` ones the client asked for, plus ``samples`` extra."""
    return shown + samples


def with_samples(generations: Sequence[Generation], shown: int) -> list[Generation]:
    """The first ``shown`` choices, each carrying as ``samples`` the texts of the extra choices after them
    (those are never shown to the client). Fewer extra choices than asked (a server that ignores ``n``)
    give fewer samples, never an error: the check reports how many it saw in ``uncertainty.samples`` and
    the sample scores are null below 2 texts."""
    extra = [g.text for g in generations[shown:]]
    return [g.model_copy(update={"samples": extra}) if extra else g for g in generations[:shown]]
