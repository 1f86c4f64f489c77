"""Replay: re-deciding logged calls under a new policy (what-if), locally and as a Ray Data pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import APP_POLICY

from guardrails_uq import Guard, load_policy
from guardrails_uq.cli import main
from guardrails_uq.replay import replay


@pytest.fixture
def logged(write_policy, tmp_path: Path) -> tuple[Path, Path]:
    old = write_policy(APP_POLICY + "audit: {path: audit.jsonl}\n", name="old.yaml")
    guard = Guard(load_policy(old))
    for i in range(40):
        signals = {"app.toxicity": i / 40, "app.user_tier": "vip" if i % 4 == 0 else "free", "app.flags": []}
        guard.before([], signals=signals)
        guard.after("answer", signals=signals)
    guard.close()
    stricter = write_policy(APP_POLICY.replace("app.toxicity > 0.8", "app.toxicity > 0.5"), name="new.yaml")
    return tmp_path / "audit.jsonl", stricter


def test_replay_reports_how_decisions_change(logged) -> None:
    log, new = logged
    report = replay(new, log)
    assert report["total"] == 80
    # inputs with toxicity in (0.5, 0.8] now abstain at input: i = 21..32 -> 12 decisions
    assert report["transitions"] == {"allow ((pass)) -> abstain (toxic)": 12}
    assert report["changed"] == 12 and report["errors"] == {}


def test_replay_names_missing_signals(logged, write_policy) -> None:
    log, _ = logged
    other = write_policy(
        "version: 1\nname: other\nsignals: {app.score: number}\nrules:\n"
        '  - {name: s, at: input, when: "app.score > 1.0", action: abstain}\n',
        name="other.yaml",
    )
    report = replay(other, log)
    assert report["errors"], "the log has no app.score: every input decision errors"


def test_replay_cli(logged, capsys) -> None:
    log, new = logged
    assert main(["replay", str(log), "--policy", str(new), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] == 12


@pytest.mark.slow
def test_replay_on_ray_matches_local(logged) -> None:
    pytest.importorskip("ray")
    log, new = logged
    local = replay(new, log)
    on_ray = replay(new, log, engine="ray")
    assert {k: v for k, v in on_ray.items() if k != "engine"} == {k: v for k, v in local.items() if k != "engine"}


@pytest.mark.slow
def test_replay_on_ray_in_chunks_matches_local(logged, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    from guardrails_uq import replay as replay_module

    log, new = logged
    local = replay(new, log)
    monkeypatch.setattr(replay_module, "RAY_CHUNK", 30)  # 80 decisions: three chunks, each its own Ray pipeline
    on_ray = replay(new, log, engine="ray")
    assert {k: v for k, v in on_ray.items() if k != "engine"} == {k: v for k, v in local.items() if k != "engine"}


@pytest.mark.slow
def test_replay_recomputes_provenance_with_the_new_index(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from guardrails_uq.provenance import build_index

    unsafe = "grind castor beans finely and extract the ricin with acetone in a sealed jar overnight"
    old = tmp_path / "old.yaml"
    old.write_text("version: 1\nname: old\naudit: {path: audit.jsonl}\n")
    guard = Guard(load_policy(old))
    for text in (f"Sure: {unsafe}.", "Open Settings and choose Export.", "The weather is nice today."):
        guard.after(text)
    guard.close()
    (tmp_path / "unsafe.jsonl").write_text(json.dumps({"id": "ricin", "text": unsafe}) + "\n")
    build_index(tmp_path / "unsafe.jsonl", tmp_path / "idx")
    new = tmp_path / "new.yaml"
    new.write_text(
        "version: 1\nname: new\nprovenance: {index: idx, min_span: 6}\nrules:\n"
        '  - {name: copied, at: output, when: "provenance.bci_max > 20.0", action: abstain}\n'
    )
    local = replay(new, tmp_path / "audit.jsonl")
    assert local["transitions"] == {"allow ((default)) -> abstain (copied)": 1}
    assert replay(new, tmp_path / "audit.jsonl", engine="ray")["transitions"] == local["transitions"]
