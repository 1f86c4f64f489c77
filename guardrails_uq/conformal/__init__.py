"""CONFLARE conformal retrieval: calibration, threshold artifact, filtering, coverage evaluation."""

from __future__ import annotations

from .calibration import (
    KIND_CHOICES,
    SCORE_KINDS,
    CalibrationPair,
    ConformalCalibrator,
    CoverageWarning,
    calibrate,
    conformal_rank,
    keep_mask,
    nonconformity,
)
from .check import ConformalCheck
from .scores import HYBRID_WEIGHT, KEEPS_TOP_KINDS, LEXICAL_KINDS, bm25_scores, conformity, hybrid_scores
from .selection import Selection, select_kind

__all__ = [
    "HYBRID_WEIGHT",
    "KEEPS_TOP_KINDS",
    "KIND_CHOICES",
    "LEXICAL_KINDS",
    "SCORE_KINDS",
    "CalibrationPair",
    "ConformalCalibrator",
    "ConformalCheck",
    "CoverageWarning",
    "Selection",
    "bm25_scores",
    "calibrate",
    "conformal_rank",
    "conformity",
    "hybrid_scores",
    "keep_mask",
    "nonconformity",
    "select_kind",
]
