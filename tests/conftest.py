from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def write_policy(tmp_path: Path) -> Callable[[str], Path]:
    """Write a policy YAML (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "policy.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write


APP_POLICY = """
version: 1
name: app-signals
signals: {app.toxicity: number, app.user_tier: string, app.flags: list}
rules:
  - {name: toxic, at: input, when: "app.toxicity > 0.8", action: abstain, message: "No."}
  - {name: flagged, at: retrieval, when: '"pii" in app.flags', action: abstain}
  - {name: vip-review, at: output, when: 'app.user_tier == "vip" && app.toxicity > 0.5', action: escalate}
default: allow
"""
