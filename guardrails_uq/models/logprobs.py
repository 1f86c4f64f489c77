"""Token logprobs from every place they arrive, into :class:`~guardrails_uq.call.TokenLogprob` lists.

Formats understood:
* OpenAI chat completions: ``choice["logprobs"] = {"content": [{"token", "logprob", "top_logprobs": [...]}]}``
* OpenAI (legacy) completions: ``{"tokens": [...], "token_logprobs": [...], "top_logprobs": [{tok: lp}, ...]}``
* LangChain: ``AIMessage.response_metadata["logprobs"]`` or ``generation_info["logprobs"]`` (the chat format)
* LlamaIndex: ``ChatResponse.logprobs``: a list (per token) of lists of objects with ``token`` and ``logprob``
  (the first is the chosen token, the rest its alternatives)

Every parser returns None when the source carries no logprobs, so a check can report
``uncertainty.available = false`` instead of guessing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter

from ..call import TokenLogprob, TopLogprob
from ..errors import InputError


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: logprob must be a number, got {value!r}", source="logprobs")
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float: no logprob is
        raise InputError(f"{where}: logprob {str(value)[:20]}... is out of range", source="logprobs") from None
    if math.isnan(number):
        raise InputError(f"{where}: logprob must be a number, got {value!r}", source="logprobs")
    return number


def _chat_number(value: Any, index: int, field: str = "") -> float:
    """:func:`_number` for ``content[index]{field}``; a plain float (every value, nearly always) passes without
    the message being built (this runs once per token and alternative)."""
    if type(value) is float and value == value:  # not NaN
        return value
    return _number(value, f"content[{index}]{field}")


#: Validates a whole answer's tokens in one call (one model construction per token would cost more than parsing).
_TOKENS = TypeAdapter(list[TokenLogprob])


def from_openai_chat(logprobs: Mapping[str, Any] | None) -> list[TokenLogprob] | None:
    """Parse a chat-completions ``choice["logprobs"]`` object."""
    if not logprobs:
        return None
    content = logprobs.get("content")
    if content is None:
        return None
    tokens: list[dict[str, Any]] = []
    for i, item in enumerate(content):
        if not isinstance(item, Mapping) or "token" not in item or "logprob" not in item:
            raise InputError(f"logprobs.content[{i}] needs 'token' and 'logprob'", source="logprobs")
        top = [
            {"token": str(alt["token"]), "logprob": _chat_number(alt["logprob"], i, ".top_logprobs")}
            for alt in item.get("top_logprobs") or []
        ]
        tokens.append({"token": str(item["token"]), "logprob": _chat_number(item["logprob"], i), "top": top})
    return _TOKENS.validate_python(tokens)


def from_openai_completions(logprobs: Mapping[str, Any] | None) -> list[TokenLogprob] | None:
    """Parse a legacy completions ``choice["logprobs"]`` object."""
    if not logprobs or logprobs.get("tokens") is None:
        return None
    tokens, values = logprobs["tokens"], logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    if len(values) != len(tokens):
        raise InputError("logprobs.tokens and token_logprobs differ in length", source="logprobs")
    out = []
    for i, (token, value, top) in enumerate(zip(tokens, values, tops, strict=False)):
        if value is None:  # the first token of an echoed prompt has no logprob
            continue
        alternatives = [
            TopLogprob(token=str(t), logprob=_number(lp, f"top_logprobs[{i}]")) for t, lp in (top or {}).items()
        ]
        out.append(TokenLogprob(token=str(token), logprob=_number(value, f"token_logprobs[{i}]"), top=alternatives))
    return out


def from_langchain(metadata: Mapping[str, Any] | None) -> list[TokenLogprob] | None:
    """Parse LangChain's ``response_metadata`` / ``generation_info`` (both hold ``"logprobs"``)."""
    if not metadata:
        return None
    return from_openai_chat(metadata.get("logprobs"))


def from_llamaindex(logprobs: Sequence[Sequence[Any]] | None) -> list[TokenLogprob] | None:
    """Parse LlamaIndex's ``ChatResponse.logprobs`` (objects or dicts with token and logprob)."""
    if not logprobs:
        return None

    def get(obj: Any, name: str) -> Any:
        return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)

    out = []
    for i, position in enumerate(logprobs):
        if not position:
            raise InputError(f"logprobs[{i}] is empty", source="logprobs")
        chosen, *alternatives = position
        out.append(
            TokenLogprob(
                token=str(get(chosen, "token")),
                logprob=_number(get(chosen, "logprob"), f"logprobs[{i}]"),
                top=[
                    TopLogprob(token=str(get(a, "token")), logprob=_number(get(a, "logprob"), f"logprobs[{i}]"))
                    for a in alternatives
                ],
            )
        )
    return out
