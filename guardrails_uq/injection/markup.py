"""Hidden channels of a tool result, decoded as a model would read them.

A model reads a tool result's raw characters: markup, comments, attributes, escapes and encodings included.
A person looking at the rendered page or e-mail does not. :func:`reveal` turns one text into the *pieces*
the injection detector scores, each with the channel it came from and its [start, end) in the original:

* ``text``: the text itself (for HTML, its rendered text with the markup taken out);
* ``html-comment``, ``hidden-element`` (``display:none``, ``visibility:hidden``, ``font-size:0``,
  ``opacity:0``, ``hidden``, ``aria-hidden``, ``<template>``, ``<noscript>``...), ``attribute`` (``alt``,
  ``title``, ``aria-label``, ``placeholder``, ``content``, ``data-*`` values of two words or more);
* ``markdown-title`` (``[x](url "title")``) and ``markdown-comment`` (``[//]: # (text)``);
* ``json-string``: every string literal of a JSON text, escapes (``\\u0049gnore``) decoded;
* ``base64``: runs of 16+ base64 (or base64url) characters that decode to readable UTF-8 text (twice
  nested at most);
* ``unicode-tags``: runs of Unicode tag characters (U+E0020..U+E007E spell ASCII invisibly; an emoji
  subdivision flag decodes to a few letters such as ``gbsct``).

Look-alike letters from other scripts are folded later, when the pieces are normalised
(:func:`guardrails_uq.textnorm.normalize` with ``fold_confusables=True``); invisible format characters are
removed there. What is not decoded (any other encoding: rot13, hex, URL escapes, images) is read as it stands.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Final

from ..textnorm import BASE64_RUN, TAG_RUN, base64_bytes, spell_tags

#: The channels :func:`reveal` reports; all but ``text`` are hidden from a person reading the rendered text.
CHANNELS: Final = (
    "text",
    "html-comment",
    "hidden-element",
    "attribute",
    "markdown-title",
    "markdown-comment",
    "json-string",
    "base64",
    "unicode-tags",
)
HIDDEN: Final = frozenset(CHANNELS[1:]) - {"json-string"}

_JSON_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_MD_TITLE = re.compile(r"\]\([^)\s]*\s+(\"([^\"]{3,})\"|'([^']{3,})')\s*\)")
_MD_COMMENT = re.compile(r"^\s*\[//\]:\s*#\s*\((.+)\)\s*$", re.MULTILINE)
_HTML_HINT = re.compile(r"<(?:!--|[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>)")
_HIDDEN_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?![.\d]*[1-9])|opacity\s*:\s*0(?![.\d]*[1-9])"
    r"|(?:max-)?height\s*:\s*0(?![.\d]*[1-9])|left\s*:\s*-\d{3,}|color\s*:\s*(?:#fff(?:fff)?|white|transparent)\b",
    re.IGNORECASE,
)
_HIDDEN_TAGS: Final = frozenset({"template", "noscript", "script", "style"})
_VOID: Final = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
)
_TEXT_ATTRIBUTES: Final = frozenset({"alt", "title", "aria-label", "placeholder", "content", "summary", "label"})
_BLOCK: Final = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article"})
MAX_BASE64_DEPTH: Final = 2


@dataclass(frozen=True)
class Piece:
    """Text the model reads in one channel of a tool result, and where it is in the original ([start, end))."""

    text: str
    channel: str
    start: int
    end: int

    @property
    def hidden(self) -> bool:
        """True for a channel a person reading the rendered text does not see."""
        return self.channel in HIDDEN


def reveal(text: str) -> list[Piece]:
    """Every piece of ``text`` a model reads, the text itself first (see the module docstring)."""
    pieces: list[Piece] = []
    html = _HTML_HINT.search(text) is not None
    if html:
        pieces.extend(_html_pieces(text))
    else:
        pieces.append(Piece(text, "text", 0, len(text)))
    pieces.extend(_markdown_pieces(text))
    pieces.extend(_json_pieces(text))
    pieces.extend(_tag_pieces(text))
    for piece in list(pieces):
        pieces.extend(_base64_pieces(piece.text, piece.start, piece.end, 1))
    return [p for p in pieces if p.text.strip()]


def _tag_pieces(text: str) -> list[Piece]:
    return [Piece(spell_tags(m.group()), "unicode-tags", m.start(), m.end()) for m in TAG_RUN.finditer(text)]


def _readable(data: bytes) -> str | None:
    """``data`` as text when it is UTF-8 that reads as words (mostly printable, some letters and spaces)."""
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(decoded) < 8:
        return None
    printable = sum(c.isprintable() or c in "\n\t" for c in decoded)
    letters = sum(c.isalpha() for c in decoded)
    if printable < 0.95 * len(decoded) or letters < 0.5 * len(decoded) or " " not in decoded.strip():
        return None
    return decoded


def _base64_pieces(text: str, start: int, end: int, depth: int) -> list[Piece]:
    """Readable text hidden as base64 inside ``text`` (offsets: the enclosing piece's when nested/decoded)."""
    out: list[Piece] = []
    direct = end - start == len(text)  # the piece's characters are the original's: exact offsets
    for match in BASE64_RUN.finditer(text):
        data = base64_bytes(match.group())
        decoded = None if data is None else _readable(data)
        if decoded is None:
            continue
        a, b = (start + match.start(), start + match.end()) if direct else (start, end)
        out.append(Piece(decoded, "base64", a, b))
        if depth < MAX_BASE64_DEPTH:
            out.extend(_base64_pieces(decoded, a, b, depth + 1))
    return out


def _json_pieces(text: str) -> list[Piece]:
    """Each JSON string literal whose decoded value differs from its raw characters (escapes), or all of them
    when ``text`` is a JSON document (so a long field is scored on its own, not only inside the whole text)."""
    stripped = text.lstrip()
    document = stripped[:1] in ("{", "[")
    out = []
    for match in _JSON_STRING.finditer(text):
        literal = match.group()
        if not document and "\\" not in literal:
            continue
        try:
            value = json.loads(literal)
        except ValueError:
            continue
        if isinstance(value, str) and len(value.split()) >= 3 and (document or value != literal[1:-1]):
            out.append(Piece(value, "json-string", match.start(), match.end()))
    return out


def _markdown_pieces(text: str) -> list[Piece]:
    out = []
    for match in _MD_TITLE.finditer(text):
        group = 2 if match.group(2) is not None else 3
        out.append(Piece(match.group(group), "markdown-title", match.start(group), match.end(group)))
    for match in _MD_COMMENT.finditer(text):
        out.append(Piece(match.group(1), "markdown-comment", match.start(1), match.end(1)))
    return out


def _html_pieces(text: str) -> list[Piece]:
    parser = _Html(text)
    try:
        parser.feed(text)
        parser.close()
    except AssertionError:  # html.parser's own asserts on badly broken markup: read the raw text instead
        return [Piece(text, "text", 0, len(text))]
    visible = "".join(parser.visible).strip()
    pieces = [Piece(visible or text, "text", 0, len(text))]
    pieces.extend(parser.pieces)
    return pieces


class _Html(HTMLParser):
    """Collects the rendered text, and hidden text, comments and text attributes with their offsets."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.source = source
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", source)]
        self.stack: list[tuple[str, bool]] = []  # (tag, hidden)
        self.visible: list[str] = []
        self.pieces: list[Piece] = []

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.line_starts[line - 1] + column

    @property
    def _hidden(self) -> bool:
        return bool(self.stack) and self.stack[-1][1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        start = self._offset()
        values = {k.lower(): v or "" for k, v in attrs}
        hidden = (
            self._hidden
            or tag in _HIDDEN_TAGS
            or "hidden" in values
            or values.get("aria-hidden", "").lower() == "true"
            or _HIDDEN_STYLE.search(values.get("style", "")) is not None
        )
        for name, value in values.items():
            if (name in _TEXT_ATTRIBUTES or name.startswith("data-")) and len(value.split()) >= 2:
                end = start + len(self.get_starttag_text() or "")
                self.pieces.append(Piece(value, "attribute", start, end))
        if tag in _BLOCK:
            self.visible.append("\n")
        if tag not in _VOID:
            self.stack.append((tag, hidden))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break
        if tag in _BLOCK:
            self.visible.append("\n")

    def handle_data(self, data: str) -> None:
        if not data.strip():
            self.visible.append(data)
            return
        if self._hidden:
            start = self._offset()
            self.pieces.append(Piece(data.strip(), "hidden-element", start, start + len(data)))
        else:
            self.visible.append(data)

    def handle_comment(self, data: str) -> None:
        start = self._offset()
        self.pieces.append(Piece(data.strip(), "html-comment", start, start + len(data) + 7))
