"""Every error guardrails-uq raises crosses process boundaries (Ray, process pools) as itself."""

from __future__ import annotations

import pickle

import pytest

from guardrails_uq import errors


@pytest.mark.parametrize(
    "error",
    [
        errors.ArtifactError("/idx/manifest.json", "manifest was edited", fix="rebuild it"),
        errors.PolicyError("unknown signal", file="policy.yaml", line=7, fix="did you mean x?", rule="r"),
        errors.RuleEvaluationError("no such key", file="policy.yaml", line=3),
        errors.CheckError("provenance", "index missing"),
        errors.InputError("line is not JSON", source="corpus.jsonl", line=12),
        errors.GuardrailsError("plain"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle_as_themselves(error: errors.GuardrailsError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)
