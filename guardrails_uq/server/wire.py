"""The OpenAI chat-completions wire format, read strictly and written from what the Guard checked.

Reading: a request body becomes a :class:`ChatRequest` (or RequestRefused(400) naming the field); an
upstream choice becomes a :class:`ChoiceOutput` (or InputError: malformed model output, which the exchange
turns into an on_error Decision). Writing: responses and stream events are rebuilt from allow-listed fields,
never passed through, so nothing the output phase did not see (another choice, a tool call, a stray field)
reaches the client; every body is strict JSON (:mod:`guardrails_uq.jsonsafe`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import Response
from pydantic import ValidationError

from ..call import Generation, Message, TokenLogprob, opaque_call_id
from ..decision import Decision
from ..errors import InputError
from ..jsonsafe import clean_text, definitions_text, dumpb, reader_texts, tool_call_text
from ..models.logprobs import from_openai_chat
from .documents import Extension, parse_extension
from .limits import RequestRefused

_ROLES = {"system", "user", "assistant", "tool", "developer"}
_TEXT_PARTS = {"text", "input_text"}


@dataclass
class ChatRequest:
    """A client's chat-completions request, validated."""

    body: dict[str, Any]
    messages: list[Message]
    stream: bool
    n: int
    wants_logprobs: bool
    top_logprobs: int | None
    model: str | None
    extension: Extension = field(default_factory=Extension)  # the ``guardrails`` field (documents)


@dataclass
class ChoiceOutput:
    """One upstream choice as the Guard sees it: the text checked (content, then every tool call written out
    as the client will decode it), the content alone, token logprobs, tool calls, finish reason."""

    index: int
    content: str
    tokens: list[TokenLogprob] | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"

    @property
    def checked_text(self) -> str:
        """What the output phase reads: the content and every tool call's name and decoded arguments, each in
        every form a reader can be shown (:func:`~guardrails_uq.jsonsafe.reader_texts`: JSON escapes decoded)."""
        shown = "\n".join([self.content, *(tool_text(c) for c in self.tool_calls)]) if self.tool_calls else self.content
        return "\n".join(reader_texts(shown))

    def generation(self) -> Generation:
        if not self.tool_calls:
            return Generation(text=self.checked_text, tokens=self.tokens)
        return Generation(text=self.checked_text, tokens=self.tokens, kind="tool_call", content=self.content or None)


def canonical_arguments(arguments: str) -> str:
    """Tool-call arguments as the proxy forwards them: JSON re-encoded without escapes for non-ASCII text
    (so the text checked is the text a client decodes); left as is when it is not JSON."""
    try:
        return json.dumps(json.loads(arguments), ensure_ascii=False)
    except (ValueError, RecursionError):
        return arguments


def tool_text(call: Mapping[str, Any]) -> str:
    """The text of a tool call a client would read: :func:`~guardrails_uq.jsonsafe.tool_call_text` of its
    name and (decoded) arguments."""
    return tool_call_text(call["function"]["name"], call["function"]["arguments"])


#: finish_reason values passed on; anything else an upstream sends becomes "stop".
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


def _finish(value: Any) -> str:
    return value if isinstance(value, str) and value in FINISH_REASONS else "stop"


class CallIds:
    """Tool-call ids written by the proxy for one response: an upstream id is text the output phase never
    reads (a misbehaving upstream can carry a passage in plain identifiers), so it is only a key. The same
    upstream id gets the same proxy id within the response (a call named twice stays one call); a call
    without an id gets a fresh one."""

    def __init__(self) -> None:
        import secrets

        self._prefix = secrets.token_hex(6)
        self._ids: dict[str, str] = {}

    def __call__(self, upstream: Any) -> str:
        if isinstance(upstream, str) and upstream in self._ids:
            return self._ids[upstream]
        proxy = f"call_{self._prefix}{len(self._ids):03d}"
        self._ids[upstream if isinstance(upstream, str) else f"\x00{len(self._ids)}"] = proxy
        return proxy


def _content(value: Any, where: str) -> str:
    """Text of a message content: a string, null, or a list of text parts. Other parts (images, audio) are
    refused: the guard cannot check what it cannot read."""
    if value is None:
        return ""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            kind = part.get("type") if isinstance(part, Mapping) else None
            if not isinstance(kind, str) or kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
                shown = kind[:32] if isinstance(kind, str) else type(kind if kind is not None else part).__name__
                raise ValueError(f"{where}[{i}] is a {shown!r} part; only text parts can be checked")
            texts.append(clean_text(part["text"]))
        return "".join(texts)
    raise ValueError(f"{where} must be a string, null or a list of text parts, not {type(value).__name__}")


def _integer(body: Mapping[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestRefused(400, f"invalid request: '{name}' must be an integer from {low} to {high}")
    return value


def instructions_text(body: Mapping[str, Any]) -> str:
    """Text besides the messages that reaches the model: tool names, descriptions and parameter schemas,
    and a response_format schema (empty when there is none)."""
    return definitions_text(body[key] for key in ("tools", "functions", "response_format") if body.get(key))


def _refuse(where: str, problem: str) -> RequestRefused:
    return RequestRefused(400, f"invalid request: '{where}' {problem}")


def _message(raw: Any, i: int) -> Message:
    """One request message: role, content (text parts joined), and the fields of a tool conversation (an
    assistant turn's ``tool_calls``, a tool message's ``tool_call_id`` and ``name``), validated by
    :class:`~guardrails_uq.call.Message`; other fields are dropped. RequestRefused(400) naming the field."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("role"), str) or raw["role"] not in _ROLES:
        raise RequestRefused(400, f"invalid request: messages[{i}] needs a role of {sorted(_ROLES)}")
    try:
        content = _content(raw.get("content"), f"messages[{i}].content")
    except ValueError as exc:
        raise RequestRefused(400, f"invalid request: {exc}") from None
    role = "system" if raw["role"] == "developer" else raw["role"]
    fields: dict[str, Any] = {"role": role, "content": content}
    if raw.get("tool_calls") is not None and raw["tool_calls"] != []:
        calls = raw["tool_calls"]
        fields["tool_calls"] = [_request_call(c) for c in calls] if isinstance(calls, list) else calls
    if raw.get("tool_call_id") is not None:
        fields["tool_call_id"] = raw["tool_call_id"]
    if role == "tool" and raw.get("name") is not None:  # another role's name (a participant's) is dropped
        fields["name"] = raw["name"]
    try:
        return Message.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in error["loc"])
        raise _refuse(f"messages[{i}]{path}", f"is invalid: {error['msg'].removeprefix('Value error, ')}") from None


def _request_call(call: Any) -> Any:
    """A request tool call reduced to its known fields (arguments canonical, as :func:`canonical_arguments`
    forwards them); anything that is not an object is left for validation to refuse."""
    if not isinstance(call, Mapping):
        return call
    out = {k: call[k] for k in ("id", "type", "function") if k in call}
    function = call.get("function")
    if isinstance(function, Mapping):
        out["function"] = {k: function[k] for k in ("name", "arguments") if k in function}
        if isinstance(function.get("arguments"), str):
            out["function"]["arguments"] = canonical_arguments(clean_text(function["arguments"]))
    return out


def _tool_conversation(messages: list[Message]) -> None:
    """The structure an OpenAI upstream requires (so it is a clear 400 here, not an upstream error): each tool
    message answers a call of the assistant turn just before it (only tool messages between), every call of
    such a turn is answered before the next other message, and a turn's call ids are distinct."""
    waiting: dict[str, str] = {}  # id -> where the call is, for the calls not answered yet
    asked: set[str] = set()
    for i, message in enumerate(messages):
        if message.role == "tool":
            where = f"messages[{i}].tool_call_id"
            if message.tool_call_id is None:
                raise _refuse(where, "is required: a tool message answers a tool call of the assistant turn before it")
            if message.tool_call_id not in asked:
                raise _refuse(where, "answers no tool call of the assistant turn before it")
            waiting.pop(message.tool_call_id, None)
            continue
        if waiting:
            raise _refuse(next(iter(waiting.values())), "is not answered by a tool message before the next turn")
        asked = set()
        for j, call in enumerate(message.tool_calls or ()):
            if call.id in asked:
                raise _refuse(f"messages[{i}].tool_calls[{j}].id", "repeats the id of another call of this turn")
            asked.add(call.id)
            waiting[call.id] = f"messages[{i}].tool_calls[{j}].id"
    if waiting:
        raise _refuse(next(iter(waiting.values())), "is not answered by a tool message")


#: The id the upstream sees for a client's tool-call id (:func:`~..call.opaque_call_id`).
upstream_call_id = opaque_call_id


def upstream_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The messages to forward: as the input phase read them (:meth:`Message.model_dump`: tool calls, the
    ``tool_call_id`` and ``name`` of tool messages included), tool-call ids replaced by :func:`upstream_call_id`."""
    out = []
    for message in messages:
        data = message.model_dump()
        if message.tool_calls and not message.content:
            data["content"] = None  # as OpenAI writes a turn that only calls tools
        if message.tool_call_id is not None:
            data["tool_call_id"] = upstream_call_id(message.tool_call_id)
        for call in data.get("tool_calls", ()):
            call["id"] = upstream_call_id(call["id"])
        out.append(data)
    return out


def parse_request(raw: bytes, *, max_choices: int) -> ChatRequest:
    """Validate a request body; RequestRefused(400) naming the field otherwise."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RequestRefused(400, f"invalid request: the body is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise RequestRefused(400, "invalid request: the body must be a JSON object")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise RequestRefused(400, "invalid request: 'messages' must be a non-empty list")
    messages = [_message(m, i) for i, m in enumerate(raw_messages)]
    _tool_conversation(messages)
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise RequestRefused(400, "invalid request: 'stream' must be true or false")
    n = _integer(body, "n", 1, 1, max_choices) or 1
    if stream and n > 1:
        raise RequestRefused(
            400, "invalid request: 'n' > 1 cannot be streamed through the guard (each choice must pass the "
            "output phase before it is shown); send n=1 or stream=false",
        )  # fmt: skip
    model = body.get("model")
    return ChatRequest(
        body=body,
        messages=messages,
        stream=bool(stream),
        n=n,
        wants_logprobs=bool(body.get("logprobs")),
        top_logprobs=_integer(body, "top_logprobs", None, 0, 20),
        model=model if isinstance(model, str) else None,
        extension=parse_extension(body),
    )


def _tool_calls(value: Any, where: str, ids: CallIds) -> list[dict[str, Any]]:
    """Tool calls reduced to the fields a client needs (arguments canonical, ids the proxy's); InputError
    when malformed."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{where}.tool_calls must be a list", source="upstream")
    calls = []
    for i, call in enumerate(value):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise InputError(f"{where}.tool_calls[{i}] needs function.name", source="upstream")
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append(
            {
                "id": ids(call.get("id")),  # type: ignore[union-attr]
                "type": "function",
                "function": {
                    "name": clean_text(function["name"]),
                    "arguments": canonical_arguments(clean_text(arguments)),
                },
            }
        )
    return calls


def _logprobs(value: Any, where: str) -> list[TokenLogprob] | None:
    if value is not None and not isinstance(value, Mapping):
        raise InputError(f"{where}.logprobs must be an object with 'content'", source="upstream")
    try:
        return from_openai_chat(value)
    except (TypeError, AttributeError, KeyError) as exc:
        raise InputError(f"{where}.logprobs is malformed: {exc}", source="upstream") from None


def parse_choices(answer: Any) -> list[ChoiceOutput | InputError]:
    """Every choice of an upstream completion (a malformed one as its InputError, so it still gets a
    Decision); InputError when the body itself has no usable choices."""
    if not isinstance(answer, Mapping) or not isinstance(answer.get("choices"), list) or not answer["choices"]:
        raise InputError("the upstream body has no 'choices' list", source="upstream")
    out: list[ChoiceOutput | InputError] = []
    ids = CallIds()  # one response, one mapping of upstream ids
    for position, choice in enumerate(answer["choices"]):
        where = f"choices[{position}]"
        try:
            if not isinstance(choice, Mapping) or not isinstance(choice.get("message"), Mapping):
                raise InputError(f"{where} needs a 'message' object", source="upstream")
            message = choice["message"]
            try:
                content = _content(message.get("content"), f"{where}.message.content")
            except ValueError as exc:
                raise InputError(str(exc), source="upstream") from None
            refusal = message.get("refusal")
            if isinstance(refusal, str) and refusal:
                content = f"{content}\n{clean_text(refusal)}" if content else clean_text(refusal)
            out.append(
                ChoiceOutput(
                    index=position,
                    content=content,
                    tokens=_logprobs(choice.get("logprobs"), where),
                    tool_calls=_tool_calls(message.get("tool_calls"), f"{where}.message", ids),
                    finish_reason=_finish(choice.get("finish_reason")),
                )
            )
        except InputError as exc:
            out.append(exc)
    return out


@dataclass
class ChunkDelta:
    """One streamed chunk of choice 0: the text it adds (content, then tool-call argument fragments), the
    content, tool-call fragments, token logprobs. ``empty`` chunks (usage, keep-alives) carry nothing."""

    piece: str
    content: str
    tool_calls: list[dict[str, Any]]
    tokens: list[TokenLogprob] | None
    role: str | None

    @property
    def empty(self) -> bool:
        return not self.piece and not self.tool_calls and self.role is None


def parse_chunk(chunk: Any) -> ChunkDelta:
    """A streamed chunk of a one-choice stream; InputError for anything else (another choice index, an
    error event, a malformed delta): the stream then fails closed."""
    if not isinstance(chunk, Mapping):
        raise InputError("a stream event is not a JSON object", source="upstream")
    if "error" in chunk:  # its text stays out of the client's view (InputError text reaches the audit log only)
        raise InputError("the upstream sent an error event", source="upstream")
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise InputError("a stream chunk has no 'choices' list", source="upstream")
    if not choices:
        return ChunkDelta("", "", [], None, None)  # a usage-only chunk
    if len(choices) != 1 or not isinstance(choices[0], Mapping) or choices[0].get("index", 0) != 0:
        raise InputError("a stream chunk carries a choice other than index 0 (n=1 was asked)", source="upstream")
    choice = choices[0]
    delta = choice.get("delta") or {}
    if not isinstance(delta, Mapping):
        raise InputError("a stream chunk's delta is not an object", source="upstream")
    try:
        content = _content(delta.get("content"), "delta.content")
    except ValueError as exc:
        raise InputError(str(exc), source="upstream") from None
    fragments = []
    raw_calls = delta.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise InputError("delta.tool_calls must be a list", source="upstream")
    for i, call in enumerate(raw_calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            raise InputError(f"delta.tool_calls[{i}] needs a function object", source="upstream")
        name, arguments = function.get("name"), function.get("arguments")
        if (name is not None and not isinstance(name, str)) or (
            arguments is not None and not isinstance(arguments, str)
        ):
            raise InputError(f"delta.tool_calls[{i}].function fields must be strings", source="upstream")
        index = call.get("index", i)  # type: ignore[union-attr]
        fragment: dict[str, Any] = {"index": index if isinstance(index, int) and 0 <= index < 128 else i}
        if call.get("id") is not None:  # type: ignore[union-attr]
            fragment["id"] = call.get("id")  # type: ignore[union-attr]  # a key only: the proxy writes its own
            fragment["type"] = "function"
        fragment["function"] = {
            k: clean_text(v) for k, v in (("name", name), ("arguments", arguments)) if v is not None
        }
        fragments.append(fragment)
    piece = content + "".join(f["function"].get("name", "") + f["function"].get("arguments", "") for f in fragments)
    role = delta.get("role")
    return ChunkDelta(
        piece=piece,
        content=content,
        tool_calls=fragments,
        tokens=_logprobs(choice.get("logprobs"), "delta"),
        role=role if isinstance(role, str) else None,
    )


# -- writing -------------------------------------------------------------------------------------------------


def decision_json(decision: Decision) -> dict[str, Any]:
    """The client's view of a Decision (:meth:`Decision.client_view`, without signals: a client could tune an
    evasion on them); strictness is applied when the body is encoded."""
    return decision.client_view()


def headers(decision: Decision) -> dict[str, str]:
    return {"X-Guardrails-Action": decision.action.value, "X-Guardrails-Decision": decision.id}


def json_response(body: Any, status: int = 200, extra_headers: Mapping[str, str] | None = None) -> Response:
    """A strict-JSON response (never NaN/Infinity, never an encoding error)."""
    return Response(dumpb(body), status_code=status, media_type="application/json", headers=dict(extra_headers or {}))


def error_response(
    status: int, message: str, kind: str, decision: Decision | None = None, code: str | None = None
) -> Response:
    """An OpenAI-style error body (``message``, ``type``, ``code`` when given), with the Decision if any."""
    body: dict[str, Any] = {"error": {"message": message, "type": kind}}
    if code is not None:
        body["error"]["code"] = code
    if decision is not None:
        body["guardrails"] = decision_json(decision)
    return json_response(body, status, headers(decision) if decision is not None else None)


def choice_json(
    index: int, content: str, *, tool_calls: list[dict[str, Any]] = (), finish_reason: str = "stop",  # type: ignore[assignment]
    logprobs: list[TokenLogprob] | None = None, decision: Decision | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One response choice; tool calls and logprobs only when the choice was allowed as is."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    choice: dict[str, Any] = {"index": index, "message": message, "finish_reason": finish_reason}
    shown = shown_logprobs(logprobs, content)
    if shown is not None:
        choice["logprobs"] = shown
    if decision is not None:
        choice["guardrails"] = decision_json(decision)
    return choice


def shown_logprobs(tokens: list[TokenLogprob] | None, content: str) -> dict[str, Any] | None:
    """The logprobs a client may see: only when the tokens spell exactly the checked content (otherwise they
    would carry text the output phase never saw). The ``top_logprobs`` alternatives are never shown (always
    ``[]``): a reader can spell a passage along any path through them (one word per position), which no
    check of one text covers; the uncertainty check still reads them."""
    if tokens is None or "".join(t.token for t in tokens) != content:
        return None
    return {"content": [token_json(t) for t in tokens]}


def token_json(token: TokenLogprob) -> dict[str, Any]:
    return {
        "token": token.token,
        "logprob": token.logprob,
        "top_logprobs": [],
    }


def completion_json(
    choices: list[dict[str, Any]], model: str | None, decision: Decision, upstream: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A chat.completion body carrying the request's verdict in ``guardrails``. Nothing is copied from the
    upstream body but integer token counts: the id is the proxy's, the model the one the client named."""
    body: dict[str, Any] = {
        "id": f"chatcmpl-{decision.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or "guardrails",
        "choices": choices,
        "guardrails": decision_json(decision),
    }
    usage = (upstream or {}).get("usage")
    if isinstance(usage, Mapping):
        counts = {k: v for k, v in usage.items() if k in _USAGE and isinstance(v, int) and not isinstance(v, bool)}
        if counts:
            body["usage"] = counts
    return body


_USAGE = ("prompt_tokens", "completion_tokens", "total_tokens")


def sse(payload: Mapping[str, Any]) -> bytes:
    """One server-sent event (strict JSON)."""
    return b"data: " + dumpb(payload) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def chunk_json(
    stream_id: str, model: str | None, delta: dict[str, Any], *, finish_reason: str | None = None,
    logprobs: list[TokenLogprob] | None = None, decision: Decision | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A chat.completion.chunk for choice 0."""
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    shown = shown_logprobs(logprobs, delta.get("content", ""))
    if shown is not None:
        choice["logprobs"] = shown
    body: dict[str, Any] = {
        "id": stream_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model or "guardrails",
        "choices": [choice],
    }
    if decision is not None:
        body["guardrails"] = decision_json(decision)
    return body


def decided_stream(choice: Mapping[str, Any], model: str | None, decision: Decision) -> list[bytes]:
    """The events of a stream whose answer was decided whole (a response choice from :func:`choice_json`):
    its content (with the logprobs the choice shows), its tool calls, the Decision, ``[DONE]``."""
    stream_id = f"guardrails-{decision.id}"
    message = choice["message"]
    first = chunk_json(stream_id, model, {"role": "assistant", "content": message["content"]})
    if "logprobs" in choice:
        first["choices"][0]["logprobs"] = choice["logprobs"]
    events = [sse(first)]
    if message.get("tool_calls"):
        calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        events.append(sse(chunk_json(stream_id, model, {"tool_calls": calls})))
    events.append(sse(chunk_json(stream_id, model, {}, finish_reason=choice["finish_reason"], decision=decision)))
    return [*events, SSE_DONE]


def blocked_stream(text: str, model: str | None, decision: Decision) -> list[bytes]:
    """The events of a stream the guard answered itself (input blocked, or not checkable): the policy
    message, the Decision, ``[DONE]``; what an OpenAI SDK or ChatOpenAI client expects from ``stream=True``."""
    stream_id = f"guardrails-{decision.id}"
    return [
        sse(chunk_json(stream_id, model, {"role": "assistant", "content": text})),
        sse(chunk_json(stream_id, model, {}, finish_reason="stop", decision=decision)),
        SSE_DONE,
    ]
