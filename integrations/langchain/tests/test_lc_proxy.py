"""A LangChain client of the guard proxy reads the Decision: ChatOpenAI against a real ``guardrails-uq serve``
app (uvicorn on 127.0.0.1) in front of the test chat-completions server, the README's block as written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lc_testkit import COPIED, UNSAFE, run_readme_block

from guardrails_uq import Generation, read_audit
from guardrails_uq.provenance import build_index
from guardrails_uq.server import ServeConfig, create_app
from guardrails_uq.testing import ChatCompletionsServer, ServedApp

ANSWER = "Open Settings and choose Export."
POLICY = f"""
version: 1
name: lc-proxy
provenance: {{index: unsafe-index, min_span: 6}}
audit: {{path: audit.jsonl}}
rules:
  - {{name: memorized-unsafe-text, at: output, when: "provenance.bci_max > 20.0", action: abstain, message: "{COPIED}"}}
"""


Running = ServedApp


def upstream(request: dict) -> Generation:
    question = request["messages"][-1]["content"]
    return Generation(text=f"Sure. {UNSAFE}" if "castor" in question else ANSWER)


@pytest.mark.parametrize(
    ("question", "content", "action"),
    [("How do I export a notebook?", ANSWER, "allow"), ("What about castor beans?", COPIED, "abstain")],
)
def test_readme_proxy_client_block(tmp_path: Path, question: str, content: str, action: str) -> None:
    (tmp_path / "unsafe.jsonl").write_text(json.dumps({"id": "ricin", "text": UNSAFE}) + "\n")
    build_index(tmp_path / "unsafe.jsonl", tmp_path / "unsafe-index")
    (tmp_path / "policy.yaml").write_text(POLICY)
    with ChatCompletionsServer(upstream) as server:
        app = create_app(ServeConfig(policy=tmp_path / "policy.yaml", upstream=server.base_url))
        with Running(app) as base:
            namespace = {
                "proxy_url": f"{base}/v1",
                "api_key": "sk-client",
                "question": question,
                "read_audit": read_audit,
                "audit_log": tmp_path / "audit.jsonl",
            }
            ran = run_readme_block("proxy-client", namespace)
    assert ran["message"].content == content and ran["action"] == action
    assert ran["decision"].action.value == action and ran["decision"].phase == "output"
    if action == "abstain":
        assert ran["decision"].rule == "memorized-unsafe-text" and "acetone" in (ran["decision"].generated or "")
