"""The claim-level view: the answer cut into sentences, each with its tokens' scores, so a reader (and the
HTML report) sees which claim the model was unsure of. Higher = more uncertain.

A claim is a run of tokens ending at a sentence end: a token whose text ends with ``.``, ``!``, ``?`` or
``…`` (closing quotes and brackets allowed after it) followed by whitespace or the end of the answer, or
a token holding a line break. "3.5" and "e.g.," do not end a claim; "Dr. Smith" does (no abbreviation
list). Runs without a letter or digit (a lone "." or a blank line) join the claim before them (the one
after them at the start).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

_END = re.compile(r"[.!?\u2026][\"')\]\u201d\u2019]*\s*$")
_WORDY = re.compile(r"\w")


@dataclass(frozen=True)
class Claim:
    """One sentence of the answer: its text, token range [start, end), and its tokens' NLL summary."""

    text: str
    start: int
    end: int
    mean_nll: float
    max_nll: float
    g_nll: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-compatible, rounded for evidence."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}  # asdict() would deep-copy plain values
        for key in ("mean_nll", "max_nll", "g_nll"):
            data[key] = round(data[key], 4)
        return data


def _ends_claim(tokens: Sequence[str], i: int) -> bool:
    token = tokens[i]
    if "\n" in token:
        return True
    if not _END.search(token):
        return False
    return i + 1 == len(tokens) or tokens[i + 1][:1].isspace() or token[-1:].isspace()


def claim_spans(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Token ranges [start, end) of the claims, covering every token in order (empty input: none)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for i in range(len(tokens)):
        last = i + 1 == len(tokens)
        if not (_ends_claim(tokens, i) or last):
            continue
        if _WORDY.search("".join(tokens[start : i + 1])) or (last and not spans):
            spans.append((start, i + 1))
        elif spans:  # punctuation or blank lines alone: part of the claim before
            spans[-1] = (spans[-1][0], i + 1)
        else:  # ... or, at the very start, of the claim after
            continue
        start = i + 1
    return spans


def claims(tokens: Sequence[str], logprobs: Sequence[float]) -> list[Claim]:
    """Every claim with its tokens' mean, max and summed NLL (-log p)."""
    if len(tokens) != len(logprobs):
        raise ValueError(f"{len(tokens)} tokens but {len(logprobs)} logprobs")
    out = []
    for start, end in claim_spans(tokens):
        nll = [-float(lp) for lp in logprobs[start:end]]
        out.append(
            Claim(
                text="".join(tokens[start:end]).strip(),
                start=start,
                end=end,
                mean_nll=math.fsum(nll) / len(nll),
                max_nll=max(nll),
                g_nll=math.fsum(nll),
            )
        )
    return out


def worst_claim(found: Sequence[Claim]) -> Claim | None:
    """The least confident claim (highest mean NLL), or None without claims."""
    return max(found, key=lambda c: c.mean_nll, default=None)
