"""TraceShield provenance: suffix-array corpus index, maximal span matching, Belief Conflict Index."""

from __future__ import annotations

from .bci import bci, token_surprisal
from .check import ProvenanceCheck
from .index import BuildReport, CorpusIndex, build_index
from .match import Source, Span, SpanMatcher, find_spans
from .tokenize import tokenize, tokenize_with_offsets

__all__ = [
    "BuildReport",
    "CorpusIndex",
    "ProvenanceCheck",
    "Source",
    "Span",
    "SpanMatcher",
    "bci",
    "build_index",
    "find_spans",
    "token_surprisal",
    "tokenize",
    "tokenize_with_offsets",
]
