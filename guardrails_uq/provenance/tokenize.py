"""The provenance tokenizer: lowercased word and punctuation tokens, regex ``\\w+|[^\\w\\s]``."""

from __future__ import annotations

import re

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
#: Recorded in every index manifest; an index made with another tokenizer is refused.
TOKENIZER_NAME = r"regex:\w+|[^\w\s]:lower"


def tokenize(text: str) -> list[str]:
    """Lowercased word and punctuation tokens of ``text``."""
    return TOKEN_PATTERN.findall(text.lower())


def tokenize_with_offsets(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Tokens and their (start, end) character offsets in ``text`` (for highlighting spans)."""
    tokens: list[str] = []
    offsets: list[tuple[int, int]] = []
    for match in TOKEN_PATTERN.finditer(text):
        tokens.append(match.group().lower())
        offsets.append(match.span())
    return tokens, offsets
