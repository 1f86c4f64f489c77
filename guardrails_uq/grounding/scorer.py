"""Scoring claims against evidence: the offline alignment scorer and the shared result types.

A scorer maps (claims, evidence) to one row of probabilities per claim over ``LABELS`` (supported,
contradicted, unsupported) and the evidence sentence each claim was aligned with (AlignScore's recipe: split
the context into sentences, score each claim against its best-aligned one, aggregate). Two scorers share that
contract: :class:`AlignmentScorer` (offline: alignment features + a small model fitted on the operator's own
knowledge base) and :class:`.judge.JudgeScorer` (an OpenAI-compatible model asked per claim).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .align import FEATURE_NAMES, Evidence, align
from .model import LABELS, SoftmaxModel
from .text import Span, sentences, windows

#: Most evidence sentences a call aligns claims with (the longest documents are cut; recorded in evidence).
MAX_SENTENCES = 200


@dataclass(frozen=True)
class EvidenceSet:
    """The evidence of one call: documents (id, text) and their sentences with offsets into each document."""

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    spans: tuple[Span, ...]
    doc_of: tuple[int, ...]

    @classmethod
    def build(cls, documents: Sequence[tuple[str, str]]) -> EvidenceSet:
        """From (id, text) pairs; blank documents are skipped; at most MAX_SENTENCES sentences."""
        ids: list[str] = []
        texts: list[str] = []
        spans: list[Span] = []
        doc_of: list[int] = []
        for doc_id, text in documents:
            found = [w for span in sentences(text) for w in windows(span)]
            if not found:
                continue
            ids.append(doc_id)
            texts.append(text)
            for span in found:
                if len(spans) < MAX_SENTENCES:
                    spans.append(span)
                    doc_of.append(len(ids) - 1)
        return cls(tuple(ids), tuple(texts), tuple(spans), tuple(doc_of))

    def __bool__(self) -> bool:
        return bool(self.spans)

    def for_features(self) -> Evidence:
        """The feature module's view (sentence texts, their chunk index, chunk texts)."""
        return Evidence(tuple(s.text for s in self.spans), self.doc_of, self.texts)


@dataclass(frozen=True)
class ClaimScores:
    """Per-claim probabilities (n, 3) over ``LABELS`` and the index of each claim's aligned sentence."""

    probs: np.ndarray
    aligned: tuple[int, ...]


class Scorer(Protocol):
    """What the grounding check needs of a scorer. ``name`` fingerprints it for calibration artifacts."""

    name: str

    def score(self, claims: Sequence[str], evidence: EvidenceSet) -> ClaimScores: ...


class _VectorCache:
    """Thread-safe LRU cache of sentence embeddings (knowledge-base sentences recur in every call)."""

    def __init__(self, embedder: Any, size: int = 4096) -> None:
        self.embedder = embedder
        self.size = size
        self._lock = threading.Lock()
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors for ``texts`` (rows in order), embedding only the ones not cached, in one batch."""
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._data]
        if missing:
            vectors = np.asarray(self.embedder.embed(missing), dtype=np.float32)
            with self._lock:
                for text, vector in zip(missing, vectors, strict=True):
                    self._data[text] = vector
                    self._data.move_to_end(text)
                while len(self._data) > self.size:
                    self._data.popitem(last=False)
        with self._lock:
            rows = [self._data.get(t) for t in texts]
        if any(r is None for r in rows):  # evicted by a concurrent call between the two steps: embed again
            return np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)  # type: ignore[arg-type]


class AlignmentScorer:
    """Offline scorer: :mod:`.align` features of each claim against its aligned sentence, then the model.

    Claims and evidence sentences are embedded in one batch each, through caches (knowledge-base sentences
    recur across calls, a streamed answer's claims across its prefixes). Thread-safe."""

    def __init__(self, model: SoftmaxModel, embedder: Any) -> None:
        if model.coef.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"the model reads {model.coef.shape[1]} features, the scorer makes {len(FEATURE_NAMES)}")
        self.model = model
        self.embedder = embedder
        self.name = f"alignment:{getattr(embedder, 'name', type(embedder).__name__)}"
        self._sentences = _VectorCache(embedder)
        self._claims = _VectorCache(embedder, size=512)  # a streamed answer's earlier claims recur per prefix

    def features(self, claims: Sequence[str], evidence: EvidenceSet) -> tuple[np.ndarray, tuple[int, ...]]:
        """(features (n, d), aligned sentence per claim); for fitting and for :meth:`score`."""
        if not claims:
            return np.zeros((0, len(FEATURE_NAMES))), ()
        claim_vectors = self._claims.get(list(claims))
        sentence_vectors = self._sentences.get([s.text for s in evidence.spans])
        view = evidence.for_features()
        rows, aligned = [], []
        for claim, vector in zip(claims, claim_vectors, strict=True):
            best, row = align(claim, view, vector, sentence_vectors)
            rows.append(row)
            aligned.append(best)
        return np.vstack(rows), tuple(aligned)

    def score(self, claims: Sequence[str], evidence: EvidenceSet) -> ClaimScores:
        x, aligned = self.features(claims, evidence)
        probs = self.model.predict_proba(x) if len(x) else np.zeros((0, len(LABELS)))
        return ClaimScores(probs=probs, aligned=aligned)
