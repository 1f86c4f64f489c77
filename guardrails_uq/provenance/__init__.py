"""TraceShield provenance: suffix-array corpus index, maximal span matching, Belief Conflict Index, the
informative span score and its threshold calibrated to a false-positive rate on benign text."""

from __future__ import annotations

from .bci import bci, token_surprisal
from .calibration import ProvenanceCalibration
from .check import ProvenanceCheck
from .index import BuildReport, CorpusIndex, build_index
from .match import Source, Span, SpanMatcher, find_spans
from .score import ScoreSettings, TextScore, score_text
from .tokenize import tokenize, tokenize_with_offsets

__all__ = [
    "BuildReport",
    "CorpusIndex",
    "ProvenanceCalibration",
    "ProvenanceCheck",
    "ScoreSettings",
    "Source",
    "Span",
    "SpanMatcher",
    "TextScore",
    "bci",
    "build_index",
    "find_spans",
    "score_text",
    "token_surprisal",
    "tokenize",
    "tokenize_with_offsets",
]
