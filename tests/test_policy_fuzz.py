"""Property tests: any YAML, valid or not, either loads or raises PolicyError; nothing else escapes."""

from __future__ import annotations

import contextlib

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrails_uq import PolicyError, loads_policy

KEYS = [
    "version",
    "name",
    "rules",
    "signals",
    "default",
    "on_error",
    "audit",
    "messages",
    "at",
    "when",
    "action",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["allow", "abstain", "input", "output", "app.x > 1.0", "true", "app.x", "(("]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=5),
    ),
    max_leaves=20,
)
rule = st.fixed_dictionaries(
    {
        "name": st.text(min_size=1, max_size=5),
        "at": st.sampled_from(["input", "retrieval", "output", "nowhere"]),
        "when": st.sampled_from(["app.x > 1.0", "app.y == 'a'", "true", "false", "app.x >", "app.z < 2", "1/0 > 1"]),
        "action": st.sampled_from(["allow", "abstain", "escalate", "deny"]),
    }
)
policies = st.fixed_dictionaries(
    {
        "version": st.sampled_from([1, 2, "1"]),
        "name": st.text(max_size=5),
        "signals": st.sampled_from([{"app.x": "number", "app.y": "string"}, {"app.x": "float"}, {"X": "number"}]),
        "rules": st.lists(rule, max_size=5),
    },
    optional={"default": scalars, "on_error": scalars, "extra": values},
)


def _loads(text: str) -> None:
    with contextlib.suppress(PolicyError):
        loads_policy(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_random_structures_only_raise_policy_error(data) -> None:
    _loads(yaml.safe_dump(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies)
def test_policy_shaped_documents_only_raise_policy_error(data) -> None:
    _loads(yaml.safe_dump(data))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text_only_raises_policy_error(text: str) -> None:
    _loads(text)
