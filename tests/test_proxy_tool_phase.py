"""The tool phase in the proxy (issue 25 item 1): an upstream response whose tool call a tool rule abstains
from reaches the client with the policy message instead of the call, as JSON and as a stream; allowed calls
are returned as they were checked; an escalated call waits for the escalation target's approval.
Real parts: uvicorn serving the proxy on 127.0.0.1, the test chat-completions server as upstream."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from guardrails_uq import read_audit
from guardrails_uq.server import ServeConfig, create_app
from guardrails_uq.testing import ChatCompletionsServer, ScriptedReply, ServedApp

REFUSED = "I can only reset the password of the account you are signed in with."
POLICY = f"""
version: 1
name: proxy-tools
audit: {{path: audit.jsonl}}
rules:
  - {{name: admin-reset, at: tool, when: 'tool.name == "reset_password" && tool.arguments.user == "admin"', action: abstain, message: "{REFUSED}"}}
  - {{name: big-transfer, at: tool, when: 'tool.name == "transfer" && tool.arguments.amount > 100.0', action: escalate}}
"""


def _call(call_id: str, name: str, arguments: dict) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def _completion(*calls: dict) -> dict:
    message = {"role": "assistant", "content": "", "tool_calls": list(calls)}
    return {"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}  # fmt: skip


def _stream(*calls: dict) -> bytes:
    chunks = [{"id": "s", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    for i, call in enumerate(calls):
        delta = {"tool_calls": [{"index": i, "id": call["id"], "type": "function", "function": call["function"]}]}
        chunks.append({"id": "s", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]})
    chunks.append({"id": "s", "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})  # fmt: skip
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _ask(base: str, **extra) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": "reset the admin password"}], **extra}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=20)


def test_an_abstained_tool_call_is_replaced_by_the_policy_message(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    reply = _completion(_call("c1", "reset_password", {"user": "admin"}), _call("c2", "lookup", {"q": "hours"}))
    with ChatCompletionsServer(script=[ScriptedReply(200, reply)]) as upstream:
        config = ServeConfig(policy=tmp_path / "policy.yaml", upstream=upstream.base_url)
        with ServedApp(create_app(config)) as base:
            response = _ask(base)
    body = response.json()
    message = body["choices"][0]["message"]
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["lookup"]  # the allowed call stays
    assert REFUSED in message["content"] and "reset_password" not in response.text
    assert body["guardrails"]["action"] == "abstain" and body["guardrails"]["rule"] == "admin-reset"
    tools = [d for d in read_audit(tmp_path / "audit.jsonl") if d.phase == "tool"]
    assert [(d.signals["tool.name"], d.action.value) for d in tools] == [
        ("reset_password", "abstain"),
        ("lookup", "allow"),
    ]
    assert len({d.request_id for d in read_audit(tmp_path / "audit.jsonl")}) == 1


def test_a_streamed_abstained_tool_call_is_never_sent(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    raw = _stream(_call("c1", "reset_password", {"user": "admin"}))
    with ChatCompletionsServer(script=[ScriptedReply(200, raw)]) as upstream:
        config = ServeConfig(policy=tmp_path / "policy.yaml", upstream=upstream.base_url)
        with ServedApp(create_app(config)) as base, httpx.stream(
            "POST", f"{base}/v1/chat/completions", timeout=20,
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "reset it"}]},
        ) as response:  # fmt: skip
            events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    joined = "".join(events)
    assert "reset_password" not in joined and 'tool_calls":' not in joined.replace('"finish_reason"', "")
    assert REFUSED in joined
    assert json.loads(events[-2])["guardrails"]["rule"] == "admin-reset"


def test_an_escalated_tool_call_without_a_target_waits_for_review(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    reply = _completion(_call("c1", "transfer", {"amount": 500, "to": "acme"}))
    with ChatCompletionsServer(script=[ScriptedReply(200, reply)]) as upstream:
        config = ServeConfig(policy=tmp_path / "policy.yaml", upstream=upstream.base_url)
        with ServedApp(create_app(config)) as base:
            response = _ask(base)
    message = response.json()["choices"][0]["message"]
    assert "tool_calls" not in message and message["content"] == "This request needs review."
    [tool] = [d for d in read_audit(tmp_path / "audit.jsonl") if d.phase == "tool" and "escalation" in d.evidence]
    assert tool.action.value == "escalate" and tool.evidence["escalation"]["target"] is None


def test_an_escalated_tool_call_the_escalation_model_approves_is_returned(tmp_path: Path) -> None:
    reply = _completion(_call("c1", "transfer", {"amount": 500, "to": "acme"}))
    with (
        ChatCompletionsServer(script=[ScriptedReply(200, reply)]) as upstream,
        ChatCompletionsServer(lambda request: "APPROVE") as reviewer,
    ):
        policy = POLICY + f"escalation: {{model: {{base_url: '{reviewer.base_url}', model: large}}}}\n"
        (tmp_path / "policy.yaml").write_text(policy)
        config = ServeConfig(policy=tmp_path / "policy.yaml", upstream=upstream.base_url)
        with ServedApp(create_app(config)) as base:
            response = _ask(base)
    [call] = response.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "transfer"
    assert "transfer" in reviewer.requests[0]["messages"][-1]["content"]
    [tool] = [d for d in read_audit(tmp_path / "audit.jsonl") if d.phase == "tool" and "escalation" in d.evidence]
    assert tool.action.value == "allow" and tool.evidence["escalation"]["approved"] is True
