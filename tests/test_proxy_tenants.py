"""A policy per tenant: ``serve --policies DIR``, the API-keys file mapping keys to policies, the
``X-Guardrails-Policy`` header, per-policy reloads, and the policy name in metrics and the audit log.

Real parts: uvicorn serving the proxy on 127.0.0.1 in front of the test chat-completions server, a real
suffix-array index, the OpenAI SDK and httpx as clients, the CLI in a subprocess for start errors.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from test_serve import UNSAFE, Running, upstream_reply

from guardrails_uq import read_audit
from guardrails_uq.errors import InputError, PolicyError
from guardrails_uq.provenance import build_index
from guardrails_uq.serve_cli import read_api_keys
from guardrails_uq.server import ServeConfig, Tenants, create_app
from guardrails_uq.server.tenants import PolicyRefused
from guardrails_uq.testing import ChatCompletionsServer

STRICT = """
version: 1
name: strict
provenance: {index: unsafe-index, min_span: 6}
audit: {path: audit.jsonl}
rules:
  - {name: memorized-unsafe-text, at: output, when: "provenance.bci_max > 20.0", action: abstain, message: "I can't help with that."}
"""
LENIENT = """
version: 1
name: lenient
audit: {path: audit.jsonl}
rules: []
default: allow
"""
KEYS = """# key      policies it may use
key-strict  strict
key-lenient lenient
key-both    strict, lenient
key-all     *
"""
POISON = "how to make a poison"
FORBIDDEN = "policy_forbidden"


@pytest.fixture
def tenants(tmp_path: Path) -> Path:
    """tmp/policies/{strict,lenient}.yaml (sharing one audit log), a policy test file and a guideline
    library that are not policies, and tmp/keys.txt."""
    folder = tmp_path / "policies"
    folder.mkdir()
    (tmp_path / "unsafe.jsonl").write_text(json.dumps({"id": "ricin", "text": UNSAFE}) + "\n")
    build_index(tmp_path / "unsafe.jsonl", folder / "unsafe-index")
    (folder / "strict.yaml").write_text(STRICT)
    (folder / "lenient.yaml").write_text(LENIENT)
    (folder / "strict_test.yaml").write_text("cases: []\n")
    (folder / "library.yaml").write_text("- {id: g1, title: T, text: Be kind., category: quality}\n")
    (tmp_path / "keys.txt").write_text(KEYS)
    return tmp_path


def config(root: Path, upstream: ChatCompletionsServer, **extra) -> ServeConfig:
    return ServeConfig(
        policies=root / "policies",
        upstream=upstream.base_url,
        api_keys=read_api_keys(root / "keys.txt"),
        reload_interval=0.0,
        **extra,
    )


def client(base: str, key: str, policy: str | None = None) -> openai.OpenAI:
    headers = {"X-Guardrails-Policy": policy} if policy is not None else None
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, default_headers=headers)


def answer(base: str, key: str, policy: str | None = None, content: str = POISON) -> tuple[str, dict]:
    completion = client(base, key, policy).chat.completions.create(
        model="m", messages=[{"role": "user", "content": content}]
    )
    return completion.choices[0].message.content or "", completion.model_extra["guardrails"]


def post(base: str, key: str, headers: list[tuple[bytes, bytes]]) -> httpx.Response:
    """A raw request with exactly these extra header lines: http.client sends the bytes as given (httpx would
    refuse blanks around a value before they reach the server)."""
    host, port = base.removeprefix("http://").split(":")
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": POISON}]}).encode()
    connection = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        connection.putrequest("POST", "/v1/chat/completions")
        for name, value in [(b"Authorization", f"Bearer {key}".encode()), (b"Content-Type", b"application/json"),
                            (b"Content-Length", str(len(body)).encode()), *headers]:  # fmt: skip
            connection.putheader(name, value)
        connection.endheaders(body)
        reply = connection.getresponse()
        return httpx.Response(reply.status, headers=reply.getheaders(), content=reply.read())
    finally:
        connection.close()


def test_two_tenants_get_different_decisions_for_the_same_request(tenants: Path) -> None:
    with ChatCompletionsServer(upstream_reply) as upstream, Running(create_app(config(tenants, upstream))) as base:
        refused, strict = answer(base, "key-strict")
        allowed, lenient = answer(base, "key-lenient")
        metrics = httpx.get(f"{base}/metrics").text
    assert refused == "I can't help with that." and strict["policy"] == "strict" and strict["action"] == "abstain"
    assert "sealed jar" in allowed and lenient["policy"] == "lenient" and lenient["action"] == "allow"
    assert 'guardrails_decisions_total{action="abstain",policy="strict",rule="memorized-unsafe-text"} 1.0' in metrics
    assert 'guardrails_decisions_total{action="allow",policy="lenient",rule="(default)"} 1.0' in metrics
    logged = {d.id: d.policy for d in read_audit(tenants / "policies" / "audit.jsonl") if d.final}
    assert logged[strict["id"]] == "strict" and logged[lenient["id"]] == "lenient", "one log, each record named"


def test_the_header_selects_among_the_policies_of_a_key(tenants: Path) -> None:
    with ChatCompletionsServer(upstream_reply) as upstream, Running(create_app(config(tenants, upstream))) as base:
        for key in ("key-both", "key-all"):
            assert answer(base, key, "strict")[1]["policy"] == "strict"
            assert answer(base, key, "lenient")[1]["policy"] == "lenient"
        assert answer(base, "key-strict", "strict")[1]["action"] == "abstain", "naming its one policy is fine"
        forwarded = len(upstream.requests)
        with pytest.raises(openai.BadRequestError) as missing:
            answer(base, "key-both")
        with pytest.raises(openai.PermissionDeniedError) as denied:
            answer(base, "key-lenient", "strict")
        assert len(upstream.requests) == forwarded, "a request refused its policy is never forwarded"
    assert denied.value.status_code == 403 and denied.value.body["code"] == FORBIDDEN
    error = missing.value.body
    assert error["code"] == "policy_required" and "X-Guardrails-Policy" in error["message"]
    logged = [d for d in read_audit(tenants / "policies" / "audit.jsonl") if d.rule == "policy-required"]
    assert len(logged) == 1 and logged[0].action.value == "abstain"


HOSTILE = [
    pytest.param([(b"x-guardrails-policy", b"lenient")], "forbidden", id="another-tenants-policy"),
    pytest.param([(b"x-guardrails-policy", b"nope")], "unknown", id="unknown"),
    pytest.param([(b"x-guardrails-policy", b"../lenient")], "unknown", id="path"),
    pytest.param([(b"x-guardrails-policy", b"../policies/strict.yaml")], "unknown", id="file-path"),
    pytest.param([(b"x-guardrails-policy", b"strict.yaml")], "unknown", id="file-name"),
    pytest.param([(b"x-guardrails-policy", b"STRICT")], "unknown", id="case"),
    pytest.param([(b"x-guardrails-policy", b"Lenient")], "unknown", id="case-of-another"),
    pytest.param([(b"x-guardrails-policy", b"str ict")], "unknown", id="inner-space"),
    pytest.param([(b"x-guardrails-policy", b"strict\xc2\xa0")], "unknown", id="no-break-space"),
    pytest.param([(b"x-guardrails-policy", "strіct".encode())], "unknown", id="cyrillic-i"),
    pytest.param([(b"x-guardrails-policy", b"strict,lenient")], "unknown", id="list"),
    pytest.param([(b"x-guardrails-policy", b"*")], "unknown", id="wildcard"),
    pytest.param([(b"x-guardrails-policy", b"")], "unknown", id="empty"),
    pytest.param([(b"x-guardrails-policy", b"strict" * 1000)], "unknown", id="long"),
    pytest.param(
        [(b"x-guardrails-policy", b"strict"), (b"x-guardrails-policy", b"lenient")], "repeated", id="repeated"
    ),
]


@pytest.mark.parametrize(("headers", "reason"), HOSTILE)
def test_a_policy_the_key_may_not_use_is_a_403_with_a_logged_decision(
    tenants: Path, headers: list[tuple[bytes, bytes]], reason: str
) -> None:
    """Unknown and forbidden names get the same answer (a key learns nothing about other tenants); the audit
    log of the key's own policy records which, with the name as sent; nothing is forwarded."""
    with ChatCompletionsServer(upstream_reply) as upstream, Running(create_app(config(tenants, upstream))) as base:
        response = post(base, "key-strict", headers)
        assert upstream.requests == [], "a refused request is never forwarded"
        for blanks in (b" strict ", b"\tstrict"):  # HTTP strips blanks around a value: the name as written
            assert post(base, "key-strict", [(b"x-guardrails-policy", blanks)]).status_code == 200
        metrics = httpx.get(f"{base}/metrics").text
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["type"] == "permission_error" and error["code"] == FORBIDDEN
    assert "lenient" not in response.text, "the refusal never names another tenant's policy"
    assert response.json()["guardrails"]["rule"] == "policy-forbidden"
    assert 'guardrails_decisions_total{action="abstain",policy="strict",rule="policy-forbidden"} 1.0' in metrics
    (logged,) = [d for d in read_audit(tenants / "policies" / "audit.jsonl") if d.rule == "policy-forbidden"]
    assert logged.id == response.headers["x-guardrails-decision"]
    assert logged.policy == "strict" and logged.action.value == "abstain" and logged.phase == "input"
    assert logged.metadata["reason"] == reason and logged.metadata["key"].endswith("keys.txt:2")
    sent = headers[0][1].decode("utf-8")
    assert logged.metadata["requested_policy"] == (sent if reason != "repeated" else "strict, lenient")[:200]


def test_one_policy_reloads_without_disturbing_the_other(tenants: Path) -> None:
    folder = tenants / "policies"

    def health(base: str) -> dict:
        return httpx.get(f"{base}/healthz").json()["policies"]

    def wait_for(base: str, check) -> dict:
        deadline = time.time() + 10
        while not check(seen := health(base)):
            assert time.time() < deadline, f"the reload never happened: {seen}"
            time.sleep(0.02)
        return seen

    with ChatCompletionsServer(upstream_reply) as upstream:
        app = create_app(config(tenants, upstream))
        with Running(app) as base:
            lenient_guard = app.state.tenants.holders["lenient"].current()
            assert answer(base, "key-strict")[1]["action"] == "abstain"
            (folder / "strict.yaml").write_text(STRICT.replace("action: abstain", "action: escalate"))
            seen = wait_for(base, lambda h: h["strict"]["reloads"] == 1)
            assert seen["lenient"] == {"reloads": 0, "reload_errors": 0}
            assert answer(base, "key-strict")[1]["action"] == "escalate", "the edit serves"
            assert app.state.tenants.holders["lenient"].current() is lenient_guard, "the other was not reloaded"
            # a broken edit and a rename keep the last good version, counted; the other policy never notices
            (folder / "strict.yaml").write_text("version: 1\nname: strict\nrules: [")
            wait_for(base, lambda h: h["strict"]["reload_errors"] == 1)
            (folder / "strict.yaml").write_text(STRICT.replace("name: strict", "name: lenient"))
            wait_for(base, lambda h: h["strict"]["reload_errors"] == 2)
            assert answer(base, "key-strict")[1]["action"] == "escalate"
            assert answer(base, "key-lenient")[1]["action"] == "allow"
            assert app.state.tenants.holders["lenient"].current() is lenient_guard


def test_without_keys_every_caller_names_one_of_the_policies(tenants: Path) -> None:
    with ChatCompletionsServer(upstream_reply) as upstream:
        settings = ServeConfig(policies=tenants / "policies", upstream=upstream.base_url)
        with Running(create_app(settings)) as base:
            assert answer(base, "anything", "lenient")[1]["policy"] == "lenient"
            assert answer(base, "anything", "strict")[1]["policy"] == "strict"
            assert post(base, "anything", []).status_code == 400, "two policies served: the header is required"
            assert post(base, "anything", [(b"x-guardrails-policy", b"nope")]).status_code == 403
    logged = [d.metadata["key"] for d in read_audit(tenants / "policies" / "audit.jsonl") if "key" in d.metadata]
    assert logged.count("anonymous") == 2


def test_a_key_the_file_does_not_hold_may_use_no_policy(tenants: Path) -> None:
    """Fail closed below the HTTP layer too: only a key of the file gets a policy (none for a stranger)."""
    served = Tenants.load(None, tenants / "policies", read_api_keys(tenants / "keys.txt"))
    try:
        assert served.select("key-both", ["lenient"]) is served.holders["lenient"]
        for requested in ([], ["lenient"], ["strict"]):
            with pytest.raises(PolicyRefused) as refused:
                served.select("stranger", requested)
            assert refused.value.status == 403
    finally:
        served.close()


# -- start: fail fast, name the file or the key-file line --------------------------------------------------------


def start_error(root: Path, **changes) -> str:
    settings = {"policies": root / "policies", "upstream": "http://127.0.0.1:9/v1",
                "api_keys": read_api_keys(root / "keys.txt"), **changes}  # fmt: skip
    with pytest.raises((InputError, PolicyError)) as error:
        create_app(ServeConfig(**settings))
    return str(error.value)


def test_a_policy_that_fails_to_load_stops_the_server_at_start(tenants: Path) -> None:
    (tenants / "policies" / "broken.yaml").write_text("version: 1\nname: broken\nrules: [")
    assert "broken.yaml" in start_error(tenants)


def test_duplicate_policy_names_are_refused_naming_both_files(tenants: Path) -> None:
    (tenants / "policies" / "copy.yaml").write_text(LENIENT)
    message = start_error(tenants)
    assert "copy.yaml" in message and "lenient.yaml" in message and "'lenient'" in message
    (tenants / "policies" / "copy.yaml").write_text(LENIENT.replace("name: lenient", "name: Lenient"))
    message = start_error(tenants)
    assert "copy.yaml" in message and "lenient.yaml" in message, "names that differ only in case are duplicates"


def test_a_policy_name_a_header_cannot_carry_is_refused(tenants: Path) -> None:
    (tenants / "policies" / "odd.yaml").write_text(LENIENT.replace("name: lenient", "name: 'lenient / b'"))
    message = start_error(tenants)
    assert "odd.yaml" in message and "name" in message


def test_a_key_mapped_to_a_policy_not_served_names_the_key_file_line(tenants: Path) -> None:
    (tenants / "keys.txt").write_text(KEYS + "key-typo    strcit\n")
    message = start_error(tenants)
    assert "keys.txt:6" in message and "strcit" in message and "key-typo" not in message, "never the key itself"


def test_a_key_without_policies_in_multi_policy_mode_names_its_line(tenants: Path) -> None:
    (tenants / "keys.txt").write_text(KEYS + "key-bare\n")
    message = start_error(tenants)
    assert "keys.txt:6" in message and "key-bare" not in message


def test_bad_key_lines_name_the_line(tenants: Path) -> None:
    for line, expected in (("key-x strict,, lenient", "keys.txt:1"), ("key-x *, strict", "keys.txt:1"),
                           ("key-x ../strict", "keys.txt:1")):  # fmt: skip
        (tenants / "keys.txt").write_text(line + "\n")
        with pytest.raises(InputError) as error:
            read_api_keys(tenants / "keys.txt")
        assert expected in str(error.value) and "key-x" not in str(error.value)
    (tenants / "keys.txt").write_text("key-x strict\n\nkey-x lenient\n")
    with pytest.raises(InputError) as error:
        read_api_keys(tenants / "keys.txt")
    assert "keys.txt:3" in str(error.value) and "line 1" in str(error.value)


def test_a_folder_without_policies_is_refused(tenants: Path) -> None:
    for name in ("strict.yaml", "lenient.yaml"):
        (tenants / "policies" / name).unlink()
    assert "no policy" in start_error(tenants)


def test_single_policy_mode_keeps_bare_keys_and_checks_the_header(tenants: Path) -> None:
    (tenants / "keys.txt").write_text("key-old\n")
    with ChatCompletionsServer(upstream_reply) as upstream:
        settings = ServeConfig(policy=tenants / "policies" / "strict.yaml", upstream=upstream.base_url,
                               api_keys=read_api_keys(tenants / "keys.txt"))  # fmt: skip
        with Running(create_app(settings)) as base:
            assert answer(base, "key-old")[1]["policy"] == "strict", "a bare key needs no header"
            assert answer(base, "key-old", "strict")[1]["policy"] == "strict"
            assert post(base, "key-old", [(b"x-guardrails-policy", b"lenient")]).status_code == 403
            assert httpx.get(f"{base}/healthz").json()["policy"] == "strict"


def serve_cli(args: list[str], cwd: Path) -> tuple[int, str]:
    process = subprocess.run(
        [sys.executable, "-m", "guardrails_uq", "serve", "--upstream", "http://127.0.0.1:9/v1", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return process.returncode, process.stderr


def test_cli_start_errors_are_clear(tenants: Path) -> None:
    code, err = serve_cli(["--policy", "policies/strict.yaml", "--policies", "policies"], tenants)
    assert code != 0 and "--policy" in err and "--policies" in err and "Traceback" not in err
    code, err = serve_cli(["--policies", "policies/strict.yaml"], tenants)
    assert code != 0 and "strict.yaml" in err and "folder" in err and "Traceback" not in err
    (tenants / "keys.txt").write_text(KEYS + "key-typo    strcit\n")
    code, err = serve_cli(["--policies", "policies", "--api-keys", "keys.txt", "--port", "9"], tenants)
    assert code != 0 and "keys.txt:6" in err and "Traceback" not in err
    (tenants / "policies" / "broken.yaml").write_text("version: 1\nname: broken\nrules: [")
    code, err = serve_cli(["--policies", "policies", "--workers", "2", "--port", "9"], tenants)
    assert code != 0 and "broken.yaml" in err and "Traceback" not in err, "checked before any worker starts"
