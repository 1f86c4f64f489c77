"""Framework-free data a Guard reads: messages, scored documents, generations with token logprobs.

Field names are stable: they are part of the audit log's format.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_serializer

from .jsonsafe import clean_text, tool_call_text
from .types import SignalMap

#: Text from outside (users, models, retrievers). Lone surrogates (which JSON escapes can carry but UTF-8
#: cannot encode) become U+FFFD on the way in, so every Decision and log record holding it stays writable.
Text = Annotated[str, AfterValidator(clean_text)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_CALL_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


def _call_id(value: str) -> str:
    if not _CALL_ID.fullmatch(value):
        raise ValueError("a tool-call id is 1 to 64 letters, digits, '_', '-', '.' or ':'")
    return value


#: A tool-call id: a key tying a tool result to its call, never read as text, so it may carry none
#: (no spaces, at most 64 characters).
CallId = Annotated[str, AfterValidator(_call_id)]


def opaque_call_id(raw: str) -> str:
    """A :data:`CallId` standing for any id a client or framework gave (a hash of it: the same id maps to the
    same key, so calls and their results stay paired), so no text written in an id reaches the model."""
    return "call_" + hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()


class FunctionCall(_Data):
    """The function a tool call names and its arguments, as the model wrote them (JSON text)."""

    name: Text = Field(min_length=1, max_length=128)
    arguments: Text


class MessageToolCall(_Data):
    """A tool call of an earlier assistant turn, in the OpenAI chat format (so a dumped Message is a valid
    message of that format)."""

    id: CallId
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Data):
    """One chat message. An assistant turn may carry the ``tool_calls`` it made; a tool message names the call
    it answers (``tool_call_id``) and optionally the tool (``name``). Those fields are omitted from a dump when
    unset, so a plain message dumps as ``{role, content}``. :attr:`read_text` is everything the model reads."""

    role: Literal["system", "user", "assistant", "tool"]
    content: Text
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: CallId | None = None
    name: Text | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("tool_calls")
    @classmethod
    def _only_assistants_call(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("role") != "assistant":
            raise ValueError("only an assistant message calls tools")
        return value

    @field_validator("tool_call_id", "name")
    @classmethod
    def _only_tools_answer(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("role") != "tool":
            raise ValueError("only a tool message answers a tool call")
        return value

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None or k in ("role", "content")}

    @property
    def read_text(self) -> str:
        """What the model reads in this message: the content, a tool message's tool name, and each tool call as
        its tool reads it (:func:`~guardrails_uq.jsonsafe.tool_call_text`: name, keys and decoded strings of the
        arguments), one piece a line. Ids are keys, not text (:data:`CallId`)."""
        calls = [tool_call_text(c.function.name, c.function.arguments) for c in self.tool_calls or ()]
        return "\n".join(p for p in [self.name or "", self.content, *calls] if p)


class ScoredDocument(_Data):
    """A retrieved chunk with the retriever's score (higher = more similar unless the retriever says otherwise)."""

    id: Text
    text: Text = ""
    score: float
    metadata: dict[str, object] = Field(default_factory=dict)


class TopLogprob(_Data):
    """One alternative token considered at a position."""

    token: Text
    logprob: float


class TokenLogprob(_Data):
    """A generated token, its log-probability, and the top alternatives at its position."""

    token: Text
    logprob: float
    top: list[TopLogprob] = Field(default_factory=list)


class Generation(_Data):
    """What the app's model produced: text, optional per-token logprobs, optional extra samples.

    ``kind`` says what the output is: ``"answer"`` (text for the user) or ``"tool_call"`` (an agent step that
    calls tools: its text holds the calls; it carries no logprobs). The output phase publishes it as the
    signal ``output.kind``, so rules can apply to answers only (uncertainty rules) or to tool calls only.
    ``content``: in a tool-calling step, the text beside the calls that the user reads (grounding reads it: an
    answer with a call attached is still an answer to ground); None when there is none or for an answer."""

    text: Text
    tokens: list[TokenLogprob] | None = None
    samples: list[Text] = Field(default_factory=list)
    model: str | None = None
    kind: Literal["answer", "tool_call"] = "answer"
    content: Text | None = None


class ToolCall(_Data):
    """A tool call the model made, before the tool runs: the tool's name and its arguments as the model sent
    them (decoded JSON, or JSON text; the tool phase decodes and checks them)."""

    name: Text
    arguments: dict[str, Any] | Text = Field(default_factory=dict)
    id: Text | None = None


class Call(_Data):
    """Everything a Guard may look at for one request. Every field is optional; phases read what they need.

    ``signals`` carries values the app measured itself (flat dotted names declared in the policy's
    ``signals`` section); they reach the rules unchanged.
    """

    messages: list[Message] = Field(default_factory=list)
    query: Text | None = None
    documents: list[ScoredDocument] | None = None
    generation: Generation | None = None
    tool: ToolCall | None = None
    signals: SignalMap = Field(default_factory=dict)
    metadata: dict[str, object] = Field(default_factory=dict)

    @property
    def user_input(self) -> str:
        """The last user message, or the query when there are no messages."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return self.query or ""
