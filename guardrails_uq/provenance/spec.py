"""Policy section ``provenance`` (TraceShield): registry entry and configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..checks import CheckDeps, CheckSpec, SignalSpec
from ..policy.schema import StrictModel


class ProvenanceConfig(StrictModel):
    """Find answer spans copied verbatim from an indexed corpus of unsafe text and score them by BCI."""

    index: str = Field(description="Index folder built by `guardrails-uq provenance index` (relative to the policy).")
    min_span: int = Field(default=8, ge=1, description="Shortest span, in tokens, that counts as copied.")
    max_sources: int = Field(default=5, ge=0, description="Corpus locations recorded per span in the evidence.")
    verify: Literal["full", "size"] = Field(
        default="full", description="Check index files at load by SHA-256 (full) or by size only (fast start)."
    )


def _build(config: Any, base_dir: Path, deps: CheckDeps) -> Any:
    from .check import ProvenanceCheck

    index = Path(config.index)
    return ProvenanceCheck.from_config(config, index if index.is_absolute() else base_dir / index)


SPEC = CheckSpec(
    name="provenance",
    phase="output",
    config=ProvenanceConfig,
    signals={
        "provenance.bci_max": SignalSpec("number", "Highest Belief Conflict Index over copied spans (0 if none)."),
        "provenance.spans": SignalSpec("integer", "Number of maximal copied spans of at least min_span tokens."),
        "provenance.longest_span": SignalSpec("integer", "Length in tokens of the longest copied span (0 if none)."),
    },
    build=_build,
    description="TraceShield: verbatim spans from an indexed unsafe corpus, scored by the Belief Conflict Index.",
    artifacts=lambda config: {"index": config.index},
)
