"""Strict JSON for everything guardrails-uq writes (responses, stream events, audit records).

Python's ``json`` writes ``NaN``, ``Infinity`` and ``-Infinity``, which are not JSON (RFC 8259) and break
strict clients (a browser's ``JSON.parse``, Go, ``jq``); and text holding lone surrogates (``"\\ud800"``,
which a hostile client or model can send as a JSON escape) cannot be encoded as UTF-8 at all. Both come
from untrusted input, so they are made safe at the boundary instead of raising:

* a non-finite float becomes ``null`` (the value is unknown; evidence records why elsewhere);
* a lone surrogate becomes U+FFFD, the replacement character.

Reading goes the other way: JSON text hides what its reader sees (``\\n`` glues a line break to the next
word, ``\\u0420`` spells a letter), so checks read decoded JSON as its strings (:func:`json_strings`); a
tool call is read as its name and the decoded strings of its arguments (:func:`tool_call_text`), by the
proxy and every integration alike.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (ASCII text, which cannot hold one, is not scanned)."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def sanitize(value: Any) -> Any:
    """A copy of ``value`` (JSON-like: dict, list, tuple, str, numbers, bool, None) that strict JSON can
    encode: non-finite floats -> None, lone surrogates -> U+FFFD, dict keys made strings."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {clean_text(str(k)): sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``value`` (see :func:`sanitize`); never NaN, infinities or lone surrogates."""
    return dumpb(value, **kwargs).decode("utf-8")


def dumpb(value: Any, **kwargs: Any) -> bytes:
    """:func:`dumps` as UTF-8 bytes, encoded once: the plain encoder first (the common, clean case costs
    nothing extra; encoding to UTF-8 is what proves the text holds no lone surrogate), else the sanitized copy."""
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False, **kwargs).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return json.dumps(sanitize(value), allow_nan=False, ensure_ascii=False, **kwargs).encode("utf-8")


def json_strings(value: Any, *, keys: bool = True) -> list[str]:
    """Every string a reader of ``value`` (decoded JSON: dict, list, str, numbers, bool, None) sees, in order:
    each key (unless ``keys`` is False), then its value's strings; list items in order. Numbers, booleans and
    None spell no text; any other object counts as its ``str()`` (what a tool that formats it would show)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        texts: list[str] = []
        for k, v in value.items():
            texts += [str(k), *json_strings(v, keys=keys)] if keys else json_strings(v, keys=keys)
        return texts
    if isinstance(value, list | tuple):
        return [text for v in value for text in json_strings(v, keys=keys)]
    if value is None or isinstance(value, bool | int | float):
        return []
    return [str(value)]


#: Words of the tool and JSON Schema formats themselves, left out of :func:`definitions_text` (no request).
_FORMAT_WORDS = frozenset({"function", "object", "string", "json_schema"})


def definitions_text(values: Iterable[Any]) -> str:
    """What a model reads in tool definitions or a response schema (OpenAI format: names, descriptions,
    parameter schemas), one piece a line: every string of ``values`` but the formats' own type words. The
    input phase reads it beside the messages (the proxy for a request's ``tools``, GuardedLLM for an agent's)."""
    pieces = [piece for value in values for piece in json_strings(value)]
    return clean_text("\n".join(p for p in pieces if p not in _FORMAT_WORDS))


def tool_call_text(name: str, arguments: Any) -> str:
    """The text of a tool call as its readers read it, one piece a line: ``name``, every key and string of the
    arguments in order (a client reading the JSON), then, when keys sit between string values, the values
    alone in order (a tool that joins its fields: a passage split over ``subject`` and ``body`` reads as
    one). ``arguments`` is decoded JSON, or JSON text (decoded here: escapes such as ``\\n`` and
    ``\\u0420`` resolved); text that is not JSON is read as it is."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            return "\n".join([name, arguments])
    pieces = json_strings(arguments)
    values = json_strings(arguments, keys=False)
    joined = values if len(values) > 1 and "\n".join(values) not in "\n".join(pieces) else []
    return "\n".join([name, *pieces, *joined])


# -- reading text as a JSON parser would show it -------------------------------------------------------------

#: A JSON string escape (RFC 8259 section 7): ``\\"``, ``\\\\``, ``\\/``, ``\\b``, ``\\f``, ``\\n``, ``\\r``, ``\\t``, ``\\uXXXX``.
_ESCAPE = re.compile(r'\\(["\\/bfnrt]|u[0-9a-fA-F]{4})')
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
#: Levels of JSON-inside-a-JSON-string decoded by :func:`reader_texts` (a client may parse that often).
MAX_DECODE_DEPTH = 3
#: Longest escape text that can still be incomplete at the end of a streamed chunk (``\\ud83d\\ude0``).
_PARTIAL = re.compile(r"(\\u[dD][89abAB][0-9a-fA-F]{2}(\\(u[0-9a-fA-F]{0,3})?)?|\\(u[0-9a-fA-F]{0,3})?)$")


def decode_escapes(text: str) -> str:
    """``text`` with every JSON string escape decoded, left to right as a parser reads them (``\\\\n`` is a
    backslash and ``n``); surrogate pairs joined, lone surrogates become U+FFFD. Other backslashes stay.
    Linear in the length of ``text``."""
    if "\\" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        return _SIMPLE[code] if len(code) == 1 else chr(int(code[1:], 16))

    decoded = _ESCAPE.sub(one, text)
    if decoded.isascii():
        return decoded
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def reader_texts(text: str) -> list[str]:
    """The forms of ``text`` a reader can be shown: the text itself, then, when it holds JSON string
    escapes, the text with them decoded (what a client's JSON parser restores in every string of a JSON
    answer, a JSON block inside prose, or tool-call arguments), and again for JSON nested in JSON strings,
    up to ``MAX_DECODE_DEPTH`` levels. A check that reads every form cannot be blinded by escapes such as
    ``\\n`` fusing two words or ``\\u0441`` spelling a letter. Linear in the length of ``text``."""
    forms = [text]
    while len(forms) <= MAX_DECODE_DEPTH and "\\" in forms[-1]:
        decoded = decode_escapes(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    return forms


class EscapeDecoder:
    """:func:`decode_escapes` over a text that arrives in chunks (a stream): ``feed`` returns the decoded
    text that is settled so far, holding back an escape the next chunk may complete; ``flush`` the rest."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, chunk: str) -> str:
        text = self._pending + chunk
        # an escape split by the chunk boundary waits; a backslash run of even length is complete
        tail = _PARTIAL.search(text)
        cut = tail.start() if tail is not None and _odd_backslashes_before(text, tail.start() + 1) else len(text)
        self._pending = text[cut:]
        return decode_escapes(text[:cut])

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return decode_escapes(text)


def _odd_backslashes_before(text: str, end: int) -> bool:
    """True when the run of backslashes ending at ``end`` (exclusive) is odd: its last one starts an escape."""
    start = end
    while start > 0 and text[start - 1] == "\\":
        start -= 1
    return (end - start) % 2 == 1
