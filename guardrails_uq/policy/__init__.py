"""Policies: the YAML schema, loading with file:line errors, CEL rules, lint and policy tests."""

from __future__ import annotations

from .cases import CaseResult, render_results, run_cases
from .loader import CompiledPolicy, SignalInfo, load_policy, loads_policy
from .outcome import Outcome, decide, decide_phase
from .schema import json_schema, policy_model

__all__ = [
    "CaseResult",
    "CompiledPolicy",
    "Outcome",
    "SignalInfo",
    "decide",
    "decide_phase",
    "json_schema",
    "load_policy",
    "loads_policy",
    "policy_model",
    "render_results",
    "run_cases",
]
