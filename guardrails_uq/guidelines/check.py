"""The guidelines check: retrieve, inject, report; with a calibration, also score the request's harmfulness."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import calibrated_threshold
from ..call import Call
from ..checks import Signals
from ..errors import WorkBudgetError
from ..textnorm import Reading, read_as_model
from .calibration import FIX, HarmDetector
from .detector import segments
from .index import GuidelineIndex
from .language import language_of
from .library import GuidelineLibrary
from .render import render_messages

#: Most parts (turns, sentences, windows: :func:`.detector.segments`) one call may ask the detector to score;
#: a longer conversation fails the check with a WorkBudgetError (abstain, whatever ``on_error`` says: padding
#: is the client's choice) rather than being read in part.
MAX_SEGMENTS = 1024
#: Consecutive user turns read joined (pairs and triples): a request split across up to JOINED messages is read
#: whole, and a new turn adds only JOINED - 1 joined texts (the rest are cached from the turn before).
JOINED = 3
#: Embeddings of recently scored parts kept per check (conversations resend their history every turn).
CACHE_SIZE = 4096
#: Languages the packaged embedder reads (MiniLM: English).
READABLE = ("en",)


@dataclass(frozen=True)
class _Part:
    """One text the detector scores: where it comes from (message index or "joined user turns") and its role."""

    text: str
    origin: int | str
    role: str


class GuidelinesCheck:
    """Input-phase check. Thread-safe (FAISS search, the embedder, the detector's numpy maths and the
    embedding cache, under a lock, are).

    Every message is first read as the model reads it (:func:`~guardrails_uq.textnorm.read_as_model`: tag
    characters, base64, look-alike letters and leetspeak decoded). The request (the last user message) is
    embedded for the guideline search. With a :class:`HarmDetector`, every turn the model will read is scored:
    system, user, assistant (a prefill included) and tool messages, each in its parts (:func:`.detector.segments`:
    the turn, its sentences, word windows of long turns), and all user turns joined (a request split across
    messages: every run of up to JOINED consecutive user turns); ``guidelines.harm_prob`` is the largest probability, ``guidelines.flagged`` compares it with the
    threshold for the target false-positive rate (calibrated on single requests: a long conversation is
    flagged more often than the target says). Without a detector both are null, so a rule reading them fails
    closed (``on_error``). A blank call retrieves nothing and scores 0 (not flagged).

    Also published, with or without a detector: ``guidelines.hidden`` (the hidden channels found in any turn),
    ``guidelines.language`` (the request's) and ``guidelines.unreadable`` (some turn is in a language outside
    ``languages``: the embedder cannot read it, so its score means little).
    """

    name = "guidelines"
    phase = "input"

    def __init__(
        self,
        index: GuidelineIndex,
        *,
        top_k: int = 4,
        min_score: float = 0.35,
        dedup: float = 0.9,
        inject: bool = True,
        detector: HarmDetector | None = None,
        target_fpr: float | None = None,
        languages: Sequence[str] = READABLE,
    ) -> None:
        self.index = index
        self.top_k = top_k
        self.min_score = min_score
        self.dedup = dedup
        self.inject = inject
        self.detector = detector
        self.languages = frozenset(languages)
        self.target_fpr = target_fpr if detector is None or target_fpr is not None else detector.target_fpr
        self.threshold: float | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()  # embeddings of parts, by text
        self._scores: OrderedDict[str, float] = OrderedDict()  # P(harmful) of parts, by text
        self._lock = threading.Lock()
        if detector is not None:
            detector.check_compatible(index, path=detector.loaded_from)
            self.threshold = calibrated_threshold(detector, self.target_fpr, FIX)

    @classmethod
    def from_config(
        cls, config: Any, library_path: Path, embedder: Any, calibration_path: Path | None = None
    ) -> GuidelinesCheck:
        """Build from the policy section; loads (and checks) the calibration artifact when one is named."""
        index = GuidelineIndex.open(GuidelineLibrary.load(library_path), embedder)
        detector = HarmDetector.load(calibration_path) if calibration_path is not None else None
        return cls(
            index,
            top_k=config.top_k,
            min_score=config.min_score,
            dedup=config.dedup,
            inject=config.inject,
            detector=detector,
            target_fpr=getattr(config, "target_fpr", None),
            languages=getattr(config, "languages", READABLE),
        )

    def run(self, call: Call) -> Signals:
        readings = [read_as_model(m.read_text) for m in call.messages]  # tool calls of earlier turns too
        request = self._request(call, readings)
        hidden = sorted({c for r in readings for c in r.channels} | set(request.channels))
        read = readings if call.messages else [request]  # a call without messages reads its query
        languages = {i: language_of(r.text) for i, r in enumerate(read) if r.text}
        unreadable = sorted({lang for lang in languages.values() if lang not in self.languages})
        parts = self._parts(call, readings) if self.detector is not None else []
        vectors = self._embed([request.text, *(p.text for p in parts)] if request.text else [p.text for p in parts])
        retrieved = (
            self.index.search(vectors[0], top_k=self.top_k, min_score=self.min_score, dedup=self.dedup)
            if request.text
            else []
        )
        harm_prob, flagged, worst = self._harm(parts, vectors[1:] if request.text else vectors)
        evidence: dict[str, Any] = {
            "guidelines": [
                {
                    "id": r.guideline.id,
                    "title": r.guideline.title,
                    "category": r.guideline.category,
                    "score": round(r.score, 4),
                }
                for r in retrieved
            ]
        }
        if hidden:
            evidence["hidden"] = {"channels": hidden, "request_as_read": request.text[:500]}
        if unreadable:
            evidence["languages"] = {str(i): lang for i, lang in languages.items()}
        if self.threshold is not None:
            evidence["harm"] = {"prob": harm_prob, "threshold": self.threshold, "target_fpr": self.target_fpr}
            if worst is not None:
                evidence["harm"]["part"] = {"origin": worst.origin, "role": worst.role, "text": worst.text[:500]}
        return Signals(
            values={
                "guidelines.count": len(retrieved),
                "guidelines.top_score": retrieved[0].score if retrieved else 0.0,
                "guidelines.ids": [r.guideline.id for r in retrieved],
                "guidelines.categories": [r.guideline.category for r in retrieved],
                "guidelines.harm_prob": harm_prob,
                "guidelines.flagged": flagged,
                "guidelines.hidden": hidden,
                "guidelines.language": language_of(request.text) if request.text else "en",
                "guidelines.unreadable": bool(unreadable),
            },
            evidence=evidence,
            messages=render_messages(call.messages, retrieved) if self.inject and retrieved and call.messages else None,
        )

    @staticmethod
    def _request(call: Call, readings: list[Reading]) -> Reading:
        """The request as the model reads it: the last user message, else the query."""
        for message, reading in zip(reversed(call.messages), reversed(readings), strict=True):
            if message.role == "user":
                return reading
        return read_as_model(call.query or "")

    @staticmethod
    def _parts(call: Call, readings: list[Reading]) -> list[_Part]:
        """Every part of every turn the model reads, and runs of consecutive user turns joined; distinct texts.

        Raises WorkBudgetError beyond MAX_SEGMENTS parts (the check fails closed whatever ``on_error`` says)."""
        parts: dict[str, _Part] = {}
        for number, (message, reading) in enumerate(zip(call.messages, readings, strict=True)):
            pieces = [reading.text]
            if message.tool_calls:  # each name, key and string of a call is also read alone (a tool reads it so)
                pieces += [read_as_model(line).text for line in message.read_text.splitlines()]
            for piece in pieces:
                for text in segments(piece):
                    parts.setdefault(text, _Part(text, number, message.role))
        if not call.messages and call.query:
            for text in segments(read_as_model(call.query).text):
                parts.setdefault(text, _Part(text, "query", "user"))
        users = [r.text for m, r in zip(call.messages, readings, strict=True) if m.role == "user" and r.text]
        for size in range(2, JOINED + 1):
            for start in range(len(users) - size + 1):
                for text in segments(" ".join(users[start : start + size])):
                    parts.setdefault(text, _Part(text, "joined user turns", "user"))
        if len(parts) > MAX_SEGMENTS:
            raise WorkBudgetError(
                f"the conversation has {len(parts)} parts to score, more than {MAX_SEGMENTS}: shorten the "
                "history sent to the model (the check does not read a conversation in part)",
                source="guidelines",
            )
        return list(parts.values())

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings of ``texts`` (rows), from the cache where it has them; one embedder call for the rest
        (parts whose probability is cached need no embedding: their row is zeros)."""
        dim = self.index.vectors.shape[1]
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        with self._lock:
            known = {t: self._cache[t] for t in texts if t in self._cache}
            scored = {t for t in texts[1:] if t in self._scores and t != texts[0]}
        zero = np.zeros(dim, dtype=np.float32)
        known.update((t, zero) for t in scored if t not in known)
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            fresh = np.asarray(self.index.embedder.embed(missing), dtype=np.float32)
            with self._lock:
                for text, vector in zip(missing, fresh, strict=True):
                    known[text] = vector
                    self._cache[text] = vector
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return np.vstack([known[t] for t in texts])

    def _harm(self, parts: list[_Part], vectors: np.ndarray) -> tuple[float | None, bool | None, _Part | None]:
        """The largest P(harmful) over the parts, the calibrated flag, and the part that scored it (probabilities
        of parts scored before come from the cache)."""
        if self.detector is None or self.threshold is None:
            return None, None, None
        if not parts:
            return 0.0, False, None
        with self._lock:
            known = {p.text: self._scores[p.text] for p in parts if p.text in self._scores}
        fresh = [i for i, p in enumerate(parts) if p.text not in known]
        if fresh:
            probabilities = self.detector.predict_proba(self.index, vectors[fresh])
            with self._lock:
                for i, probability in zip(fresh, probabilities, strict=True):
                    known[parts[i].text] = self._scores[parts[i].text] = float(probability)
                while len(self._scores) > CACHE_SIZE:
                    self._scores.popitem(last=False)
        best = max(range(len(parts)), key=lambda i: known[parts[i].text])
        probability = known[parts[best].text]
        return probability, probability > self.threshold, parts[best]
