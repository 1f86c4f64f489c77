"""Calibration without labels (CONFLARE's way): an LLM writes one question per sampled chunk, and that
chunk counts as relevant to it; optionally the LLM also judges whether chunks the retriever ranks above
the source chunk answer the question too (they are then relevant as well, so the threshold is not
inflated by near-duplicates)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping

from .calibration import CalibrationPair

QUESTION = """Read the passage and write one question that it answers. Reply with the question only.

Passage: {text}

Question:"""

JUDGE = """Does the passage answer the question? Reply yes or no.

Question: {question}
Passage: {text}

Answer:"""


def _clean_question(reply: str) -> str:
    line = next((part.strip() for part in reply.strip().splitlines() if part.strip()), "")
    return re.sub(r"^(question\s*:\s*|q\s*:\s*|\d+[.)]\s*)", "", line, flags=re.IGNORECASE).strip().strip('"')


def generate_pairs(
    chunks: Mapping[str, str],
    ask: Callable[[str], str],
    *,
    n: int,
    seed: int = 0,
    retrieve: Callable[[str], list] | None = None,
    judge: bool = False,
    max_judged: int = 5,
) -> list[CalibrationPair]:
    """Questions for ``n`` sampled chunks (fewer if the corpus is smaller). With ``judge`` and ``retrieve``,
    up to ``max_judged`` chunks ranked above the source are judged by the LLM and added when it says yes.
    Chunks whose reply is not a usable question are skipped."""
    ids = list(chunks)
    sample = random.Random(seed).sample(ids, min(n, len(ids)))
    pairs = []
    for chunk_id in sample:
        question = _clean_question(ask(QUESTION.format(text=chunks[chunk_id])))
        if len(question) < 8:
            continue
        relevant = {chunk_id}
        if judge and retrieve is not None:
            above = []
            for document in retrieve(question):
                if document.id == chunk_id:
                    break
                above.append(document.id)
            for other in above[:max_judged]:
                reply = ask(JUDGE.format(question=question, text=chunks[other])).strip().lower()
                if reply.startswith("yes"):
                    relevant.add(other)
        pairs.append(CalibrationPair(query=question, relevant=frozenset(relevant)))
    return pairs
