"""Loading a policy: valid files load; every kind of mistake is a PolicyError naming file, line and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import APP_POLICY

from guardrails_uq import PolicyError, load_policy, loads_policy


def test_valid_policy_loads_with_rules_per_phase(write_policy) -> None:
    policy = load_policy(write_policy(APP_POLICY))
    assert policy.name == "app-signals"
    assert [r.name for r in policy.phases["input"].rules] == ["toxic"]
    assert [r.name for r in policy.phases["output"].rules] == ["vip-review"]
    assert policy.catalogue["app.toxicity"].type == "number"


def _error(write_policy, text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_policy(write_policy(text))
    return info.value


def test_unknown_key_names_line_and_suggests(write_policy) -> None:
    err = _error(write_policy, APP_POLICY.replace("default: allow", "defualt: allow"))
    assert err.line == 8
    assert "unknown key 'defualt'" in str(err)
    assert "did you mean 'default'" in str(err)
    assert err.file and err.file.endswith("policy.yaml")


def test_unknown_nested_key_suggests_field_of_that_section(write_policy) -> None:
    err = _error(write_policy, APP_POLICY.replace("at: input", "att: input"))
    assert err.line == 5
    assert "did you mean 'at'" in str(err)


def test_wrong_type_names_the_field(write_policy) -> None:
    err = _error(write_policy, APP_POLICY.replace("action: abstain, message", "action: refuse, message"))
    assert err.line == 5
    assert "rules.0.action" in str(err)
    assert "'allow', 'abstain' or 'escalate'" in str(err)


def test_cel_syntax_error_shows_a_caret(write_policy) -> None:
    err = _error(write_policy, APP_POLICY.replace("app.toxicity > 0.8", "app.toxicity >"))
    assert err.rule == "toxic"
    assert "CEL syntax error" in str(err)
    assert "^" in str(err)
    assert err.line == 5


def test_rule_reading_unknown_signal_is_rejected_with_suggestion(write_policy) -> None:
    err = _error(write_policy, APP_POLICY.replace("app.toxicity > 0.8", "app.toxcity > 0.8"))
    assert "'app.toxcity'" in str(err)
    assert "did you mean 'app.toxicity'" in str(err)


def test_bare_identifier_is_an_unknown_signal(write_policy) -> None:
    err = _error(write_policy, APP_POLICY.replace("app.toxicity > 0.8", "toxicity > 0.8"))
    assert "'toxicity'" in str(err)


def test_type_mismatch_is_caught_at_load(write_policy) -> None:
    err = _error(write_policy, APP_POLICY.replace("app.toxicity > 0.8", "app.user_tier > 0.8"))
    assert "does not type-check" in str(err)
    assert "app.user_tier: string" in str(err)


def test_non_boolean_condition_is_rejected(write_policy) -> None:
    err = _error(write_policy, APP_POLICY.replace("app.toxicity > 0.8", "app.toxicity"))
    assert "not a bool" in str(err)


def test_rule_after_an_always_true_rule_is_unreachable(write_policy) -> None:
    text = APP_POLICY.replace('"app.toxicity > 0.8"', '"true"').replace("at: output", "at: input")
    err = _error(write_policy, text)
    assert "can never be reached" in str(err)
    assert err.rule == "vip-review"


def test_duplicate_condition_is_unreachable(write_policy) -> None:
    text = APP_POLICY.replace(
        "default: allow",
        '  - {name: again, at: input, when: "app.toxicity  >  0.8", action: escalate}\ndefault: allow',
    )
    err = _error(write_policy, text)
    assert "same condition" in str(err)


def test_always_false_rule_never_matches(write_policy) -> None:
    err = _error(write_policy, APP_POLICY.replace('"app.toxicity > 0.8"', '"1 > 2"'))
    assert "always false" in str(err)


def test_duplicate_rule_names(write_policy) -> None:
    err = _error(write_policy, APP_POLICY.replace("name: flagged", "name: toxic"))
    assert "duplicate rule name 'toxic'" in str(err)


def test_duplicate_yaml_keys_are_errors(write_policy) -> None:
    err = _error(write_policy, APP_POLICY + "default: abstain\n")
    assert "duplicate key 'default'" in str(err)


def test_yaml_syntax_error_has_line(write_policy) -> None:
    err = _error(write_policy, "version: 1\nname: x\nrules: [\n  {name: a\n")
    assert "invalid YAML" in str(err)
    assert err.line is not None


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="file not found"):
        load_policy(tmp_path / "nope.yaml")


def test_not_a_mapping(write_policy) -> None:
    assert "must be a YAML mapping" in str(_error(write_policy, "- a\n- b\n"))


def test_missing_required_key(write_policy) -> None:
    err = _error(write_policy, "version: 1\nrules: []\n")
    assert "missing required key 'name'" in str(err)


def test_audit_folder_must_exist(write_policy) -> None:
    err = _error(write_policy, APP_POLICY + "audit: {path: nowhere/audit.jsonl}\n")
    assert "audit.path" in str(err)


def test_bad_app_signal_name(write_policy) -> None:
    err = _error(write_policy, APP_POLICY.replace("app.flags: list", "Flags: list"))
    assert "dotted lowercase" in str(err)


def test_loads_policy_from_text() -> None:
    policy = loads_policy("version: 1\nname: t\n")
    assert policy.phases["input"].rules == ()


@pytest.mark.parametrize("when", ["1/0 > 1", "[1][3] == 1", "1"])
def test_constant_condition_that_fails_is_rejected(write_policy, when: str) -> None:
    err = _error(write_policy, APP_POLICY.replace('"app.toxicity > 0.8"', f'"{when}"'))
    assert err.rule == "toxic"
