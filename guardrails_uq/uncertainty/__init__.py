"""Uncertainty and cascades: token-level scores, sample-based scores, learned deferral, metrics."""

from __future__ import annotations

from .check import UncertaintyCheck
from .deferral import PostHocDeferral
from .sample_scores import degree, eccentricity, eigv, num_semantic_sets, sample_scores
from .token_scores import TOKEN_SCORE_NAMES, token_scores

__all__ = [
    "TOKEN_SCORE_NAMES",
    "PostHocDeferral",
    "UncertaintyCheck",
    "degree",
    "eccentricity",
    "eigv",
    "num_semantic_sets",
    "sample_scores",
    "token_scores",
]
