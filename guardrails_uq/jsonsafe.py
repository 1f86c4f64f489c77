"""Strict JSON for everything guardrails-uq writes (responses, stream events, audit records).

Python's ``json`` writes ``NaN``, ``Infinity`` and ``-Infinity``, which are not JSON (RFC 8259) and break
strict clients (a browser's ``JSON.parse``, Go, ``jq``); and text holding lone surrogates (``"\\ud800"``,
which a hostile client or model can send as a JSON escape) cannot be encoded as UTF-8 at all. Both come
from untrusted input, so they are made safe at the boundary instead of raising:

* a non-finite float becomes ``null`` (the value is unknown; evidence records why elsewhere);
* a lone surrogate becomes U+FFFD, the replacement character.
"""

from __future__ import annotations

import json
import math
import re
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
