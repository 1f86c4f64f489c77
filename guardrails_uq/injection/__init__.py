"""Indirect prompt injection: instructions aimed at the model inside tool results and retrieved chunks.

:mod:`.markup` decodes hidden channels, :mod:`.detector` cuts windows and computes features,
:mod:`.calibration` fits and calibrates the detector (checksummed artifact), :mod:`.check` is the
retrieval-phase check, :mod:`.evaluate` measures it (policy on labelled tool results; held-out groups),
:mod:`.data` writes the labelled tool results it is fitted on.
"""

from __future__ import annotations

from .calibration import Document, InjectionDetector
from .check import InjectionCheck
from .markup import Piece, reveal

__all__ = ["Document", "InjectionCheck", "InjectionDetector", "Piece", "reveal"]
