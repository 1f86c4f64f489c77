"""CONFLARE conformal retrieval: calibration, threshold artifact, filtering, coverage evaluation."""

from __future__ import annotations

from .calibration import (
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

__all__ = [
    "SCORE_KINDS",
    "CalibrationPair",
    "ConformalCalibrator",
    "ConformalCheck",
    "CoverageWarning",
    "calibrate",
    "conformal_rank",
    "keep_mask",
    "nonconformity",
]
