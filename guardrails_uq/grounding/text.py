"""Cutting answers into claims and evidence into sentences, with character offsets into the original text.

Sentences end where :func:`..uncertainty.claims.claim_spans` says a claim ends (one rule for the token view
and this character view): ``.``, ``!``, ``?`` or ``…`` followed by whitespace, or a line break. Offsets are
into the text as given (not normalised), so evidence points at what the user and the app saw.

A *claim* is an answer sentence with at least one content word that has a letter (:func:`.align.content_words`),
or a short sentence that takes a stance ("It does.", "Never."); filler ("I hope this helps.") and list markers
("1.") are not claims, but an answer with text and no claim is one claim as a whole (emoji, symbols).
Sentences longer than MAX_WORDS words are read in windows (claims and evidence alike: bounded cost). An answer too short to say anything by itself ("Yes.",
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


def windows(span: Span) -> list[Span]:
    """A sentence longer than MAX_WORDS words as consecutive windows of at most MAX_WORDS words (offsets kept):
    bounds the cost of one claim or evidence sentence."""
    pieces = list(re.finditer(r"\S+", span.text))
    if len(pieces) <= MAX_WORDS:
        return [span]
    out = []
    for first in range(0, len(pieces), MAX_WORDS):
        chunk = pieces[first : first + MAX_WORDS]
        start, end = chunk[0].start(), chunk[-1].end()
        out.append(Span(span.text[start:end], span.start + start, span.start + end))
    return out


def claims(answer: str, question: str = "") -> list[Claim]:
    """The claims of ``answer``: its sentences (windows of long ones) with content words, and short answers
    that affirm or deny ("It does.", "Never.", "Yup."), short ones read together with ``question``. An answer
    with text but none of these is one claim, read with the question: nothing a reader sees goes unscored."""
    found: list[Claim] = []
    spans = [window for span in sentences(answer) for window in windows(span)]
    weak: list[Claim] = []
    for span in spans:
        words = content_words(span.text)
        claim = Claim(span.text, span.start, span.end, _scored(span.text, words, question))
        if any(any(ch.isalpha() for ch in w) for w in words) or _VERDICT.match(span.text):
            found.append(claim)
        elif _STANCE.search(span.text) and len(span.text) < 40:
            weak.append(claim)  # "It does.", "Sure, you can!": a claim when the answer says nothing else
    if not found and weak:
        found = weak
    if not found and answer.strip():
        start = len(answer) - len(answer.lstrip())
        text = answer.strip()
        found.append(Claim(text, start, start + len(text), _scored(text, content_words(text), question)))
    return found


def _scored(text: str, words: list[str], question: str) -> str:
    return f"{text} {question.strip()}" if len(words) < SHORT_CLAIM and question.strip() else text


#: Words that answer a yes/no question by themselves, wherever they stand ("No. Exports are Markdown only.").
_VERDICT = re.compile(
    r"^\W*(yes|no|nope|yeah|yep|yup|correct|incorrect|wrong|absolutely|definitely|never|not at all)\b",
    re.IGNORECASE,
)
#: Words that take a stance when the answer says nothing else ("It does.", "Sure, you can!").
_STANCE = re.compile(
    r"\b(yes|no|nope|yeah|yep|yup|sure|correct|incorrect|right|wrong|absolutely|definitely|certainly|indeed|"
    r"never|always|not|does|doesn't|do|don't|can|cannot|can't|is|isn't|are|aren't|will|won't)\b",
    re.IGNORECASE,
)
#: Longest claim or evidence sentence, in words; longer ones are read in windows of this many words.
MAX_WORDS = 80
