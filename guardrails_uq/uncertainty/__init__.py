"""Uncertainty and cascades: token-level scores, sample-based scores, SAR, Semantic Volume, the claim-level
view, learned and risk-controlled deferral, metrics."""

from __future__ import annotations

from .check import UncertaintyCheck
from .claims import Claim, claims, worst_claim
from .deferral import PostHocDeferral
from .sample_scores import degree, eccentricity, eigv, num_semantic_sets, sample_scores, semantic_volume
from .sar import sar, sentence_sar, token_sar
from .similarity import combined_matrix
from .token_scores import TOKEN_SCORE_NAMES, token_scores

__all__ = [
    "TOKEN_SCORE_NAMES",
    "Claim",
    "PostHocDeferral",
    "UncertaintyCheck",
    "claims",
    "combined_matrix",
    "degree",
    "eccentricity",
    "eigv",
    "num_semantic_sets",
    "sample_scores",
    "sar",
    "semantic_volume",
    "sentence_sar",
    "token_sar",
    "token_scores",
    "worst_claim",
]
