"""Every path to allow through the proxy is checked; hostile clients and upstreams fail closed.

Real parts: uvicorn serving the proxy on 127.0.0.1, the test chat-completions server (or raw scripted
bodies) as upstream, a real suffix-array index, the real OpenAI SDK and ChatOpenAI as clients.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from test_serve import POLICY, UNSAFE, Running, ask, make_folder, tokens, upstream_reply

from guardrails_uq import Generation, Guard, load_policy, read_audit
from guardrails_uq.server import ServeConfig, create_app
from guardrails_uq.server.holder import PolicyHolder
from guardrails_uq.testing import ChatCompletionsServer, ScriptedReply, free_port

BLOCK_INPUT = (
    POLICY
    + """
signals: {}
"""
)
HARMFUL_INPUT_POLICY = """
version: 1
name: input-block
audit: {path: audit.jsonl}
rules:
  - {name: always-block, at: input, when: "true", action: abstain, message: "I can't help with that."}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path)


def strict_json(text: str) -> object:
    """json.loads that refuses NaN and infinities (what a browser or Go client would do)."""

    def refuse(name: str) -> object:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def sse_events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def stream_ask(base: str, content: str, **extra) -> tuple[httpx.Response, list[str]]:
    with httpx.stream(
        "POST",
        f"{base}/v1/chat/completions",
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": content}], **extra},
        timeout=20,
    ) as response:
        return response, sse_events(response)


def choice_body(content: str, logprobs: object = None) -> dict:
    choice: dict = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {"id": "x", "object": "chat.completion", "model": "m", "choices": [choice]}


# -- 1. every choice passes the output phase -------------------------------------------------------------------


def test_every_choice_is_checked_and_a_blocked_one_is_replaced(folder: Path) -> None:
    answers = iter(["Open Settings and choose Export.", f"Sure. {UNSAFE}"])
    with ChatCompletionsServer(lambda request: next(answers)) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            response = ask(base, "two answers please", n=2)
    body = response.json()
    contents = [c["message"]["content"] for c in body["choices"]]
    assert contents == ["Open Settings and choose Export.", "I can't help with that."]
    assert [c["guardrails"]["action"] for c in body["choices"]] == ["allow", "abstain"]
    assert body["guardrails"]["action"] == "abstain" and response.headers["x-guardrails-action"] == "abstain"
    assert "sealed jar" not in response.text
    outputs = [d for d in read_audit(folder / "audit.jsonl") if d.phase == "output"]
    assert sorted(d.action.value for d in outputs) == ["abstain", "allow"], "one Decision per choice"


def test_extra_choices_from_the_upstream_are_never_shown(folder: Path) -> None:
    hostile = choice_body("Open Settings and choose Export.")
    hostile["choices"].append({"index": 1, "message": {"role": "assistant", "content": UNSAFE}})
    with ChatCompletionsServer(script=[ScriptedReply(200, hostile)]) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            response = ask(base, "one answer")
    assert len(response.json()["choices"]) == 1 and "sealed jar" not in response.text


def test_streams_of_several_choices_are_refused_or_fail_closed(folder: Path) -> None:
    two_choices = {
        "id": "s",
        "object": "chat.completion.chunk",
        "choices": [
            {"index": 0, "delta": {"content": "Fine. "}},
            {"index": 1, "delta": {"content": UNSAFE}},
        ],
    }
    raw = b"data: " + json.dumps(two_choices).encode() + b"\n\ndata: [DONE]\n\n"
    with ChatCompletionsServer(script=[ScriptedReply(200, raw)]) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url, stream_window=0)
        with Running(create_app(config)) as base:
            refused = httpx.post(
                f"{base}/v1/chat/completions",
                json={"model": "m", "stream": True, "n": 2, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert refused.status_code == 400 and "n" in refused.json()["error"]["message"]
            assert upstream.requests == [], "a refused request is never forwarded"
            _, events = stream_ask(base, "hi")
    joined = "".join(events)
    assert "sealed jar" not in joined
    last = json.loads(events[-2])
    assert last["guardrails"]["action"] == "abstain" and last["guardrails"]["errors"]


def test_tool_calls_are_checked_and_dropped_when_blocked(folder: Path) -> None:
    body = choice_body("")
    body["choices"][0]["message"]["tool_calls"] = [
        {"id": "c1", "type": "function", "function": {"name": "send_email", "arguments": json.dumps({"body": UNSAFE})}}
    ]
    with ChatCompletionsServer(script=[ScriptedReply(200, body)]) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            response = ask(base, "email it")
    assert response.json()["guardrails"]["rule"] == "memorized-unsafe-text"
    assert "tool_calls" not in response.json()["choices"][0]["message"] and "castor" not in response.text


# -- 2. malformed logprobs fail closed, responses stay strict JSON -----------------------------------------------


@pytest.mark.parametrize(
    "logprob_json",
    ["50.0", "Infinity", "-Infinity", "NaN", '"high"', "[1, 2]", "null"],
    ids=["positive", "inf", "-inf", "nan", "string", "list", "null"],
)
def test_invalid_logprobs_are_never_allowed(folder: Path, logprob_json: str) -> None:
    raw = (
        '{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop", '
        '"message": {"role": "assistant", "content": "Open Settings"}, "logprobs": {"content": ['
        '{"token": "Open", "logprob": -0.1, "top_logprobs": []}, '
        f'{{"token": " Settings", "logprob": {logprob_json}, "top_logprobs": []}}]}}}}]}}'
    )
    with ChatCompletionsServer(script=[ScriptedReply(200, raw)]) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            response = ask(base, "How do I export?", logprobs=True)
    assert response.status_code == 200
    body = strict_json(response.text)
    assert body["guardrails"]["action"] != "allow" and body["guardrails"]["errors"]
    assert body["choices"][0]["message"]["content"] != "Open Settings"
    for line in (folder / "audit.jsonl").read_text().split("\n"):
        if line.strip("\x1e"):
            strict_json(line.strip("\x1e"))


@pytest.mark.parametrize("logprobs", [[0.1, 0.2], "abc", {"content": "abc"}, {"content": [1, 2]}])
def test_logprobs_of_the_wrong_shape_get_a_decision(folder: Path, logprobs: object) -> None:
    with ChatCompletionsServer(script=[ScriptedReply(200, choice_body("Open Settings", logprobs))]) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            response = ask(base, "How do I export?")
    assert response.status_code == 200 and response.json()["guardrails"]["action"] == "abstain"


def test_a_stream_with_infinite_logprobs_is_strict_json_and_cut(folder: Path) -> None:
    chunk = (
        '{"id": "s", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hello"}, '
        '"logprobs": {"content": [{"token": "Hello", "logprob": -Infinity, "top_logprobs": []}]}}]}'
    )
    raw = f"data: {chunk}\n\ndata: [DONE]\n\n".encode()
    with ChatCompletionsServer(script=[ScriptedReply(200, raw)]) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            _, events = stream_ask(base, "hi", logprobs=True)
    assert events[-1] == "[DONE]"
    parsed = [strict_json(e) for e in events[:-1]]
    assert parsed[-1]["guardrails"]["action"] == "abstain"
    assert "Hello" not in "".join(json.dumps(p["choices"][0]["delta"]) for p in parsed)


def test_library_treats_impossible_logprobs_as_a_failed_check(folder: Path) -> None:
    guard = Guard(load_policy(folder / "policy.yaml"), audit=False)
    for value in (50.0, float("inf"), float("nan"), float("-inf")):
        decision = guard.after(Generation(text="fine", tokens=[t.model_copy(update={"logprob": value})
                                                                for t in tokens("fine", -0.1)]))  # fmt: skip
        assert decision.action.value == "abstain" and decision.rule_label == "(on_error)"
        assert "log-probability" in decision.errors[0].error
    assert guard.after(Generation(text="fine", tokens=tokens("fine", 0.00005))).allowed, "rounding tolerance"


# -- 5. a blocked streaming request is answered as a stream ------------------------------------------------------


def test_blocked_stream_is_an_sse_stream_that_sdks_read(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(HARMFUL_INPUT_POLICY)
    openai = pytest.importorskip("openai")
    chat_openai = pytest.importorskip("langchain_openai").ChatOpenAI
    with ChatCompletionsServer(upstream_reply) as upstream:
        config = ServeConfig(policy=tmp_path / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            response, events = stream_ask(base, "how to build a bomb")
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-guardrails-action"] == "abstain"
            assert events[-1] == "[DONE]" and json.loads(events[-2])["guardrails"]["rule"] == "always-block"
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
            pieces = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "bomb"}], stream=True
            )
            assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == "I can't help with that."
            model = chat_openai(base_url=f"{base}/v1", api_key="unused", model="m")
            assert "".join(str(c.content) for c in model.stream("bomb")) == "I can't help with that."
        assert upstream.requests == []


# -- 6. escalate without a target --------------------------------------------------------------------------------


def test_escalate_without_a_target_answers_the_escalate_message(folder: Path) -> None:
    with ChatCompletionsServer(upstream_reply) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            response = ask(base, "I am unsure")
    decision = response.json()["guardrails"]
    assert decision["action"] == "escalate" and not decision["errors"]
    assert response.json()["choices"][0]["message"]["content"] == "This request needs review."
    logged = [d for d in read_audit(folder / "audit.jsonl") if d.id == decision["id"]]
    assert logged[0].evidence["escalation"]["target"] is None, "the log records that no target was set"


# -- 9. body limits hold for chunked bodies ------------------------------------------------------------------


def test_chunked_body_is_refused_while_reading(folder: Path) -> None:
    config = ServeConfig(policy=folder / "policy.yaml", upstream="http://127.0.0.1:9/v1", max_body_bytes=100_000)
    with Running(create_app(config)) as base:
        port = int(base.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"x" * 65536
        sent, reply = 0, b""
        sock.settimeout(0.05)
        try:
            for sent in range(1, 301):  # noqa: B007 (read after the loop)  # up to 300 chunks of 64 KiB (19 MiB) if the server kept reading
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                try:
                    reply = sock.recv(4096)
                except TimeoutError:
                    continue
                if reply:
                    break
        except (BrokenPipeError, ConnectionResetError):
            sock.settimeout(2)
            reply = reply or sock.recv(4096)
        sock.close()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    assert sent < 20, f"the server read {sent} chunks before refusing a {config.max_body_bytes}-byte limit"


# -- 10. reloads close what they replace -----------------------------------------------------------------------


def test_reloads_do_not_leak_file_descriptors(folder: Path) -> None:
    escalation = 'escalation: {model: {base_url: "http://127.0.0.1:9/v1", model: large}}\n'
    (folder / "policy.yaml").write_text(POLICY + escalation)
    holder = PolicyHolder(folder / "policy.yaml")

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def reload() -> bool:  # a change is loaded once the file holds still between two looks
        return not holder.reload_if_changed() and holder.reload_if_changed()

    for i in range(3):  # warm up lazily opened files
        (folder / "policy.yaml").write_text(POLICY + escalation + f"# {i}\n")
        assert reload()
    baseline = open_fds()
    with holder.lease() as leased:
        for i in range(20):
            (folder / "policy.yaml").write_text(POLICY + escalation + f"# edit {i}\n")
            assert reload()
        leased.record(leased.after("still logging"))  # a leased Guard stays open through reloads
    del leased  # (its memory-mapped index files close with it)
    gc.collect()
    assert open_fds() <= baseline + 1
    assert [d.generated for d in read_audit(folder / "audit.jsonl")][-2:] == ["still logging"] * 2
    holder.close()


def test_a_policy_caught_half_written_is_not_loaded(folder: Path) -> None:
    holder = PolicyHolder(folder / "policy.yaml")
    full = (folder / "policy.yaml").read_text()
    prefix = full[: full.index("rules:")]  # valid on its own: a policy with no rules would allow everything
    (folder / "policy.yaml").write_text(prefix)
    assert not holder.reload_if_changed(), "a file seen changing is not loaded yet"
    (folder / "policy.yaml").write_text(full.replace("name: proxy", "name: proxy-v2"))
    assert not holder.reload_if_changed()
    assert holder.reload_if_changed() and holder.current().policy.name == "proxy-v2"
    assert [r.name for r in holder.current().policy.model.rules] == ["memorized-unsafe-text", "unsure"]
    holder.close()


def test_reload_happens_off_the_request_path(folder: Path) -> None:
    with ChatCompletionsServer(upstream_reply) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url, reload_interval=0.05)
        with Running(create_app(config)) as base:
            (folder / "policy.yaml").write_text(POLICY.replace("name: proxy", "name: proxy-v2"))
            deadline = time.time() + 10
            while httpx.get(f"{base}/healthz").json()["policy"] != "proxy-v2":
                assert time.time() < deadline, "the new policy never loaded"
                time.sleep(0.05)


# -- 13, 14. foreign input, secrets -------------------------------------------------------------------------------


def test_lone_surrogates_and_odd_content_get_a_decision_or_a_clear_400(folder: Path) -> None:
    with ChatCompletionsServer(upstream_reply) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            url = f"{base}/v1/chat/completions"
            raw = b'{"model": "m", "messages": [{"role": "user", "content": "How do I export? \\ud800"}]}'
            response = httpx.post(url, content=raw, headers={"content-type": "application/json"})
            assert response.status_code == 200 and response.json()["guardrails"]["action"] == "allow"
            image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}
            refused = httpx.post(url, json={"model": "m", "messages": [image]})
            assert refused.status_code == 400 and "image_url" in refused.json()["error"]["message"]
            assert refused.json()["guardrails"]["action"] == "abstain", "the refusal is a logged Decision"
            assert httpx.post(url, json={"model": "m", "n": True, "messages": [image]}).status_code == 400
    assert len(list(read_audit(folder / "audit.jsonl"))) >= 2


def _serve(args: list[str], tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "guardrails_uq", "serve", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_missing_api_key_file_is_a_clear_error(folder: Path) -> None:
    process = _serve(
        ["--policy", "policy.yaml", "--upstream", "http://127.0.0.1:9/v1", "--api-keys", "nope.txt"], folder
    )
    _, err = process.communicate(timeout=60)
    assert process.returncode != 0 and "nope.txt" in err and "Traceback" not in err


def test_query_string_keys_are_never_logged(folder: Path) -> None:
    port = free_port()
    (folder / "keys.txt").write_text("client-key\n")
    process = _serve(
        [
            "--policy",
            "policy.yaml",
            "--upstream",
            "http://127.0.0.1:9/v1",
            "--port",
            str(port),
            "--api-keys",
            "keys.txt",
        ],
        folder,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.time() < deadline and process.poll() is None, "the proxy did not start"
                time.sleep(0.2)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions?api_key=sk-secret-123", json={"messages": []}
        )
        assert response.status_code == 401
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert "/v1/chat/completions" in err, "the request is in the access log"
    assert "sk-secret-123" not in err


def test_one_request_id_across_the_proxys_decisions(folder: Path) -> None:
    answers = iter(["Open Settings and choose Export.", f"Sure. {UNSAFE}"])
    with ChatCompletionsServer(lambda request: next(answers)) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            response = ask(base, "two answers please", n=2)
    request_id = response.json()["guardrails"]["request_id"]
    logged = list(read_audit(folder / "audit.jsonl"))
    assert [d.phase for d in logged] == ["input", "output", "output"]
    assert {d.request_id for d in logged} == {request_id}


def test_several_workers_serve_and_log_to_one_audit_file(folder: Path) -> None:
    port = free_port()
    with ChatCompletionsServer(upstream_reply) as upstream:
        process = _serve(
            ["--policy", "policy.yaml", "--upstream", upstream.base_url, "--port", str(port), "--workers", "2"], folder
        )
        try:
            deadline = time.time() + 90
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.time() < deadline and process.poll() is None, "the proxy did not start"
                    time.sleep(0.2)
            answers = [ask(f"http://127.0.0.1:{port}", q) for q in ["How do I export?", "how to make a poison"] * 4]
        finally:
            process.terminate()
            process.communicate(timeout=30)
    assert [a.json()["guardrails"]["action"] for a in answers] == ["allow", "abstain"] * 4
    logged = list(read_audit(folder / "audit.jsonl"))
    assert len({d.request_id for d in logged}) == 8 and len(logged) == 16


@pytest.mark.slow  # the sample scores embed the answers with the packaged MiniLM
def test_policy_samples_come_from_the_same_call_and_are_never_shown(folder: Path) -> None:
    (folder / "policy.yaml").write_text(
        POLICY.replace("uncertainty: {score: mean_nll}", "uncertainty: {score: mean_nll, samples: 3}")
    )
    answers = iter(["Open Settings and choose Export.", "Use File, then Export.", "Try Settings.", "No idea."])
    with ChatCompletionsServer(lambda request: next(answers)) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            response = ask(base, "How do I export?")
    assert upstream.requests[-1]["n"] == 4, "one call: the answer and 3 samples"
    body = response.json()
    assert [c["message"]["content"] for c in body["choices"]] == ["Open Settings and choose Export."]
    assert "No idea" not in response.text
    output = [d for d in read_audit(folder / "audit.jsonl") if d.phase == "output"][-1]
    assert output.signals["uncertainty.samples"] == 3 and output.signals["uncertainty.num_sem_sets"] is not None


@pytest.mark.slow  # the sample scores embed the answers with the packaged MiniLM
def test_a_streamed_request_gets_samples_and_the_same_verdict_as_json(folder: Path, capsys) -> None:
    from guardrails_uq.cli import main

    (folder / "policy.yaml").write_text(
        POLICY.replace("uncertainty: {score: mean_nll}", "uncertainty: {score: mean_nll, samples: 3}")
        + '  - {name: inconsistent, at: output, when: "uncertainty.num_sem_sets != null && '
        'uncertainty.num_sem_sets > 2.0", action: escalate}\n'
    )
    assert main(["policy", "check", str(folder / "policy.yaml")]) == 0
    assert "streamed requests" in capsys.readouterr().out, "policy check says how streams get their samples"
    texts = ["Open Settings and choose Export.", "Bake the bread at noon.", "Paris is in France.", "No idea."]
    answers = iter(texts * 4)
    with ChatCompletionsServer(lambda request: next(answers)) as upstream:
        config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url)
        with Running(create_app(config)) as base:
            plain = ask(base, "How do I export?")
            _response, events = stream_ask(base, "How do I export?")
            forwarded = upstream.requests[-1]
    assert plain.json()["guardrails"]["action"] == "escalate"
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    assert chunks[-1]["guardrails"]["action"] == "escalate", "the stream is decided with its samples, like JSON"
    assert forwarded["n"] == 4 and not forwarded.get("stream"), "one call: the answer and 3 samples"
    shown = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert not any(t in shown for t in texts), "neither the blocked answer nor a sample is shown"


def test_stream_checks_run_off_the_event_loop(folder: Path) -> None:
    """A check that runs while a stream is decided never stalls the proxy: /healthz is answered meanwhile."""
    import threading

    from pydantic import BaseModel

    from guardrails_uq.checks import CheckSpec, SignalSpec, register, unregister
    from guardrails_uq.testing import StaticCheck

    entered, answered, seen = threading.Event(), threading.Event(), []

    def wait_for_healthz(call) -> dict:
        if not seen:
            entered.set()
            seen.append(answered.wait(timeout=10))  # on the event loop, /healthz could not answer meanwhile
        return {"blocker.ok": True}

    class Config(BaseModel):
        pass

    register(
        CheckSpec(
            name="blocker",
            phase="output",
            config=Config,
            signals={"blocker.ok": SignalSpec("bool", "always true")},
            build=lambda config, base_dir, deps: StaticCheck("blocker", "output", compute=wait_for_healthz),
        )
    )
    try:
        (folder / "policy.yaml").write_text(POLICY.replace("audit:", "blocker: {}\naudit:"))
        long = " ".join(f"word{i}" for i in range(40))
        with ChatCompletionsServer(lambda request: long) as upstream:
            config = ServeConfig(policy=folder / "policy.yaml", upstream=upstream.base_url, stream_window=4)
            with Running(create_app(config)) as base:
                result: list = []
                streaming = threading.Thread(target=lambda: result.append(stream_ask(base, "How do I export?")))
                streaming.start()
                assert entered.wait(timeout=20), "the check ran"
                if httpx.get(f"{base}/healthz", timeout=20).status_code == 200:
                    answered.set()
                streaming.join(timeout=30)
    finally:
        unregister("blocker")
    assert seen == [True], "/healthz was answered while the check ran"
    assert json.loads(result[0][1][-2])["guardrails"]["action"] == "allow"
