"""The provenance check: maximal copied spans of the answer, their BCI, and the corpus locations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..call import Call
from ..checks import Signals
from .index import CorpusIndex
from .match import find_spans


class ProvenanceCheck:
    """Output-phase check. Thread-safe: the index is read-only memory maps."""

    name = "provenance"
    phase = "output"

    def __init__(self, index: CorpusIndex, *, min_span: int = 8, max_sources: int = 5) -> None:
        self.index = index
        self.min_span = min_span
        self.max_sources = max_sources

    @classmethod
    def from_config(cls, config: Any, index_path: Path) -> ProvenanceCheck:
        index = CorpusIndex.load(index_path, verify=config.verify)
        return cls(index, min_span=config.min_span, max_sources=config.max_sources)

    def run(self, call: Call) -> Signals:
        text = call.generation.text if call.generation is not None else ""
        spans = find_spans(self.index, text, min_span=self.min_span, max_sources=self.max_sources)
        return Signals(
            values={
                "provenance.bci_max": max((s.bci for s in spans), default=0.0),
                "provenance.spans": len(spans),
                "provenance.longest_span": max((s.length for s in spans), default=0),
            },
            evidence={"index": str(self.index.path), "spans": [s.to_evidence() for s in spans]},
        )
