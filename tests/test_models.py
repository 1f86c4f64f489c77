"""Model backends: the OpenAI-compatible client against a real local server, logprob parsing, SmolLM2."""

from __future__ import annotations

import asyncio
import json

import pytest

from guardrails_uq import Generation, ModelError, TokenLogprob, TopLogprob
from guardrails_uq.errors import InputError
from guardrails_uq.models import logprobs as lp
from guardrails_uq.models.openai_compat import OpenAIChatModel
from guardrails_uq.testing import ChatCompletionsServer, ScriptedReply

TOKENS = [
    TokenLogprob(
        token="Paris",
        logprob=-0.1,
        top=[TopLogprob(token="Paris", logprob=-0.1), TopLogprob(token="Lyon", logprob=-2.5)],
    ),
    TokenLogprob(token=".", logprob=-0.01, top=[]),
]
USER = [{"role": "user", "content": "Capital of France?"}]


def reply(request: dict) -> Generation:
    return Generation(text="Paris.", tokens=TOKENS)


def client(server: ChatCompletionsServer, **kwargs) -> OpenAIChatModel:
    return OpenAIChatModel(server.base_url, "small", backoff=0.01, **kwargs)


def test_chat_with_logprobs_round_trip() -> None:
    with ChatCompletionsServer(reply) as server:
        generation = client(server).generate(USER, top_logprobs=2)
        assert generation.text == "Paris."
        assert generation.tokens == TOKENS
        assert server.requests[0]["logprobs"] is True and server.requests[0]["top_logprobs"] == 2
        many = client(server).chat_many(USER, n=3, temperature=1.0)
        assert len(many) == 3


def test_retries_5xx_and_429_then_succeeds() -> None:
    script = [ScriptedReply(500, "oops"), ScriptedReply(429, {"error": "slow down"}), ScriptedReply(503, "")]
    with ChatCompletionsServer(reply, script=script) as server:
        generation = client(server, max_retries=3).generate(USER)
        assert generation.text == "Paris." and len(server.requests) == 4


def test_gives_up_after_max_retries() -> None:
    with ChatCompletionsServer(reply, script=[ScriptedReply(502, "bad gateway")] * 3) as server:
        with pytest.raises(ModelError, match="gave up after 3 attempts") as info:
            client(server, max_retries=2).generate(USER)
        assert info.value.retryable


def test_timeout_is_retried_then_reported() -> None:
    with (
        ChatCompletionsServer(reply, script=[ScriptedReply(200, {}, delay=0.5)] * 2) as server,
        pytest.raises(ModelError, match="timed out"),
    ):
        client(server, timeout=0.1, max_retries=1).generate(USER)


def test_auth_failure_names_the_env_var(monkeypatch) -> None:
    monkeypatch.setenv("LARGE_KEY", "wrong")
    with ChatCompletionsServer(reply, api_key="right") as server:
        with pytest.raises(ModelError, match=r"authentication failed.*LARGE_KEY"):
            client(server, api_key_env="LARGE_KEY").generate(USER)
        monkeypatch.setenv("LARGE_KEY", "right")
        assert client(server, api_key_env="LARGE_KEY").generate(USER).text == "Paris."


def test_missing_env_var_and_repr_hides_the_key(monkeypatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(ModelError, match="NOPE_KEY"):
        OpenAIChatModel("http://127.0.0.1:1/v1", "m", api_key_env="NOPE_KEY")
    model = OpenAIChatModel("http://127.0.0.1:1/v1", "m", api_key="sk-secret-123")
    assert "sk-secret-123" not in repr(model) and "api_key=set" in repr(model)


def test_unknown_model_and_malformed_bodies() -> None:
    with (
        ChatCompletionsServer(reply, models=["big"]) as server,
        pytest.raises(ModelError, match=r"not found \(404\) for model 'small'"),
    ):
        client(server).generate(USER)
    garbage = [
        ScriptedReply(200, "<html>hi</html>"),
        ScriptedReply(200, {"choices": []}),
        ScriptedReply(200, {"choices": [{"message": {}}]}),
    ]
    with ChatCompletionsServer(reply, script=garbage) as server:
        for expected in ("not JSON", "no 'choices'", "message.content is missing"):
            with pytest.raises(ModelError, match=expected):
                client(server).generate(USER)


def test_async_generate_and_concurrency() -> None:
    with ChatCompletionsServer(reply, script=[ScriptedReply(500, "")]) as server:
        model = client(server, max_retries=1)

        async def main() -> list[str]:
            results = await asyncio.gather(*(model.agenerate(USER) for _ in range(10)))
            return [g.text for g in results]

        assert asyncio.run(main()) == ["Paris."] * 10


def test_logprob_parsers() -> None:
    completions = {"tokens": ["a", "b"], "token_logprobs": [None, -0.5], "top_logprobs": [None, {"b": -0.5, "c": -1.0}]}
    parsed = lp.from_openai_completions(completions)
    assert parsed == [
        TokenLogprob(
            token="b", logprob=-0.5, top=[TopLogprob(token="b", logprob=-0.5), TopLogprob(token="c", logprob=-1.0)]
        )
    ]
    chat = {"content": [{"token": "x", "logprob": -1.0, "top_logprobs": []}]}
    assert lp.from_langchain({"logprobs": chat}) == [TokenLogprob(token="x", logprob=-1.0)]
    assert lp.from_langchain({"finish_reason": "stop"}) is None
    assert lp.from_openai_chat(None) is None

    class LogProb:  # the shape of llama_index.core.base.llms.types.LogProb
        def __init__(self, token: str, logprob: float) -> None:
            self.token, self.logprob = token, logprob

    li = lp.from_llamaindex([[LogProb("hi", -0.2), LogProb("hey", -1.9)]])
    assert li == [TokenLogprob(token="hi", logprob=-0.2, top=[TopLogprob(token="hey", logprob=-1.9)])]
    with pytest.raises(ValueError, match="must be a number"):
        lp.from_openai_chat({"content": [{"token": "x", "logprob": "high"}]})


@pytest.mark.parametrize("bad", [True, float("nan"), "0.5", None, [-0.1]])
def test_chat_logprob_errors_name_the_position(bad: object) -> None:
    good = {"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "a", "logprob": -0.1}]}
    with pytest.raises(InputError, match=r"^logprobs: content\[1\]: logprob must be a number"):
        lp.from_openai_chat({"content": [good, {"token": "b", "logprob": bad}]})
    with pytest.raises(InputError, match=r"^logprobs: content\[1\]\.top_logprobs: logprob must be a number"):
        lp.from_openai_chat({"content": [good, {"token": "b", "logprob": -0.2, "top_logprobs": [{"token": "c", "logprob": bad}]}]})  # fmt: skip


def test_chat_logprobs_are_validated_as_the_models_are() -> None:
    """Integers are numbers, tokens are text, lone surrogates become U+FFFD, infinities pass to the checks."""
    parsed = lp.from_openai_chat(
        {"content": [{"token": 7, "logprob": 0, "bytes": [55], "top_logprobs": [{"token": "x\ud800", "logprob": -1}]},
                     {"token": "é\udfff", "logprob": float("-inf"), "top_logprobs": None}]}
    )  # fmt: skip
    assert parsed == [
        TokenLogprob(token="7", logprob=0.0, top=[TopLogprob(token="x\ufffd", logprob=-1.0)]),
        TokenLogprob(token="é\ufffd", logprob=float("-inf")),
    ]
    assert all(type(t) is TokenLogprob and all(type(a) is TopLogprob for a in t.top) for t in parsed)


@pytest.mark.slow
def test_local_model_generates_scores_and_samples() -> None:
    from guardrails_uq.models.local import default_model

    model = default_model()
    generation = model.generate(USER, max_tokens=16, top_logprobs=3)
    assert generation.text and generation.tokens
    assert all(t.logprob <= 0 and len(t.top) == 3 for t in generation.tokens)
    assert generation.tokens[0].top[0].logprob == pytest.approx(generation.tokens[0].logprob)  # greedy = argmax
    scored = model.score(USER, generation.text, top_logprobs=0)
    assert len(scored) >= 1 and scored[0].logprob == pytest.approx(generation.tokens[0].logprob, abs=1e-4)
    a = model.sample(USER, 2, max_tokens=8, seed=7)
    b = model.sample(USER, 2, max_tokens=8, seed=7)
    assert [g.text for g in a] == [g.text for g in b]


@pytest.mark.slow
def test_local_model_behind_the_local_server() -> None:
    from guardrails_uq.models.local import default_model

    model = default_model()

    def respond(request: dict) -> Generation:
        return model.generate(request["messages"], max_tokens=8, top_logprobs=request.get("top_logprobs") or 0)

    with ChatCompletionsServer(respond) as server:
        generation = client(server).generate(USER, top_logprobs=2)
    assert generation.tokens and len(generation.tokens[0].top) == 2
    json.dumps(server.requests)


def test_the_model_client_sends_no_cookie_an_upstream_set() -> None:
    """One OpenAIChatModel serves many callers (a cascade's escalation model): a cookie one response sets
    must not go out with the next request."""
    import httpx

    seen: list[str | None] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        choice = {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        return httpx.Response(200, json={"choices": [choice]}, headers={"set-cookie": "session=alice; Path=/"})

    model = OpenAIChatModel("http://upstream/v1", "m", transport=httpx.MockTransport(upstream), backoff=0.01)
    assert model.generate(USER).text == model.generate(USER).text == "ok"
    assert seen == [None, None]


def test_an_integer_logprob_too_large_for_a_float_is_an_input_error() -> None:
    from guardrails_uq.models.logprobs import from_openai_chat

    with pytest.raises(InputError, match=r"content\[0\].*out of range"):
        from_openai_chat({"content": [{"token": "a", "logprob": 10**400, "top_logprobs": []}]})
    with pytest.raises(InputError, match="out of range"):
        from_openai_chat(
            {"content": [{"token": "a", "logprob": -1.0, "top_logprobs": [{"token": "b", "logprob": -(10**400)}]}]}
        )
