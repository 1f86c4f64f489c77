"""Framework-free data a Guard reads: messages, scored documents, generations with token logprobs.

Field names are stable: they are part of the audit log's format.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .jsonsafe import clean_text
from .types import SignalMap

#: Text from outside (users, models, retrievers). Lone surrogates (which JSON escapes can carry but UTF-8
#: cannot encode) become U+FFFD on the way in, so every Decision and log record holding it stays writable.
Text = Annotated[str, AfterValidator(clean_text)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Message(_Data):
    """One chat message."""

    role: Literal["system", "user", "assistant", "tool"]
    content: Text


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
