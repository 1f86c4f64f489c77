"""Guide-Align guidelines: library format, vector index, prompt rendering, library builder, evaluation, and the
calibrated harmful-request detector."""

from __future__ import annotations

from .calibration import HarmDetector
from .check import GuidelinesCheck
from .index import GuidelineIndex, Retrieved
from .library import Guideline, GuidelineLibrary
from .render import guideline_text, render_messages, render_prompt

__all__ = [
    "Guideline",
    "GuidelineIndex",
    "GuidelineLibrary",
    "GuidelinesCheck",
    "HarmDetector",
    "Retrieved",
    "guideline_text",
    "render_messages",
    "render_prompt",
]
