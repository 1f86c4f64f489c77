"""The public surface changes only on purpose (like httpx's test_exported_members)."""

from __future__ import annotations

import guardrails_uq

EXPECTED = {
    "AbstainViolation", "Action", "ArtifactError", "Call", "Check", "CheckError", "CheckFailure", "CheckSpec", "CompiledPolicy",
    "Decision", "Embedder", "EscalateViolation", "Generation", "Guard", "GuardrailViolation", "GuardrailsError", "InputError",
    "Message", "ModelError", "NotFittedError", "PolicyError", "RuleEvaluationError", "ScoredDocument", "Shadow",
    "SignalSpec", "Signals", "TokenLogprob", "ToolCall", "TopLogprob", "__version__", "as_embedder", "load_policy",
    "loads_policy", "open_audit", "read_audit", "violation_for",
}  # fmt: skip


def test_exported_members() -> None:
    assert set(guardrails_uq.__all__) == EXPECTED
    assert guardrails_uq.__all__ == sorted(guardrails_uq.__all__, key=str)
    for name in guardrails_uq.__all__:
        assert hasattr(guardrails_uq, name), name


def test_every_error_is_a_guardrails_error() -> None:
    for name in guardrails_uq.__all__:
        obj = getattr(guardrails_uq, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, guardrails_uq.GuardrailsError), name
            assert obj.__doc__, f"{name} needs a one-line docstring"


def test_importing_loads_no_model_or_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, guardrails_uq; "
        "bad = [m for m in ('torch', 'sentence_transformers', 'transformers', 'langchain_core', 'llama_index')"
        " if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
