"""An OpenAI-compatible chat-completions client over httpx: sync and async, logprobs, retries.

Retries 429 and 5xx responses and transport errors with exponential backoff (``backoff * 2**attempt``
seconds, honouring ``Retry-After``); fails at once, with a message that says what to fix, on
authentication errors (401/403), unknown models or endpoints (404), other 4xx, and malformed bodies.
The API key is read from the environment variable the policy names and never appears in repr or errors.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from ..call import Generation, Message
from ..errors import ModelError
from .logprobs import from_openai_chat


def combine_samples(choices: Sequence[Generation], n: int, source: str = "model") -> Generation:
    """The first choice with the next ``n`` choices' texts as its ``samples`` (one ``n + 1``-choice reply).

    ModelError when fewer than ``n + 1`` choices came back (a server that ignores ``n``)."""
    if len(choices) < n + 1:
        raise ModelError(
            f"{source}: asked for {n + 1} choices (the answer and {n} samples) and got {len(choices)}; "
            "the server ignores `n`: lower uncertainty.samples to 0 or use a server that supports n"
        )
    first = choices[0]
    return first.model_copy(update={"samples": [c.text for c in choices[1 : n + 1]]})


def _messages(messages: Sequence[Message | dict[str, str]]) -> list[dict[str, str]]:
    return [m.model_dump() if isinstance(m, Message) else dict(m) for m in messages]


def cookieless_jar() -> CookieJar:
    """A cookie jar that keeps nothing. A client shared by many callers (the proxy's, a cascade's escalation
    model) must never send one caller's cookie, set by an upstream response, with another caller's request."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


class OpenAIChatModel:
    """Chat completions from any OpenAI-compatible server (vLLM, llama.cpp server, OpenAI, ...)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
            if api_key is None:
                raise ModelError(f"environment variable {api_key_env} (the API key for {self.base_url}) is not set")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self._client = httpx.Client(timeout=timeout, transport=transport, cookies=cookieless_jar())
        self._async_transport = async_transport

    @classmethod
    def from_endpoint(cls, endpoint: Any) -> OpenAIChatModel:
        """Build from a policy ``ModelEndpoint`` section."""
        return cls(
            endpoint.base_url,
            endpoint.model,
            api_key_env=endpoint.api_key_env,
            timeout=endpoint.timeout,
            max_retries=endpoint.max_retries,
        )

    @property
    def name(self) -> str:
        return f"{self.model}@{self.base_url}"

    def _body(
        self,
        messages: Sequence[Message | dict[str, str]],
        max_tokens: int,
        temperature: float,
        top_logprobs: int | None,
        n: int,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": _messages(messages),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "n": n,
        }
        if top_logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = top_logprobs
        return body

    def _check(self, response: httpx.Response) -> dict[str, Any] | None:
        """The parsed body of a success; None for a retryable status; ModelError otherwise."""
        status = response.status_code
        if status == 429 or status >= 500:
            return None
        if status in (401, 403):
            hint = f"check {self.api_key_env}" if self.api_key_env else "set api_key_env in the policy's model section"
            raise ModelError(f"{self.base_url}: authentication failed ({status}); {hint}", status=status)
        detail = response.text[:300]
        if status == 404:
            raise ModelError(
                f"{self.base_url}: not found (404) for model {self.model!r}; check base_url (it should end "
                f"before /chat/completions) and the model name. Server said: {detail}",
                status=status,
            )
        if status >= 400:
            raise ModelError(f"{self.base_url}: request rejected ({status}): {detail}", status=status)
        try:
            body = response.json()
        except ValueError:
            raise ModelError(f"{self.base_url}: response is not JSON: {response.text[:200]!r}", status=status) from None
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list) or not body["choices"]:
            raise ModelError(f"{self.base_url}: malformed response: no 'choices' list", status=status)
        return body

    def _parse(self, body: dict[str, Any]) -> list[Generation]:
        generations = []
        for i, choice in enumerate(body["choices"]):
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise ModelError(f"{self.base_url}: malformed response: choices[{i}].message.content is missing")
            try:
                tokens = from_openai_chat(choice.get("logprobs"))
            except Exception as exc:
                raise ModelError(f"{self.base_url}: malformed logprobs in choices[{i}]: {exc}") from None
            generations.append(Generation(text=message["content"], tokens=tokens, model=body.get("model", self.model)))
        return generations

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            retry_after = response.headers.get("retry-after")
            if retry_after:
                try:
                    return min(float(retry_after), 30.0)
                except ValueError:
                    pass
        return self.backoff * (2**attempt)

    def chat_many(
        self,
        messages: Sequence[Message | dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_logprobs: int | None = 5,
        n: int = 1,
    ) -> list[Generation]:
        """``n`` completions of ``messages`` (with per-token logprobs unless top_logprobs is None)."""
        body = self._body(messages, max_tokens, temperature, top_logprobs, n)
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            response = None
            try:
                response = self._client.post(f"{self.base_url}/chat/completions", json=body, headers=self._headers)
                parsed = self._check(response)
                if parsed is not None:
                    return self._parse(parsed)
                last = f"status {response.status_code}"
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout} s"
            except httpx.TransportError as exc:
                last = f"connection failed: {exc}"
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, response))
        raise ModelError(f"{self.base_url}: gave up after {self.max_retries + 1} attempts ({last})", retryable=True)

    def generate(self, messages: Sequence[Message | dict[str, str]], **kwargs: Any) -> Generation:
        """One completion (see :meth:`chat_many`)."""
        return self.chat_many(messages, n=1, **kwargs)[0]

    def generate_with_samples(
        self,
        messages: Sequence[Message | dict[str, str]],
        n: int,
        *,
        temperature: float = 1.0,
        max_tokens: int = 256,
        top_logprobs: int | None = 5,
    ) -> Generation:
        """The answer and ``n`` extra samples from ONE request (``n + 1`` choices at ``temperature``).

        Choice 0 is the answer (text and per-token logprobs); the other choices' texts are its ``samples``
        (sample-based uncertainty: ``uncertainty: {samples: n}``). All choices share the request's
        temperature, so the answer is a sample too: at temperature 0 the samples are near-copies of it and
        the sample scores carry no information. ModelError when the server returns fewer than ``n + 1``
        choices (some servers ignore ``n``): never silently fewer samples."""
        choices = self.chat_many(
            messages, n=n + 1, temperature=temperature, max_tokens=max_tokens, top_logprobs=top_logprobs
        )
        return combine_samples(choices, n, self.base_url)

    async def agenerate(self, messages: Sequence[Message | dict[str, str]], **kwargs: Any) -> Generation:
        """Async :meth:`generate` on an httpx.AsyncClient (the event loop is never blocked)."""
        body = self._body(
            messages, kwargs.get("max_tokens", 256), kwargs.get("temperature", 0.0), kwargs.get("top_logprobs", 5), 1
        )
        return (await self._apost(body))[0]

    async def agenerate_with_samples(
        self,
        messages: Sequence[Message | dict[str, str]],
        n: int,
        *,
        temperature: float = 1.0,
        max_tokens: int = 256,
        top_logprobs: int | None = 5,
    ) -> Generation:
        """Async :meth:`generate_with_samples` (one request)."""
        body = self._body(messages, max_tokens, temperature, top_logprobs, n + 1)
        return combine_samples(await self._apost(body), n, self.base_url)

    async def _apost(self, body: dict[str, Any]) -> list[Generation]:
        last = "no attempt"
        async with httpx.AsyncClient(
            timeout=self.timeout, transport=self._async_transport, cookies=cookieless_jar()
        ) as client:
            for attempt in range(self.max_retries + 1):
                response = None
                try:
                    response = await client.post(f"{self.base_url}/chat/completions", json=body, headers=self._headers)
                    parsed = self._check(response)
                    if parsed is not None:
                        return self._parse(parsed)
                    last = f"status {response.status_code}"
                except httpx.TimeoutException:
                    last = f"timed out after {self.timeout} s"
                except httpx.TransportError as exc:
                    last = f"connection failed: {exc}"
                if attempt < self.max_retries:
                    await asyncio.sleep(self._delay(attempt, response))
        raise ModelError(f"{self.base_url}: gave up after {self.max_retries + 1} attempts ({last})", retryable=True)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        key = "set" if self._headers else "none"
        return f"OpenAIChatModel(base_url={self.base_url!r}, model={self.model!r}, api_key={key})"
