"""Guide-Align guidelines: library format, vector index, prompt rendering, library builder, evaluation."""

from __future__ import annotations

from .check import GuidelinesCheck
from .index import GuidelineIndex, Retrieved
from .library import Guideline, GuidelineLibrary
from .render import guideline_text, render_messages, render_prompt

__all__ = [
    "Guideline",
    "GuidelineIndex",
    "GuidelineLibrary",
    "GuidelinesCheck",
    "Retrieved",
    "guideline_text",
    "render_messages",
    "render_prompt",
]
