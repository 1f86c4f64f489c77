"""The provenance tokenizer: normalised text (:mod:`guardrails_uq.textnorm`, with confusable folding), then
lowercased word tokens, regex ``[^\\W_]+`` (runs of letters and digits).

Punctuation, underscores and symbols separate tokens but are not tokens: markup a chat UI renders away
(``*emphasis*``, ``**bold**``, ``__bold__``, backticks, ``~~strike~~``) or punctuation inserted between the
words of a copied passage cannot break a verbatim span. (HTML tags and entities are not stripped: a ``<b>``
leaves the word token ``b``; see docs/threat-model.md.)

Index building and lookup both go through :func:`normalize` and :func:`tokens_of`, so a corpus document
and an answer that look the same produce the same tokens, whatever invisible characters, fullwidth forms,
ligatures or look-alike letters either contains. Offsets always point into the original text.
"""

from __future__ import annotations

import re

from .. import textnorm

TOKEN_PATTERN = re.compile(r"[^\W_]+")
#: Recorded in every index manifest; an index made with another tokenizer is refused.
TOKENIZER_NAME = r"regex:[^\W_]+:lower"
#: Recorded in every index manifest; an index made with another normalisation is refused.
NORMALIZATION = textnorm.scheme(fold_confusables=True)


def normalize(text: str) -> str:
    """``text`` normalised the way the provenance index stores it."""
    return textnorm.normalize(text, fold_confusables=True)


def normalize_with_map(text: str) -> textnorm.NormalizedText:
    """``text`` normalised the way the provenance index stores it, with the map back to ``text``."""
    return textnorm.normalize_with_map(text, fold_confusables=True)


def tokens_of(normalized: str) -> list[str]:
    """Lowercased tokens of already normalised text: each token is matched, then lowercased on its own
    (so a token never depends on its neighbours), in the same positions as ``TOKEN_PATTERN`` matches."""
    if normalized.isascii() or ("\u0130" not in normalized and "\u03a3" not in normalized):
        # lower() is then character by character, keeps the length and every character's \w / \s class
        # (checked over all of Unicode): the same tokens with one lower() call instead of one per token
        return TOKEN_PATTERN.findall(normalized.lower())
    return [token.lower() for token in TOKEN_PATTERN.findall(normalized)]  # İ lowers to 2 characters, Σ by context


#: bytes.translate table of the ASCII fast path: letters lowered, digits kept, every other byte a space.
_ASCII_TOKEN_BYTES = bytes(
    (c | 0x20 if chr(c).isalpha() else c) if c < 128 and chr(c).isalnum() else 0x20 for c in range(256)
)


def token_line(normalized: str) -> bytes:
    """The tokens of ``tokens_of(normalized)``, UTF-8 encoded and separated by single or repeated spaces, for
    the index build. ASCII text (the bulk of most corpora) takes one ``bytes.translate`` (about 3x faster
    than the regex): for ASCII, ``[^\\W_]`` is exactly [A-Za-z0-9] and lowering is A-Z -> a-z, so the tokens
    are the same (tested). A token never contains a byte below 0x80 other than a letter or digit."""
    if normalized.isascii():
        return normalized.encode("ascii").translate(_ASCII_TOKEN_BYTES)
    return b" ".join(token.encode("utf-8") for token in tokens_of(normalized))


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens of normalised ``text``."""
    return tokens_of(normalize(text))


def token_spans(normalized: textnorm.NormalizedText) -> list[tuple[int, int]]:
    """(start, end) in the original text of each token of ``normalized`` (aligned with :func:`tokens_of`)."""
    spans = [match.span() for match in TOKEN_PATTERN.finditer(normalized.text)]
    if normalized.text is normalized.original:  # nothing was normalised: the map is the identity
        return spans
    return [normalized.span(start, end) for start, end in spans]


def tokenize_with_offsets(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Tokens (as :func:`tokenize`) and their (start, end) character offsets in the original ``text``:
    ``text[start:end]`` is what the user saw, invisible characters inside the token included."""
    normalized = normalize_with_map(text)
    return tokens_of(normalized.text), token_spans(normalized)
