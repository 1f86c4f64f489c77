"""What the injection detector scores: windows of a tool result's decoded pieces, and their features.

A tool result is cut into *windows*: every piece :func:`.markup.reveal` finds is normalised (NFKC, format
characters removed, look-alike letters folded), split into sentences (at ``.!?`` followed by a space, and at
line breaks; a sentence longer than ``MAX_WINDOW_CHARS`` is cut), and each sentence and each pair of
consecutive sentences of a piece is a window. An injected instruction is one or two sentences; a window that
small keeps it from being diluted by the page around it. The document's score is its highest window's.

A window's features (``FEATURES``): its embedding (unit length) followed by ``len(CUES)`` indicators: the
cues below (regular expressions over the lowercased window) and whether the window came from a hidden
channel. The cues name what an instruction *to a model* tends to contain; none decides alone (texts about
prompt injection quote them too): the logistic model weighs them against the embedding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from ..textnorm import normalize
from .markup import Piece, reveal

FEATURES_ID: Final = "window-embedding+cues/v1"
FEATURES: Final = (
    "embedding of the window (NFKC, format characters removed, confusables folded; unit length), then one 0/1 "
    "indicator per cue of guardrails_uq.injection.detector.CUES, then 1 when the window came from a hidden channel"
)
MAX_WINDOW_CHARS: Final = 400
#: Windows with fewer words are not scored ("Best, Carlos"; a salutation says nothing and, out of the
#: fitting data's range, a linear model can score it anywhere).
MIN_WINDOW_WORDS: Final = 3

#: (name, pattern): what instructions aimed at a model tend to contain.
CUES: Final[tuple[tuple[str, str], ...]] = (
    (
        "override",
        r"\b(ignore|disregard|forget|override|bypass|skip|cancel)\b.{0,40}\b(instructions?|prompts?|rules|"
        r"guidelines|directions|guardrails|safety|constraints|task)\b",
    ),
    (
        "addressee",
        r"\b(ai|a\.i\.|assistant|language model|llm|chatbot|agent|model|gpt|claude|gemini|copilot|bot)s?\b",
    ),
    (
        "role-marker",
        r"(\[/?(system|inst|admin|developer)\]|<\|?(im_start|system|endoftext)\|?>|^\s*(system|assistant|"
        r"developer)\s*:|###\s*(instruction|system)|new instructions|developer mode|jailbreak|\bdan\b)",
    ),
    (
        "exfiltration",
        r"\b(send|forward|email|e-mail|post|upload|transmit|exfiltrate|leak|share|copy)\b.{0,60}\b(passwords?|"
        r"credentials?|api keys?|tokens?|secrets?|conversation|chat history|history|contacts|inbox|"
        r"messages|files|personal data|system prompt)\b",
    ),
    (
        "tool-use",
        r"\b(call|invoke|use|run|execute|trigger)\b.{0,30}\b(tool|function|http_get|send_email|api|command|"
        r"plugin)\b",
    ),
    (
        "secrecy",
        r"(\b(do not|don't|never)\b.{0,30}\b(tell|mention|reveal|inform|disclose|notify|alert)\b|"
        r"without (asking|telling|informing|notifying|confirmation|confirming))",
    ),
    (
        "foreign-override",
        r"\b(ignorez|oubliez|ignora|ignorar|olvida|ignoriere|ignorieren|vergiss|negeer|ignoruj)\b",
    ),
    ("url-payload", r"https?://\S+[?&]\w+=(\{|\$|<|%7b|\[)"),
    (
        "discussion",
        r"(\b(attack|attacks|attacker|attackers|researchers?|vulnerabilit(y|ies)|exploit|red team|defen[cs]es?|"
        r"such as|for example|e\.g\.|owasp|benchmark|paper|jailbreak prompt)\b|['\"\u2018\u201c][^'\"]{8,}['\"\u2019\u201d])",
    ),
)
_COMPILED: Final = tuple(re.compile(p, re.IGNORECASE | re.MULTILINE) for _, p in CUES)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)|\s*\n+\s*")


@dataclass(frozen=True)
class Window:
    """A window of a tool result: its normalised text, channel, and [start, end) in the original text
    (the whole piece's span for decoded channels, whose characters are not the original's)."""

    text: str
    channel: str
    hidden: bool
    start: int
    end: int


def _sentences(text: str) -> list[tuple[str, int]]:
    """(sentence, offset in ``text``), long ones cut at ``MAX_WINDOW_CHARS``."""
    out = []
    position = 0
    for part in _SENTENCE.split(text):
        offset = text.find(part, position) if part else position
        position = offset + len(part)
        part_stripped = part.strip()
        if not part_stripped:
            continue
        for cut in range(0, len(part), MAX_WINDOW_CHARS):
            chunk = part[cut : cut + MAX_WINDOW_CHARS]
            if chunk.strip():
                out.append((chunk.strip(), offset + cut))
    return out


def windows(text: str) -> list[Window]:
    """The windows of one tool result (see the module docstring), de-duplicated by (text, hidden)."""
    return windows_of(reveal(text))


def windows_of(pieces: Sequence[Piece]) -> list[Window]:
    """The windows of the pieces :func:`.markup.reveal` found in one tool result."""
    out: list[Window] = []
    seen: set[tuple[str, bool]] = set()
    for piece in pieces:
        direct = piece.channel == "text" and piece.end - piece.start == len(piece.text)
        sentences = _sentences(piece.text)
        spans = []
        for i, (sentence, offset) in enumerate(sentences):
            spans.append(([sentence], offset, offset + len(sentence)))
            if i + 1 < len(sentences):
                nxt, nxt_offset = sentences[i + 1]
                spans.append(([sentence, nxt], offset, nxt_offset + len(nxt)))
        for parts, a, b in spans:
            body = normalize(" ".join(parts), fold_confusables=True).strip()
            if len(body.split()) < MIN_WINDOW_WORDS or (body, piece.hidden) in seen:
                continue
            seen.add((body, piece.hidden))
            start, end = (a, b) if direct else (piece.start, piece.end)
            out.append(Window(body, piece.channel, piece.hidden, start, end))
    return out


def cue_vector(window: Window) -> np.ndarray:
    """The window's 0/1 cue indicators, then its hidden-channel indicator."""
    lowered = window.text.lower()
    return np.array([float(p.search(lowered) is not None) for p in _COMPILED] + [float(window.hidden)])


def features(vectors: np.ndarray, items: Sequence[Window]) -> np.ndarray:
    """The feature matrix (``FEATURES``) of windows ``items`` embedded as ``vectors`` (rows, unit length)."""
    vectors = np.asarray(vectors, dtype=np.float64).reshape(len(items), -1)
    cues = np.vstack([cue_vector(w) for w in items]) if items else np.zeros((0, len(CUES) + 1))
    return np.hstack([vectors, cues])


def cue_names() -> list[str]:
    """The names of the indicator features, in order."""
    return [name for name, _ in CUES] + ["hidden-channel"]
