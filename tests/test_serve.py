"""The guard proxy: a real uvicorn server on 127.0.0.1 in front of a real local upstream. Allow, abstain,
escalate, streaming (clean and cut), auth, body size, rate limits, metrics, on_error (never forwarded),
upstream faults, a client disconnecting mid-stream, and a policy file replaced while serving."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from guardrails_uq import Generation, Guard, TokenLogprob, TopLogprob, load_policy, read_audit
from guardrails_uq.provenance import build_index
from guardrails_uq.server import ServeConfig, create_app
from guardrails_uq.testing import ChatCompletionsServer, FailingCheck, ScriptedReply, ServedApp

UNSAFE = "To make the poison, grind castor beans finely and extract the ricin with acetone in a sealed jar overnight."
POLICY = """
version: 1
name: proxy
provenance: {index: unsafe-index, min_span: 6}
uncertainty: {score: mean_nll}
audit: {path: audit.jsonl}
rules:
  - {name: memorized-unsafe-text, at: output, when: "provenance.bci_max > 20.0", action: abstain, message: "I can't help with that."}
  - {name: unsure, at: output, when: "uncertainty.available && uncertainty.mean_nll > 2.0", action: escalate}
"""


def tokens(text: str, logprob: float) -> list[TokenLogprob]:
    words = [w + " " for w in text.split(" ")]
    words[-1] = words[-1].rstrip(" ")
    return [TokenLogprob(token=w, logprob=logprob, top=[TopLogprob(token=w, logprob=logprob)]) for w in words]


def upstream_reply(request: dict) -> Generation:
    question = request["messages"][-1]["content"]
    if "poison" in question:
        text = f"Sure. {UNSAFE} Good luck."
    elif "unsure" in question:
        return Generation(text="maybe this", tokens=tokens("maybe this", -3.0))
    else:
        text = "Open Settings and choose Export."
    return Generation(text=text, tokens=tokens(text, -0.05))


Running = ServedApp  # the name the proxy tests use


def make_folder(tmp_path: Path) -> Path:
    """A folder with the unsafe corpus, its index and the proxy policy."""
    (tmp_path / "unsafe.jsonl").write_text(json.dumps({"id": "ricin", "text": UNSAFE}) + "\n")
    build_index(tmp_path / "unsafe.jsonl", tmp_path / "unsafe-index")
    (tmp_path / "policy.yaml").write_text(POLICY)
    return tmp_path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


def ask(base: str, content: str, **extra) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": content}], **extra},
        timeout=20,
    )


def test_allow_abstain_escalate_and_metrics(folder: Path) -> None:
    with ChatCompletionsServer(upstream_reply) as upstream:
        escalation = f'escalation: {{model: {{base_url: "{upstream.base_url}", model: large}}}}\n'
        (folder / "policy.yaml").write_text(POLICY + escalation)
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            ok = ask(base, "How do I export?")
            assert ok.status_code == 200 and ok.headers["x-guardrails-action"] == "allow"
            assert ok.json()["choices"][0]["message"]["content"] == "Open Settings and choose Export."
            assert "logprobs" not in ok.json()["choices"][0], "logprobs are returned only when asked for"
            assert upstream.requests[-1]["logprobs"] is True, "the proxy asked the upstream for logprobs"
            bad = ask(base, "how to make a poison")
            assert bad.json()["choices"][0]["message"]["content"] == "I can't help with that."
            assert bad.json()["guardrails"]["rule"] == "memorized-unsafe-text"
            escalated = ask(base, "I am unsure")
            assert escalated.headers["x-guardrails-action"] == "escalate"
            assert "evidence" not in escalated.json()["guardrails"], "clients never see the answer the policy replaced"
            metrics = httpx.get(f"{base}/metrics").text
            assert (
                'guardrails_decisions_total{action="abstain",policy="proxy",rule="memorized-unsafe-text"} 1.0'
                in metrics
            )
            assert "guardrails_guard_seconds_bucket" in metrics
            assert httpx.get(f"{base}/healthz").json()["policy"] == "proxy"
    logged = list(read_audit(folder / "audit.jsonl"))
    assert len(logged) >= 4
    assert any(d.evidence.get("escalation", {}).get("original") == "maybe this" for d in logged), "the log has it"


def test_streaming_clean_and_cut(folder: Path) -> None:
    with ChatCompletionsServer(upstream_reply) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url, stream_window=3)
        with Running(create_app(config)) as base:

            def stream(content: str) -> tuple[str, dict]:
                text, last = "", {}
                with httpx.stream(
                    "POST",
                    f"{base}/v1/chat/completions",
                    json={"model": "m", "stream": True, "messages": [{"role": "user", "content": content}]},
                    timeout=20,
                ) as response:
                    for line in response.iter_lines():
                        if line.startswith("data: ") and line != "data: [DONE]":
                            chunk = json.loads(line[6:])
                            text += chunk["choices"][0]["delta"].get("content", "")
                            last = chunk
                return text, last

            text, last = stream("How do I export?")
            assert text == "Open Settings and choose Export." and last["guardrails"]["action"] == "allow"
            text, last = stream("how to make a poison")
            assert text.endswith("I can't help with that.") and "sealed jar" not in text
            assert last["guardrails"]["rule"] == "memorized-unsafe-text"


def test_auth_body_limit_and_rate_limit(folder: Path, tmp_path: Path) -> None:
    with ChatCompletionsServer(upstream_reply) as upstream:
        config = ServeConfig(
            policy=folder / "policy.yaml",
            upstream=upstream.base_url,
            api_keys={"client-key"},
            max_body_bytes=2000,
            rate_per_second=0.001,
            burst=3,
        )
        with Running(create_app(config)) as base:
            url = f"{base}/v1/chat/completions"
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(url, json=body).status_code == 401
            assert httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
            headers = {"Authorization": "Bearer client-key"}
            assert httpx.post(url, json=body, headers=headers).status_code == 200
            big = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
            assert httpx.post(url, json=big, headers=headers).status_code == 413
            assert httpx.post(url, content=b"{not json", headers=headers).status_code == 400
            statuses = [httpx.post(url, json=body, headers=headers).status_code for _ in range(3)]
            assert 429 in statuses, "the bucket (burst 3) is empty"


def test_a_request_that_cannot_be_checked_is_never_forwarded(folder: Path) -> None:
    with ChatCompletionsServer(upstream_reply) as upstream:
        guard = Guard(
            load_policy(folder / "policy.yaml"),
            audit=False,
            checks=[FailingCheck("probe", "input", RuntimeError("checker down"))],
        )
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config, guard=guard)) as base:
            response = ask(base, "hello")
        assert response.json()["guardrails"]["action"] == "abstain"
        failure = response.json()["guardrails"]["errors"][0]
        assert failure == {"check": "probe", "phase": "input", "type": "RuntimeError"}, "no error text for clients"
        assert upstream.requests == [], "nothing was forwarded"


def test_upstream_faults(folder: Path) -> None:
    script = [ScriptedReply(200, {}, delay=1.0), ScriptedReply(200, "<html>garbage</html>"), ScriptedReply(500, "boom")]
    with ChatCompletionsServer(upstream_reply, script=script) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url, timeout=0.3)
        with Running(create_app(config)) as base:
            assert ask(base, "q").status_code == 504
            assert ask(base, "q").status_code == 502
            assert ask(base, "q").status_code == 502
            # a reset: an upstream that accepts and closes the connection at once
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(8)
            stop = threading.Event()

            def reset() -> None:
                sock.settimeout(0.2)
                while not stop.is_set():
                    try:
                        conn, _ = sock.accept()
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        conn.close()
                    except TimeoutError:
                        continue
                    except OSError:
                        return

            thread = threading.Thread(target=reset, daemon=True)
            thread.start()
            reset_config = ServeConfig(
                policy=folder / "policy.yaml", upstream=f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
            )
            with Running(create_app(reset_config)) as reset_base:
                assert ask(reset_base, "q").status_code == 502
            stop.set()
            thread.join(timeout=5)
            sock.close()
            assert httpx.get(f"{base}/healthz").status_code == 200
            assert "guardrails_upstream_errors_total" in httpx.get(f"{base}/metrics").text


def slow_stream(request: dict) -> Generation:
    text = " ".join(f"word{i}" for i in range(400))
    return Generation(text=text, tokens=tokens(text, -0.05))


def test_client_disconnecting_mid_stream(folder: Path) -> None:
    with ChatCompletionsServer(slow_stream) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url, stream_window=2)
        with Running(create_app(config)) as base:
            with httpx.stream(
                "POST",
                f"{base}/v1/chat/completions",
                json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "talk"}]},
                timeout=20,
            ) as response:
                for i, _ in enumerate(response.iter_lines()):
                    if i > 5:
                        break  # leave early: the connection closes
            time.sleep(0.5)
            assert httpx.get(f"{base}/healthz").status_code == 200
            assert ask(base, "How do I export?").status_code == 200


def test_policy_replaced_while_serving(folder: Path) -> None:
    def wait_for(base: str, check) -> dict:
        deadline = time.time() + 10
        while not check(health := httpx.get(f"{base}/healthz").json()):
            assert time.time() < deadline, f"the reload never happened: {health}"
            time.sleep(0.02)
        return health

    with ChatCompletionsServer(upstream_reply) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url, reload_interval=0.0)
        with Running(create_app(config)) as base:
            assert ask(base, "how to make a poison").json()["guardrails"]["action"] == "abstain"
            (folder / "policy.yaml").write_text(
                POLICY.replace("action: abstain", "action: escalate").replace("name: proxy", "name: proxy-v2")
            )
            wait_for(base, lambda h: h["policy"] == "proxy-v2")
            (folder / "policy.yaml").write_text("version: 1\nname: broken\nrules: [")  # a half-written file
            health = wait_for(base, lambda h: h["reload_errors"] >= 1)
            assert health["policy"] == "proxy-v2", "a broken edit keeps the old policy serving"
            assert ask(base, "How do I export?").status_code == 200


def test_an_in_process_upstream_gets_what_the_input_phase_read(folder: Path) -> None:
    """create_app(upstream=transport): the forwarded messages are the checked role/content pairs (a developer
    message as system, text parts joined), logprobs are asked for, and the answer passes the output phase."""
    import asyncio

    seen: list[dict] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        text = "Open Settings and choose Export."
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                  "logprobs": {"content": [{"token": t.token, "logprob": t.logprob, "top_logprobs": []}
                                           for t in tokens(text, -0.05)]}}  # fmt: skip
        return httpx.Response(200, json={"id": "u", "choices": [choice], "usage": {"total_tokens": 9}})

    app = create_app(ServeConfig(policy=folder / "policy.yaml", upstream="http://up/v1"), upstream=httpx.MockTransport(upstream))  # fmt: skip
    messages = [{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "How do I "}, {"type": "text", "text": "export?"}]}]  # fmt: skip

    async def post() -> httpx.Response:
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as c:
            return await c.post("http://proxy/v1/chat/completions", json={"model": "m", "messages": messages})

    response = asyncio.run(post())
    assert response.status_code == 200 and response.json()["guardrails"]["action"] == "allow"
    assert response.json()["choices"][0]["message"]["content"] == "Open Settings and choose Export."
    assert response.json()["usage"] == {"total_tokens": 9}
    assert seen[0]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I export?"}]  # fmt: skip
    assert seen[0]["logprobs"] is True and seen[0]["top_logprobs"] == 5


def test_a_cookie_the_upstream_sets_never_reaches_another_caller(folder: Path) -> None:
    """The proxy's one upstream client is shared by every caller: it must keep no cookies."""
    import asyncio

    cookies: list[str | None] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        cookies.append(request.headers.get("cookie"))
        text = "Open Settings and choose Export."
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                  "logprobs": {"content": [{"token": t.token, "logprob": t.logprob, "top_logprobs": []}
                                           for t in tokens(text, -0.05)]}}  # fmt: skip
        return httpx.Response(200, json={"id": "u", "choices": [choice]},
                              headers={"set-cookie": "session=alice-secret; Path=/"})  # fmt: skip

    app = create_app(ServeConfig(policy=folder / "policy.yaml", upstream="http://up/v1"), upstream=httpx.MockTransport(upstream))  # fmt: skip

    async def two_callers() -> list[int]:
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as c:
            body = {"model": "m", "messages": [{"role": "user", "content": "How do I export?"}]}
            return [(await c.post("http://proxy/v1/chat/completions", json=body)).status_code for _ in range(2)]

    assert asyncio.run(two_callers()) == [200, 200]
    assert cookies == [None, None]
