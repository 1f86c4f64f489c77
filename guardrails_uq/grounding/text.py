"""Cutting answers into claims and evidence into sentences, with character offsets into the original text.

Sentences end where :func:`..uncertainty.claims.claim_spans` says a claim ends (one rule for the token view
and this character view): ``.``, ``!``, ``?`` or ``…`` followed by whitespace, or a line break. Offsets are
into the text as given (not normalised), so evidence points at what the user and the app saw.

A *claim* is an answer sentence with at least one content word that has a letter (:func:`.align.content_words`);
filler ("Sure!", "I hope this helps.") and list markers ("1.") are not claims. An answer too short to say anything by itself ("Yes.",
"No, it isn't.") is read together with the question it answers (decontextualisation, as claim extraction
does in the grounding literature): its ``scored`` text is the question followed by the sentence, so "No."
to "Can I export as PDF?" is scored as the negated question.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..uncertainty.claims import claim_spans
from .align import content_words

_PIECES = re.compile(r"\S+\s*|\s+")
#: Claims with fewer content words than this are read together with the question.
SHORT_CLAIM = 3


@dataclass(frozen=True)
class Span:
    """A sentence of a text: its stripped text and [start, end) offsets into the original."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Claim:
    """An answer sentence to check: where it is, and the text that is scored (with the question if short)."""

    text: str
    start: int
    end: int
    scored: str


def sentences(text: str) -> list[Span]:
    """The sentences of ``text`` in order, stripped, each with its offsets (blank text: none)."""
    pieces = _PIECES.findall(text)
    out: list[Span] = []
    offsets = [0]
    for piece in pieces:
        offsets.append(offsets[-1] + len(piece))
    for first, last in claim_spans(pieces):
        start, end = offsets[first], offsets[last]
        raw = text[start:end]
        lead = len(raw) - len(raw.lstrip())
        body = raw.strip()
        if body:
            out.append(Span(body, start + lead, start + lead + len(body)))
    return out


def claims(answer: str, question: str = "") -> list[Claim]:
    """The claims of ``answer``: its sentences with content words, short ones joined to ``question``."""
    found: list[Claim] = []
    for span in sentences(answer):
        words = content_words(span.text)
        yes_no = _YES_NO.match(span.text) is not None
        if not any(any(ch.isalpha() for ch in w) for w in words) and not yes_no:
            continue  # filler, list markers ("1."), bare numbers
        scored = span.text
        if len(words) < SHORT_CLAIM and question.strip():
            scored = f"{span.text} {question.strip()}"
        found.append(Claim(span.text, span.start, span.end, scored))
    return found


_YES_NO = re.compile(r"^\s*(yes|no|nope|yeah|yep|correct|incorrect|right|wrong)\b", re.IGNORECASE)
