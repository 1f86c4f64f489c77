"""The README's python blocks run here exactly as written (extracted from the README, so the docs cannot drift
from what is tested), with the names they leave to the reader (``llm``, ``search_kb``, ``question``,
``nodes``) bound to real LlamaIndex objects and ``policy.yaml`` written into the working directory."""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from li_testkit import (
    COPIED,
    UNSAFE,
    Reply,
    ScriptedLLM,
    build_artifacts,
    event_loop_for_sync_calls,  # noqa: F401 (a fixture the tests name)
    kb_nodes,
    kb_text,
    requests_in,
)

from guardrails_uq import Action

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = ("agent", "query-engine")
ANSWER = "Open Settings, then Security, and choose Reset password."
# no retrieval section: the README's GuardedLLM then scores no tool results (the default scorer would load
# the packaged embedder); tool results as evidence are tested in test_llamaindex_agent.py
POLICY = """
version: 1
name: readme
provenance: {{index: {folder}/unsafe-index, min_span: 6}}
uncertainty: {{score: mean_nll}}
audit: {{path: {folder}/audit.jsonl}}
rules:
  - {{name: memorized-unsafe-text, at: output, when: "provenance.bci_max > 20.0", action: abstain,
     message: "{copied}"}}
  - {{name: unsure, at: output, when: "uncertainty.available && uncertainty.mean_nll > 1.0", action: escalate}}
"""
# llama-index-workflows lists an agent's members with inspect.getmembers, which touches pydantic's deprecated
# class attributes: a warning from the framework, not from this code.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecationWarning")


def readme_block(name: str) -> str:
    """The python block that follows ``<!-- tested: NAME ...-->`` in the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index("```python\n", text.index(f"<!-- tested: {name} ")) + len("```python\n")
    return text[start : text.index("```", start)]


def run_block(name: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Execute a README block (top-level ``await`` allowed) in ``namespace``; returns the namespace."""
    code = compile(readme_block(name), f"README.md:{name}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if inspect.iscoroutine(result):
        asyncio.run(result)
    return namespace


@pytest.fixture
def policy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    build_artifacts(tmp_path)
    (tmp_path / "policy.yaml").write_text(POLICY.format(folder=tmp_path, copied=COPIED))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def search_kb(query: str) -> str:
    """Search the Nimbus Notes knowledge base."""
    return kb_text("password-reset") if "password" in query else f"Gardening tips: {UNSAFE}"


def test_every_tested_readme_block_runs_here() -> None:
    text = README.read_text(encoding="utf-8")
    assert set(re.findall(r"<!-- tested: ([\w-]+) ", text)) == set(BLOCKS)
    assert text.index("<!-- tested: agent ") < text.index("<!-- tested: query-engine "), "agents come first"
    assert "escalate_llm=" not in "".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))


def test_agent_block_allows_a_normal_run_as_one_request(policy_dir: Path) -> None:
    llm = ScriptedLLM([Reply(calls=[("search_kb", {"query": "password"})]), Reply(text=ANSWER)])
    ran = run_block("agent", {"llm": llm, "search_kb": search_kb, "question": "How do I reset my password?"})
    assert ran["answer"] == ANSWER and ran["verdict"].action is Action.ALLOW
    [request] = requests_in(policy_dir / "audit.jsonl")
    assert request.request_id == ran["handler"].run_id == ran["verdict"].request_id
    assert [d.phase for d in request.decisions] == ["input", "output", "output"]
    ran["guard"].close()


def test_agent_block_cuts_a_copied_tool_result(policy_dir: Path) -> None:
    llm = ScriptedLLM([Reply(calls=[("search_kb", {"query": "garden"})]), Reply(text=f"Sure! {UNSAFE}")])
    ran = run_block("agent", {"llm": llm, "search_kb": search_kb, "question": "Any gardening tips?"})
    assert ran["answer"] == COPIED and "sealed jar" not in ran["answer"]
    assert ran["verdict"].rule == "memorized-unsafe-text"
    ran["guard"].close()


@pytest.mark.slow
@pytest.mark.usefixtures("event_loop_for_sync_calls")
def test_query_engine_block(policy_dir: Path) -> None:
    llm = ScriptedLLM(lambda messages: Reply(text=ANSWER))
    ran = run_block("query-engine", {"nodes": kb_nodes(), "llm": llm})
    assert str(ran["response"]) == ANSWER and ran["response"].metadata["guardrails"]["action"] == "allow"
    [request] = requests_in(policy_dir / "audit.jsonl")
    assert [d.phase for d in request.decisions] == ["input", "retrieval", "output"]
    ran["guard"].close()
