"""Conversions between LangChain objects and guardrails-uq's framework-free data."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage

from guardrails_uq import Decision, Generation, Message, TokenLogprob
from guardrails_uq.call import opaque_call_id
from guardrails_uq.errors import InputError
from guardrails_uq.jsonsafe import definitions_text, json_strings, tool_call_text
from guardrails_uq.models.logprobs import from_langchain


def decision_metadata(decision: Decision) -> dict[str, Any]:
    """``{"guardrails": <the client view of the Decision, with signals>}``, for a message's
    ``response_metadata`` (:meth:`Decision.client_view`: never the blocked text or the evidence)."""
    return {"guardrails": decision.client_view(with_signals=True)}


#: How the guideline block that the input phase injects begins (guardrails_uq.guidelines.render.HEADER).
GUIDELINES_HEADER = "Here are some guidelines for the assistant to follow:"

_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "tool": "tool",
}


@dataclass(frozen=True)
class Content:
    """What a client can read in a message: ``answer``, its string content or text blocks joined (LangChain's
    ``.text``); ``other``, every other text it shows (reasoning and thinking, refusals, citations, plain-text
    documents, server-side tool calls and results, reasoning a provider put in ``additional_kwargs``); and
    ``unreadable``, the types of blocks the guard cannot read (images, audio, files, provider payloads)."""

    answer: str
    other: list[str]
    unreadable: list[str]

    @property
    def text(self) -> str:
        """The answer and every other text, one piece a line."""
        return "\n".join(p for p in [self.answer, *self.other] if p)


def _call(name: Any, arguments: Any) -> list[str]:
    return [tool_call_text(str(name or ""), arguments if arguments is not None else {})]


def _plain(block: Mapping[str, Any]) -> list[Any] | None:
    """A plain-text document block: readable when it carries its text, not when it only points at data."""
    if any(block.get(k) for k in ("base64", "url", "file_id")):
        return None
    return [block.get("title"), block.get("context"), block.get("text")]


#: The blocks a client reads, by type: langchain-core's standard content blocks
#: (``langchain_core.messages.content.KNOWN_BLOCK_TYPES``) and the provider blocks LangChain keeps raw in
#: ``content`` (Anthropic ``thinking``, ``tool_use``, ``server_tool_use``; OpenAI Responses reasoning with a
#: ``summary``). Each reader returns the values a reader sees (strings, or JSON read by json_strings), or None
#: when the block holds data the guard cannot read. Images, audio, video, files, ``non_standard`` payloads,
#: ``redacted_thinking`` and every other type are unreadable.
_READERS: dict[str, Callable[[Mapping[str, Any]], list[Any] | None]] = {
    "text": lambda b: [b.get("annotations"), b.get("citations")] if isinstance(b.get("text"), str) else None,
    "reasoning": lambda b: [b.get("reasoning"), b.get("summary"), b.get("content")],
    "thinking": lambda b: [b.get("thinking")],
    "refusal": lambda b: [b.get("refusal")],
    "text-plain": _plain,
    "tool_call": lambda b: _call(b.get("name"), b.get("args")),
    "invalid_tool_call": lambda b: _call(b.get("name"), b.get("args")),
    "tool_call_chunk": lambda b: _call(b.get("name"), b.get("args")),
    "server_tool_call": lambda b: _call(b.get("name"), b.get("args")),
    "server_tool_call_chunk": lambda b: _call(b.get("name"), b.get("args")),
    "tool_use": lambda b: _call(b.get("name"), b.get("input")),
    "server_tool_use": lambda b: _call(b.get("name"), b.get("input")),
    "server_tool_result": lambda b: [b.get("output")],
}
#: Reasoning and refusals providers return beside the content (DeepSeek, Groq, Ollama, xAI; OpenAI).
_BESIDE = ("reasoning_content", "reasoning", "refusal")


def read_content(message: Any) -> Content:
    """Every text a client can read in a message or chunk (or bare content), and the blocks it cannot read."""
    content = getattr(message, "content", message)
    if isinstance(content, str):
        answer, blocks = content, []
    else:
        blocks = list(content or [])
        answer = "".join(b if isinstance(b, str) else b["text"] for b in blocks if _is_text(b))
    other: list[str] = []
    unreadable: list[str] = []
    for block in blocks:
        if isinstance(block, str):
            continue
        kind = block.get("type") if isinstance(block, Mapping) else None
        reader = _READERS.get(kind) if isinstance(kind, str) else None
        values = reader(block) if reader is not None else None
        if values is None:
            unreadable.append(str(kind)[:40] if kind is not None else f"untyped {type(block).__name__}")
        else:
            other += [text for value in values for text in json_strings(value) if text]
    extra = getattr(message, "additional_kwargs", None) or {}
    other += [text for key in _BESIDE for text in json_strings(extra.get(key)) if text]
    return Content(answer=answer, other=other, unreadable=unreadable)


def _is_text(block: Any) -> bool:
    """A string, or a text block whose text is a string (any other text block is unreadable)."""
    return isinstance(block, str) or (
        isinstance(block, Mapping) and block.get("type") == "text" and isinstance(block.get("text"), str)
    )


def text_of(message: Any) -> str:
    """Every text a client can read in a message or chunk (:func:`read_content`), skipping blocks the guard
    cannot read: for prompts and tool results. Answers are read with :func:`checked_text`."""
    return read_content(message).text


def checked_text(message: Any) -> str:
    """:func:`text_of` for an answer: InputError (``source="model"``) naming every block the guard cannot
    read, so the output phase's ``on_error`` decides instead of an unchecked block reaching the client."""
    content = read_content(message)
    if content.unreadable:
        raise unreadable_error(content.unreadable)
    return content.text


def unreadable_error(kinds: Sequence[str]) -> InputError:
    """The check failure for content blocks of types ``kinds`` that the guard cannot read."""
    return InputError(f"the message has content blocks the guard cannot read: {', '.join(kinds)}", source="model")


def to_core(messages: Sequence[BaseMessage]) -> list[Message]:
    """LangChain messages -> guardrails-uq Messages (roles: system, user, assistant, tool). An AI message's tool
    calls and a tool message's ``tool_call_id`` and ``name`` are kept (ids as :func:`opaque_call_id` keys), so
    the input phase reads earlier turns' calls as the model does (:attr:`Message.read_text`) and
    :func:`to_langchain` gives the model a valid tool conversation back."""
    out = []
    for message in messages:
        role = _ROLES.get(message.role if isinstance(message, ChatMessage) else message.type, "user")
        fields: dict[str, Any] = {"role": role, "content": text_of(message)}
        if role == "assistant" and isinstance(message, AIMessage):
            calls = [
                {"id": opaque_call_id(str(c.get("id") or "")), "function": {"name": c["name"], "arguments": args}}
                for c, args in _calls_with_arguments(message)
            ]
            fields["tool_calls"] = calls or None
        elif role == "tool" and isinstance(message, ToolMessage):
            fields["tool_call_id"] = opaque_call_id(str(message.tool_call_id or ""))
            fields["name"] = message.name or None
        out.append(Message.model_validate(fields))
    return out


def tools_text(tools: Sequence[Any]) -> str:
    """The tool definitions bound to a model as it reads them (:func:`~guardrails_uq.jsonsafe.definitions_text`
    of each in OpenAI's format; one that cannot be converted: its strings as given)."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    found: list[Any] = []
    for tool in tools:
        try:
            found.append(convert_to_openai_tool(tool))
        except Exception:
            found.append(
                tool if isinstance(tool, Mapping) else [getattr(tool, "name", None), getattr(tool, "description", None)]
            )
    return definitions_text(found)


#: Content block types that carry a tool call's id (langchain-core's standard blocks, Anthropic's raw ones).
_CALL_BLOCKS = frozenset({"tool_call", "tool_call_chunk", "invalid_tool_call", "tool_use", "server_tool_use"})


def as_forwarded(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """``messages`` as the agent middleware hands them to the model, holding nothing :func:`to_core` did not
    read (what the proxy and GuardedChatModel forward, as they rebuild the prompt): the ``name`` of every
    message but a tool's (``name`` or ``additional_kwargs["name"]``: a participant's name, sent by ChatOpenAI)
    and an assistant turn's legacy ``function_call`` are dropped, and every tool-call id is an
    :func:`opaque_call_id` key (a call and the result answering it keep one id)."""
    out: list[BaseMessage] = []
    for message in messages:
        update: dict[str, Any] = {}
        if message.name and not isinstance(message, ToolMessage):
            update["name"] = None
        dropped = ("name", "function_call") if isinstance(message, AIMessage) else ("name",)
        if any(key in message.additional_kwargs for key in dropped):
            update["additional_kwargs"] = {k: v for k, v in message.additional_kwargs.items() if k not in dropped}
        if isinstance(message, ToolMessage):
            update["tool_call_id"] = opaque_call_id(str(message.tool_call_id or ""))
        if isinstance(message, AIMessage):
            update["tool_calls"] = [_opaque_id(c) for c in message.tool_calls]
            update["invalid_tool_calls"] = [_opaque_id(c) for c in message.invalid_tool_calls]
            kwargs = update.get("additional_kwargs", message.additional_kwargs)
            if isinstance(kwargs.get("tool_calls"), list):
                update["additional_kwargs"] = {**kwargs, "tool_calls": [_opaque_id(c) for c in kwargs["tool_calls"]]}
            if isinstance(message.content, list):
                update["content"] = [
                    _opaque_id(b) if isinstance(b, Mapping) and b.get("type") in _CALL_BLOCKS else b
                    for b in message.content
                ]
        out.append(message.model_copy(update=update) if update else message)
    return out


def _opaque_id(call: Any) -> Any:
    """A tool call (or call block) with its id as an :func:`opaque_call_id` key (anything else unchanged)."""
    if not isinstance(call, Mapping) or "id" not in call:
        return call
    return {**call, "id": opaque_call_id(str(call["id"] or ""))}


def _calls_with_arguments(message: AIMessage) -> list[tuple[Mapping[str, Any], str]]:
    """Each tool call of ``message`` (valid and invalid ones) with its arguments as JSON text."""
    valid = [(c, json.dumps(c.get("args") or {}, ensure_ascii=False)) for c in message.tool_calls]
    invalid = [(c, str(c.get("args") or "")) for c in message.invalid_tool_calls if c.get("name")]
    return valid + invalid  # type: ignore[return-value]


def to_langchain(messages: Sequence[Message]) -> list[BaseMessage]:
    """guardrails-uq Messages -> LangChain messages (tool calls and tool-call ids as :func:`to_core` kept them)."""
    kinds = {"system": SystemMessage, "user": HumanMessage}
    out: list[BaseMessage] = []
    for message in messages:
        if message.role == "tool":
            out.append(
                ToolMessage(
                    content=message.content, tool_call_id=message.tool_call_id or "guardrails", name=message.name
                )
            )
        elif message.role == "assistant":
            calls = [
                {"name": c.function.name, "args": _arguments(c.function.arguments), "id": c.id, "type": "tool_call"}
                for c in message.tool_calls or ()
            ]
            out.append(AIMessage(content=message.content, tool_calls=calls))
        else:
            out.append(kinds[message.role](content=message.content))
    return out


def _arguments(text: str) -> dict[str, Any]:
    """A tool call's arguments as LangChain holds them (a dict; text that is not a JSON object under "input")."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"input": text}
    return value if isinstance(value, dict) else {"input": value}


def tokens_of(message: Any) -> list[TokenLogprob] | None:
    """Token logprobs a LangChain message (or chunk) carries in response_metadata["logprobs"], if any."""
    metadata = getattr(message, "response_metadata", None) or {}
    return from_langchain(metadata)


def tool_calls_text(message: Any) -> str:
    """The tool calls an AI message makes, as each tool reads them (:func:`guardrails_uq.jsonsafe.tool_call_text`:
    the name, then every key and decoded string of the arguments, one a line); "" when there are none."""
    calls = [*(getattr(message, "tool_calls", None) or []), *(getattr(message, "invalid_tool_calls", None) or [])]
    return "\n".join(tool_call_text(str(call.get("name") or ""), call.get("args") or {}) for call in calls)


def generation_of(message: Any) -> Generation:
    """A guardrails-uq Generation from a LangChain AI message (or a tool result that is the answer): every text
    a client reads in it (:func:`checked_text`; InputError for a block the guard cannot read) plus, when it
    calls tools, each call as the tool reads it. Token logprobs describe the answer text; with tool calls they
    cover only part of what is checked, so they are left out."""
    text = checked_text(message)
    calls = tool_calls_text(message)
    if calls:
        return Generation(text=f"{text}\n{calls}" if text else calls, kind="tool_call", content=text or None)
    return Generation(text=text, tokens=tokens_of(message))


def checked_message(message: AIMessage, decision: Decision) -> AIMessage:
    """An allowed AI message rebuilt from the fields the output phase read (content blocks, tool calls,
    reasoning and refusals beside the content) plus ids, usage and response metadata with the Decision
    (``decision_metadata``); any other ``additional_kwargs`` a provider sent are left out, unread."""
    extra = message.additional_kwargs or {}
    return AIMessage(
        content=message.content,
        tool_calls=message.tool_calls,
        invalid_tool_calls=message.invalid_tool_calls,
        additional_kwargs={key: extra[key] for key in _BESIDE if key in extra},
        response_metadata={**(message.response_metadata or {}), **decision_metadata(decision)},
        usage_metadata=message.usage_metadata,
        id=message.id,
        name=message.name,
    )


def user_text(messages: Sequence[Any]) -> str:
    """The text of the last user (human) message, "" when there is none."""
    for message in reversed(messages):
        role = message.role if isinstance(message, ChatMessage) else getattr(message, "type", None)
        if role in ("human", "user"):
            return text_of(message)
    return ""


def guideline_block(decision: Decision | None) -> str | None:
    """The guideline block an input-phase Decision injected into its prompt (None when it injected none)."""
    for message in (decision.messages or []) if decision is not None else []:
        if message.role == "system" and GUIDELINES_HEADER in message.content:
            return message.content[message.content.index(GUIDELINES_HEADER) :]
    return None


def with_guidelines(system: str | None, block: str | None) -> str | None:
    """A system prompt with the guideline block appended (as the input phase renders it)."""
    if not block or (system and block in system):
        return system
    return f"{system}\n\n{block}" if system and system.strip() else block
