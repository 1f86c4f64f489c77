"""The proxy's retrieval phase: documents a client sends in the ``guardrails`` extension field, and the
``tool`` messages of the conversation (tool results the model will read).

The extension field (the OpenAI SDK sends it with ``extra_body``; it is never forwarded upstream)::

    "guardrails": {"documents": [{"id": "kb-12", "text": "...", "score": 0.71}, ...]}

``id`` (a citation key, :data:`DOCUMENT_ID`: unique, not starting with ``message:``, the prefix of tool
messages' ids) and ``text`` (string) are required; ``score`` (a finite number: the app's
retriever's similarity, higher = closer) is optional and given for every document or for none; without it the
proxy scores each document against the request with the Guard's embedder (cosine similarity: the retriever the
default ``retrieval.fingerprint`` names). Anything else is a 400 naming the field.

What the proxy does with them, before forwarding: the retrieval phase (conformal filtering, the injection check,
retrieval rules such as "not in the knowledge base") runs on the documents and on every ``tool`` message
(``message:<index>``, scored the same way), as the agent middleware does with tool results. A blocking Decision
answers the request without calling the upstream. Otherwise the documents the phase kept are put into the
prompt as one system message before the last user turn (:func:`render_documents`; clients do not write them
into the messages themselves) after the input phase has read that message too (as it reads every message), a
tool message the phase dropped is replaced by :data:`WITHHELD`, and the output phase grounds the answer on the
kept documents.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..call import Message, ScoredDocument
from ..decision import Decision
from ..evidence_scores import WITHHELD, cosine_scores, scores_read
from ..guard import Guard
from ..jsonsafe import clean_text
from .limits import RequestRefused

#: The request field that carries the extension (never forwarded upstream).
FIELD = "guardrails"
#: Most documents one request may carry.
MAX_DOCUMENTS = 256
#: What the model reads instead of a tool result the retrieval phase dropped.
#: Heading of the system message the kept documents are rendered into.
HEADING = "Answer from these documents only; each begins with its id in brackets."

_DOC_KEYS = {"id", "text", "score"}
#: A client document's id: a citation key (letters, digits and the characters a URL may hold; no blanks or
#: brackets; at most 128). The model reads it (``[id] text``) but the checks read the text alone, so an id
#: cannot hold a sentence (an order written as the id of a benign document reached the model unread).
DOCUMENT_ID = re.compile(r"[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]{1,128}")
#: The prefix of the tool messages' ids in the retrieval phase (:func:`tool_ids`): refused in client ids, so a
#: client document can never stand for a tool message (a kept ``message:2`` document forwarded the dropped tool
#: message 2).
TOOL_ID_PREFIX = "message:"


@dataclass(frozen=True)
class Extension:
    """The validated ``guardrails`` field: the documents (None when the client sent none)."""

    documents: tuple[ScoredDocument, ...] | None = None
    scored: bool = False  # the client gave every document a score


def _refuse(where: str, problem: str) -> RequestRefused:
    return RequestRefused(400, f"invalid request: '{where}' {problem} (see README: documents through the proxy)")


def parse_extension(body: Mapping[str, Any]) -> Extension:
    """The ``guardrails`` field of a request body; RequestRefused(400) naming the field at fault."""
    if FIELD not in body:
        return Extension()
    value = body[FIELD]
    if not isinstance(value, Mapping):
        raise _refuse(FIELD, 'must be an object such as {"documents": [{"id": "kb-1", "text": "..."}]}')
    unknown = sorted(str(k) for k in value if k != "documents")
    if unknown:
        raise _refuse(f"{FIELD}.{unknown[0][:40]}", "is not a known field (known: documents)")
    raw = value.get("documents")
    if raw is None:
        return Extension()
    if not isinstance(raw, list):
        raise _refuse(f"{FIELD}.documents", "must be a list of {id, text, score?} objects")
    if len(raw) > MAX_DOCUMENTS:
        raise _refuse(f"{FIELD}.documents", f"holds {len(raw)} documents, more than {MAX_DOCUMENTS}")
    documents, ids, with_score = [], set(), 0
    for i, item in enumerate(raw):
        where = f"{FIELD}.documents[{i}]"
        if not isinstance(item, Mapping):
            raise _refuse(where, "must be an object with id, text and optionally score")
        extra = sorted(str(k) for k in item if k not in _DOC_KEYS)
        if extra:
            raise _refuse(f"{where}.{extra[0][:40]}", "is not a known field (known: id, text, score)")
        doc_id, text, score = item.get("id"), item.get("text"), item.get("score")
        if not isinstance(doc_id, str) or not DOCUMENT_ID.fullmatch(doc_id):
            raise _refuse(
                f"{where}.id",
                "must be a citation key: 1 to 128 letters, digits or URL characters, no blanks or brackets "
                "(the model reads it beside the text; percent-encode anything else)",
            )
        if doc_id.startswith(TOOL_ID_PREFIX):
            raise _refuse(f"{where}.id", f"starts with {TOOL_ID_PREFIX!r}, the prefix of tool messages' ids; rename it")
        if doc_id in ids:
            raise _refuse(f"{where}.id", f"repeats the id {doc_id[:40]!r}; ids must be unique")
        if not isinstance(text, str):
            raise _refuse(f"{where}.text", "must be a string")
        if score is not None:
            if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
                raise _refuse(f"{where}.score", "must be a finite number (the retriever's similarity)")
            with_score += 1
        ids.add(doc_id)
        documents.append((doc_id, clean_text(text), None if score is None else float(score)))
    if 0 < with_score < len(documents):
        raise _refuse(f"{FIELD}.documents", "gives a score for some documents only: give it for all or none")
    return Extension(
        documents=tuple(ScoredDocument(id=d, text=t, score=s or 0.0) for d, t, s in documents),
        scored=bool(documents) and with_score == len(documents),
    )


def similarities(guard: Guard, query: str, texts: Sequence[str]) -> list[float]:
    """Each text's score against the query with the Guard's embedder (:func:`~..evidence_scores.cosine_scores`),
    or 0.0 when the policy has no conformal check (nothing reads the scores)."""
    if not scores_read(guard):
        return [0.0] * len(texts)
    return cosine_scores(guard.embedder, query, texts)


def retrieval_documents(guard: Guard, extension: Extension, messages: Sequence[Message], query: str) -> list[
    ScoredDocument
] | None:  # fmt: skip
    """The documents of the proxy's retrieval phase: the client's (scored by the Guard's embedder unless the
    client scored them) and every tool message (``message:<index>``); None when there are neither."""
    tools = [(i, m.content) for i, m in enumerate(messages) if m.role == "tool"]
    if extension.documents is None and not tools:
        return None
    given = list(extension.documents or ())
    unscored = [d.text for d in given] if not extension.scored else []
    scores = similarities(guard, query, unscored + [text for _, text in tools])
    out = [d.model_copy(update={"score": scores[i]}) for i, d in enumerate(given)] if unscored else given
    offset = len(unscored)
    out += [
        ScoredDocument(id=f"{TOOL_ID_PREFIX}{i}", text=text, score=scores[offset + n], metadata={"role": "tool"})
        for n, (i, text) in enumerate(tools)
    ]
    return out


def render_documents(documents: Sequence[ScoredDocument]) -> str:
    """The system message the kept client documents are given to the model in."""
    return "\n\n".join([HEADING, *(f"[{d.id}] {d.text}" for d in documents)])


def tool_ids(messages: Sequence[Message]) -> list[str]:
    """The retrieval-phase ids of the tool messages (``message:<index in the client's messages>``), in order."""
    return [f"{TOOL_ID_PREFIX}{i}" for i, m in enumerate(messages) if m.role == "tool"]


def prompt_with_documents(
    prompt: Sequence[Message], retrieval: Decision, client_ids: set[str], tools: Sequence[str]
) -> list[Message]:
    """The prompt to forward after the retrieval phase: each tool message the phase dropped replaced by
    :data:`WITHHELD` (``tools``: the ids of the prompt's tool messages in order, from :func:`tool_ids`), and the
    kept client documents as a system message before the last user turn."""
    kept_ids = {d.id for d in retrieval.documents} if retrieval.documents is not None else set()
    out, seen = [], 0
    for message in prompt:
        if message.role == "tool":
            if seen >= len(tools) or tools[seen] not in kept_ids:
                message = message.model_copy(update={"content": WITHHELD})  # still answers its tool call
            seen += 1
        out.append(message)
    if client_ids:
        documents = [d for d in retrieval.documents or () if d.id in client_ids]
        last_user = max((i for i, m in enumerate(out) if m.role == "user"), default=len(out))
        text = render_documents(documents) if documents else f"{HEADING}\n\n(no document passed the guard's check)"
        out.insert(last_user, Message(role="system", content=text))
    return out
