"""Shadow mode: rules (or a whole policy) that are evaluated and recorded but never change what the client gets.

Real parts: the real policy loader and CEL rules, a real Guard, real JSONL and SQLite audit logs, the real CLI
(``audit stats``, ``replay --shadow``, ``policy check``), the HTML report, and the guard proxy served by uvicorn
on 127.0.0.1 in front of the test chat-completions server.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from test_serve import POLICY as PROXY_POLICY
from test_serve import Running, ask, make_folder, upstream_reply

from guardrails_uq import Action, Generation, Guard, PolicyError, loads_policy, read_audit
from guardrails_uq.audit import open_audit, stats
from guardrails_uq.call import Call, Message
from guardrails_uq.cli import main
from guardrails_uq.errors import WorkBudgetError
from guardrails_uq.report import render
from guardrails_uq.server import ServeConfig, create_app
from guardrails_uq.testing import ChatCompletionsServer, FailingCheck

HEAD = """
version: 1
name: shadowed
signals: {app.risk: number, app.n: integer}
"""

RULES = (
    HEAD
    + """
rules:
  - {name: new-allow, at: output, when: "app.risk > 0.5", action: allow, mode: shadow}
  - {name: block, at: output, when: "app.risk > 0.8", action: abstain}
  - {name: stricter, at: output, when: "app.risk > 0.3", action: abstain, mode: shadow}
"""
)


def guard(text: str, tmp_path: Path, *checks: object, log: str = "audit.jsonl") -> Guard:
    return Guard(loads_policy(text, base_dir=tmp_path), checks=list(checks), audit=open_audit(tmp_path / log))


def after(g: Guard, risk: float, n: int = 1) -> object:
    return g.after("an answer", signals={"app.risk": risk, "app.n": n})


# -- semantics ---------------------------------------------------------------------------------------------


def test_a_shadow_rule_never_turns_an_enforced_abstain_into_allow(tmp_path: Path) -> None:
    with guard(RULES, tmp_path) as g:
        decision = after(g, 0.9)
    assert decision.action is Action.ABSTAIN and decision.rule == "block", "the enforced rule still decides"
    assert decision.shadow is not None
    assert (decision.shadow.action, decision.shadow.rule) == (Action.ALLOW, "new-allow")
    assert decision.shadow.inputs == {"app.risk": 0.9}


def test_a_matching_shadow_rule_does_not_block_and_is_recorded(tmp_path: Path) -> None:
    with guard(RULES, tmp_path) as g:
        middle = after(g, 0.4)  # only the shadow rule 'stricter' matches
        calm = after(g, 0.1)
    assert middle.action is Action.ALLOW and middle.rule is None and middle.message is None
    assert (middle.shadow.action, middle.shadow.rule) == (Action.ABSTAIN, "stricter")
    assert calm.action is Action.ALLOW and calm.shadow is None, "no shadow rule matched: nothing to record"


def test_a_shadow_rule_after_the_enforced_match_is_not_recorded(tmp_path: Path) -> None:
    text = (
        HEAD
        + """
rules:
  - {name: block, at: output, when: "app.risk > 0.8", action: abstain}
  - {name: later, at: output, when: "app.risk > 0.3", action: escalate, mode: shadow}
"""
    )
    with guard(text, tmp_path) as g:
        decision = after(g, 0.9)
    assert decision.rule == "block" and decision.shadow is None, "rules are read in order: 'later' is never reached"


def test_shadow_and_enforced_rules_with_the_same_condition_both_load(tmp_path: Path) -> None:
    text = (
        HEAD
        + """
rules:
  - {name: try-escalate, at: output, when: "app.risk > 0.8", action: escalate, mode: shadow}
  - {name: block, at: output, when: "app.risk > 0.8", action: abstain}
  - {name: always, at: output, when: "true", action: abstain, mode: shadow}
  - {name: other, at: output, when: "app.risk > 0.5", action: escalate}
"""
    )
    policy = loads_policy(text, base_dir=tmp_path)
    assert [r.name for r in policy.phases["output"].rules] == ["try-escalate", "block", "always", "other"]
    with pytest.raises(PolicyError, match="never be reached"):
        loads_policy(text + '  - {name: dead, at: output, when: "app.risk > 0.1", action: allow, mode: shadow}\n')


def test_a_failing_shadow_rule_is_recorded_and_never_takes_on_error(tmp_path: Path) -> None:
    text = (
        HEAD
        + """
rules:
  - {name: divide, at: output, when: "10 / app.n > 2", action: abstain, mode: shadow}
  - {name: block, at: output, when: "app.risk > 0.8", action: abstain}
"""
    )
    with guard(text, tmp_path) as g:
        calm = after(g, 0.1, n=0)
        risky = after(g, 0.9, n=0)
    assert calm.action is Action.ALLOW and not calm.errors, "a broken experiment must not block the product"
    assert calm.shadow.action is Action.ABSTAIN and calm.shadow.rule is None and "divide" in calm.shadow.error
    assert calm.shadow.label == "(on_error)"
    assert risky.action is Action.ABSTAIN and risky.rule == "block"


def test_a_failing_enforced_check_still_fails_closed_beside_shadow_rules(tmp_path: Path) -> None:
    with guard(RULES, tmp_path, FailingCheck("broken", "output")) as g:
        decision = after(g, 0.4)
    assert decision.action is Action.ABSTAIN and decision.errors, "per-rule shadow leaves on_error enforced"


# -- a policy in shadow mode ---------------------------------------------------------------------------------

SHADOW_POLICY = (
    HEAD
    + """
mode: shadow
default: abstain
rules:
  - {name: block-input, at: input, when: "app.risk > 0.8", action: abstain}
  - {name: block, at: output, when: "app.risk > 0.5", action: abstain}
"""
)


def test_a_shadow_policy_allows_everything_and_still_logs_every_decision(tmp_path: Path) -> None:
    with guard(SHADOW_POLICY, tmp_path) as g:
        first = g.before([Message(role="user", content="hi")], signals={"app.risk": 0.9})
        output = g.after("an answer", context=first, signals={"app.risk": 0.9})
        calm = g.check(
            Call(
                messages=[Message(role="user", content="hi")],
                generation=Generation(text="ok"),
                signals={"app.risk": 0.1},
            )
        )
    assert first.action is Action.ALLOW and not first.final, "the input phase only passes on"
    assert (first.shadow.action, first.shadow.rule) == (Action.ABSTAIN, "block-input")
    assert output.action is Action.ALLOW and output.final and output.message is None
    assert (output.shadow.action, output.shadow.rule) == (Action.ABSTAIN, "block")
    assert calm.action is Action.ALLOW and calm.shadow.label == "(default)", "the default is shadowed too"
    logged = list(read_audit(tmp_path / "audit.jsonl"))
    assert len(logged) == 4 and all(d.action is Action.ALLOW for d in logged), "every decision is logged"
    assert [d.shadow.label if d.shadow else None for d in logged] == ["block-input", "block", None, "(default)"]
    assert logged[-1].shadow.action is Action.ABSTAIN


def test_a_check_failure_in_a_shadow_policy_is_recorded_in_shadow(tmp_path: Path) -> None:
    with guard(SHADOW_POLICY, tmp_path, FailingCheck("broken", "output")) as g:
        decision = after(g, 0.1)
    assert decision.action is Action.ALLOW and decision.errors[0].check == "broken"
    assert decision.shadow.action is Action.ABSTAIN and decision.shadow.label == "(on_error)"
    assert "broken" in decision.shadow.error
    budget = FailingCheck("costly", "output", WorkBudgetError("too many spans"))
    with guard(SHADOW_POLICY.replace("default: abstain", "on_error: allow"), tmp_path, budget) as g:
        exhausted = after(g, 0.1)
    assert exhausted.action is Action.ALLOW, "a shadow policy enforces nothing, an exhausted check included"
    assert exhausted.shadow.action is Action.ABSTAIN and "WorkBudgetError" in exhausted.shadow.error


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (HEAD + "mode: shadwo\nrules: []\n", "'mode'"),
        (HEAD + 'rules:\n  - {name: r, at: output, when: "app.risk > 1.0", action: abstain, mode: shadwo}\n',
         "rules.0.mode"),
    ],
)  # fmt: skip
def test_a_mode_typo_is_an_error_naming_the_field(text: str, where: str) -> None:
    with pytest.raises(PolicyError) as raised:
        loads_policy(text)
    message = str(raised.value)
    assert where.strip("'") in message and "shadwo" in message and "'shadow'" in message
    assert raised.value.line is not None


def test_an_enforced_rule_in_a_shadow_policy_is_an_error() -> None:
    text = (
        HEAD
        + 'mode: shadow\nrules:\n  - {name: r, at: output, when: "app.risk > 1.0", action: abstain, mode: enforce}\n'
    )
    with pytest.raises(PolicyError, match="mode: enforce") as raised:
        loads_policy(text)
    assert raised.value.rule == "r" and raised.value.line == 7


# -- where the shadow outcome goes ----------------------------------------------------------------------------


@pytest.mark.parametrize("log", ["audit.jsonl", "audit.sqlite"])
def test_the_audit_record_carries_the_shadow_outcome(tmp_path: Path, log: str) -> None:
    with guard(RULES, tmp_path, log=log) as g:
        after(g, 0.9)
        after(g, 0.1)
    shadowed, plain = list(read_audit(tmp_path / log))
    assert shadowed.shadow is not None and shadowed.shadow.rule == "new-allow"
    assert plain.shadow is None
    if log.endswith(".sqlite"):
        import sqlite3

        db = sqlite3.connect(tmp_path / log)
        rows = db.execute("SELECT json_extract(record, '$.shadow.rule') FROM decisions ORDER BY time").fetchall()
        assert rows == [("new-allow",), (None,)]
    else:
        records = (tmp_path / log).read_bytes().split(b"\x1e")[1:]
        assert b'"shadow"' in records[0] and b'"shadow"' not in records[1], "no key when nothing was shadowed"


def test_client_views_hide_the_shadow_unless_signals_are_asked_for(tmp_path: Path) -> None:
    with guard(RULES, tmp_path) as g:
        decision = after(g, 0.4)
    assert "shadow" not in decision.client_view()
    assert decision.client_view(with_signals=True)["shadow"]["rule"] == "stricter"
    assert "shadow: would ABSTAIN (stricter)" in decision.explain()


def logged_under(policy: str, tmp_path: Path) -> Path:
    with guard(policy, tmp_path) as g:
        for risk in (0.9, 0.6, 0.4, 0.1):
            after(g, risk)
    return tmp_path / "audit.jsonl"


def test_audit_stats_count_shadow_outcomes_by_rule(tmp_path: Path, capsys) -> None:
    log = logged_under(RULES, tmp_path)
    summary = stats(read_audit(log))
    assert summary["shadow_by_rule"] == {"new-allow": {"allow": 2}, "stricter": {"abstain": 1}}
    assert summary["shadow_changes"] == {"abstain -> allow": 1, "allow -> abstain": 1}
    assert main(["audit", "stats", str(log), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shadow_by_rule"]["stricter"] == {"abstain": 1}
    assert main(["audit", "stats", str(log)]) == 0
    text = capsys.readouterr().out
    assert "shadow outcomes by rule" in text and "new-allow" in text
    assert main(["audit", "tail", str(log)]) == 0
    tail = capsys.readouterr().out.splitlines()
    assert tail[0].endswith("block  (shadow: allow new-allow)") and tail[-1].endswith("(default)")


def test_the_report_shows_shadow_outcomes(tmp_path: Path) -> None:
    page = render(read_audit(logged_under(RULES, tmp_path)))
    assert "Shadow outcomes" in page and "would ALLOW" in page and "stricter" in page


def test_replay_in_shadow_reads_every_rule_as_enforced(tmp_path: Path, capsys) -> None:
    plain = HEAD + 'rules:\n  - {name: block, at: output, when: "app.risk > 0.8", action: abstain}\n'
    log = logged_under(plain, tmp_path)
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(SHADOW_POLICY)
    assert main(["replay", str(log), "--policy", str(candidate)]) == 0
    as_written = capsys.readouterr().out
    assert "1  abstain (block) -> allow ((default))" in as_written, "as written, a shadow policy enforces nothing"
    assert main(["replay", str(log), "--policy", str(candidate), "--shadow"]) == 0
    shadow = capsys.readouterr().out
    assert "in shadow" in shadow and "1  allow ((default)) -> abstain (block)" in shadow
    assert "2  allow ((default)) -> abstain ((default))" in shadow
    assert "abstain (block) -> abstain (block)" not in shadow and "4 decisions" in shadow


def test_policy_check_prints_the_rules_in_shadow(tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(RULES)
    assert main(["policy", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "shadow rules: new-allow, stricter" in out
    path.write_text(SHADOW_POLICY)
    assert main(["policy", "check", str(path)]) == 0
    assert "mode: shadow (every rule, the default and on_error are recorded, never enforced)" in capsys.readouterr().out


# -- end to end through the proxy --------------------------------------------------------------------------


def test_a_shadow_rule_does_not_block_through_the_proxy(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    shadowed = PROXY_POLICY.replace('action: abstain, message: "I can\'t help with that."}',
                                    'action: abstain, message: "I can\'t help with that.", mode: shadow}')  # fmt: skip
    assert shadowed != PROXY_POLICY
    (folder / "policy.yaml").write_text(shadowed)
    with ChatCompletionsServer(upstream_reply) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            response = ask(base, "how to make a poison")
            streamed, last = stream_text(base, "how to make a poison")
            metrics = httpx.get(f"{base}/metrics").text
    body = response.json()
    assert response.status_code == 200 and response.headers["x-guardrails-action"] == "allow"
    assert "castor beans" in body["choices"][0]["message"]["content"], "a shadow rule never blocks"
    assert "castor beans" in streamed and last["guardrails"]["action"] == "allow", "nor cuts a stream"
    assert "shadow" not in body["guardrails"] and "shadow" not in last["guardrails"], "clients never see it"
    assert 'rule="memorized-unsafe-text"' not in metrics
    outputs = [d for d in read_audit(folder / "audit.jsonl") if d.phase == "output"]
    assert len(outputs) == 2 and all(d.action is Action.ALLOW for d in outputs)
    for output in outputs:
        assert (output.shadow.action, output.shadow.rule) == (Action.ABSTAIN, "memorized-unsafe-text")
        assert output.shadow.inputs["provenance.bci_max"] > 20.0


def stream_text(base: str, content: str) -> tuple[str, dict]:
    """The streamed answer's text and its last chunk."""
    text, last = "", {}
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": content}]}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=20) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                last = json.loads(line[6:])
                text += last["choices"][0]["delta"].get("content", "") if last["choices"] else ""
    return text, last


def test_the_check_command_explains_the_shadow_outcome(tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(RULES)
    call = tmp_path / "call.json"
    call.write_text(json.dumps({"generation": {"text": "x"}, "signals": {"app.risk": 0.4, "app.n": 1}}))
    assert main(["check", "--policy", str(path), "--call", str(call), "--explain", "--no-audit"]) == 0
    assert "shadow: would ABSTAIN (stricter)" in capsys.readouterr().out


# -- policy test ---------------------------------------------------------------------------------------------


def test_policy_test_decides_as_the_guard_does_and_can_expect_a_shadow_outcome(tmp_path: Path, capsys) -> None:
    policy, shadow_policy, cases = tmp_path / "p.yaml", tmp_path / "s.yaml", tmp_path / "cases.yaml"
    policy.write_text(RULES)
    shadow_policy.write_text(SHADOW_POLICY)
    cases.write_text(
        """
cases:
  - {name: enforced block, signals: {app.risk: 0.9}, expect: abstain, rule: block,
     shadow: {expect: allow, rule: new-allow}}
  - {name: trial rule only, signals: {app.risk: 0.4}, expect: allow, shadow: {expect: abstain, rule: stricter}}
"""
    )
    assert main(["policy", "test", str(policy), str(cases)]) == 0, capsys.readouterr().out
    capsys.readouterr()
    assert main(["policy", "test", str(shadow_policy), str(cases)]) == 1, "a shadow policy allows: case 1 fails"
    out = capsys.readouterr().out
    assert "FAIL  enforced block" in out and "got:      allow (default)" in out
    assert "shadow:   abstain by rule 'block-input'" in out, "the input rule would have decided first"
    cases.write_text("cases:\n  - {name: c, signals: {app.risk: 0.1}, expect: allow, shadow: {expect: abstain}}\n")
    assert main(["policy", "test", str(shadow_policy), str(cases)]) == 0, "the shadowed default is abstain"


@pytest.mark.slow
def test_replay_in_shadow_on_ray_matches_local(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from guardrails_uq.replay import replay

    log = logged_under(
        HEAD + 'rules:\n  - {name: block, at: output, when: "app.risk > 0.8", action: abstain}\n', tmp_path
    )
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(SHADOW_POLICY)
    local = replay(candidate, log, shadow=True)
    on_ray = replay(candidate, log, engine="ray", shadow=True)
    assert local["changed"] == 3 and replay(candidate, log)["changed"] == 1
    assert {k: v for k, v in on_ray.items() if k != "engine"} == {k: v for k, v in local.items() if k != "engine"}


@pytest.mark.parametrize("seed", range(4))
def test_fused_lookup_agrees_with_reading_the_rules_one_by_one(seed: int) -> None:
    import random

    rng = random.Random(seed)
    n = 40  # more than FUSE_CHUNK: two fused programs per lookup
    thresholds = rng.sample(range(100), n)
    shadow = [rng.random() < 0.4 for _ in range(n)]
    rules = "\n".join(
        f'  - {{name: r{i}, at: output, when: "app.n > {t}", action: {"abstain" if i % 2 else "escalate"}'
        + (", mode: shadow}" if s else "}")
        for i, (t, s) in enumerate(zip(thresholds, shadow, strict=True))
    )
    phase = loads_policy(HEAD + "rules:\n" + rules + "\n").phases["output"]
    for value in range(0, 101, 3):
        matching = [i for i, t in enumerate(thresholds) if value > t]
        enforced = next((i for i in matching if not shadow[i]), None)
        first_shadow = next((i for i in matching if shadow[i]), None)
        if first_shadow is not None and enforced is not None and first_shadow > enforced:
            first_shadow = None
        got_enforced, got_shadow = phase.match({"app.n": value}, None)
        assert (got_enforced.name if got_enforced else None) == (f"r{enforced}" if enforced is not None else None)
        assert (got_shadow.name if got_shadow else None) == (f"r{first_shadow}" if first_shadow is not None else None)
