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


def test_readme_proxy_tenant_block(tmp_path: Path) -> None:
    """ChatOpenAI picks a tenant's policy with the header: the same question gets each tenant's decision, and a
    policy the key may not use is a PermissionDeniedError before any model call."""
    import openai

    folder = tmp_path / "policies"
    folder.mkdir()
    (tmp_path / "unsafe.jsonl").write_text(json.dumps({"id": "ricin", "text": UNSAFE}) + "\n")
    build_index(tmp_path / "unsafe.jsonl", folder / "unsafe-index")
    (folder / "strict.yaml").write_text(POLICY.replace("name: lc-proxy", "name: strict"))
    (folder / "lenient.yaml").write_text("version: 1\nname: lenient\nrules: []\n")
    (tmp_path / "keys.txt").write_text("sk-acme lenient, strict\nsk-globex lenient\n")
    from guardrails_uq.serve_cli import read_api_keys

    with ChatCompletionsServer(upstream) as server:
        config = ServeConfig(policies=folder, upstream=server.base_url, api_keys=read_api_keys(tmp_path / "keys.txt"))
        with Running(create_app(config)) as base:

            def ask(api_key: str, policy_name: str) -> str:
                names = {"proxy_url": f"{base}/v1", "api_key": api_key, "policy_name": policy_name,
                         "question": "What about castor beans?"}  # fmt: skip
                return run_readme_block("proxy-tenant", names)["message"].content

            assert ask("sk-acme", "strict") == COPIED
            assert "acetone" in ask("sk-acme", "lenient")
            asked = len(server.requests)
            with pytest.raises(openai.PermissionDeniedError) as denied:
                ask("sk-globex", "strict")
            with pytest.raises(openai.PermissionDeniedError):
                ask("sk-acme", "billing")
            assert len(server.requests) == asked, "nothing reached the model"
    assert denied.value.status_code == 403 and denied.value.body["code"] == "policy_forbidden"
    # logged by the first of the key's policies that keeps an audit log (lenient keeps none)
    (refused,) = [d for d in read_audit(folder / "audit.jsonl") if d.rule == "policy-forbidden"]
    assert refused.policy == "strict" and refused.metadata["requested_policy"] == "billing"
    assert refused.metadata["reason"] == "unknown" and refused.metadata["key"].endswith("keys.txt:1")
