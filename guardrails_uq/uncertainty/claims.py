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


@dataclass
class _Run:
    """NLL summary of a token range: sum, count, max."""

    total: float = 0.0
    count: int = 0
    peak: float = -math.inf

    def add(self, nll: float) -> None:
        self.total += nll
        self.count += 1
        self.peak = max(self.peak, nll)

    def merge(self, other: _Run) -> _Run:
        return _Run(self.total + other.total, self.count + other.count, max(self.peak, other.peak))

    @property
    def mean(self) -> float:
        return self.total / self.count


class ClaimStream:
    """The claim signals of a growing answer (a stream): how many claims and the worst claim's mean NLL, as
    :func:`claims` and :func:`worst_claim` give them for the tokens so far, in O(1) a token (the same claim
    rules, applied as tokens arrive; a token is settled once the next one shows whether it ends a claim)."""

    def __init__(self) -> None:
        self._count = 0
        self._settled_worst = -math.inf  # over every claim before the last
        self._last: _Run | None = None
        self._run = _Run()  # tokens since the last claim ended
        self._wordy = False
        self._pending: tuple[str, float] | None = None

    def push(self, tokens: Sequence[str], logprobs: Sequence[float]) -> None:
        for token, logprob in zip(tokens, logprobs, strict=True):
            if self._pending is not None:
                self._settle(*self._pending, next_token=token)
            self._pending = (token, -float(logprob))

    def _settle(self, token: str, nll: float, *, next_token: str | None) -> None:
        """Token ``token`` joins the current run; closes it when it ends a claim (``next_token`` None: the last)."""
        self._run.add(nll)
        self._wordy = self._wordy or bool(_WORDY.search(token))
        last = next_token is None
        if not (last or _ends_claim([token, next_token], 0)):  # type: ignore[list-item]
            return
        if self._wordy or (last and self._last is None):
            if self._last is not None:
                self._settled_worst = max(self._settled_worst, self._last.mean)
            self._last, self._count = self._run, self._count + 1
        elif self._last is not None:  # punctuation or blank lines alone: part of the claim before
            self._last = self._last.merge(self._run)
        else:  # ... or, at the very start, of the claim after
            return
        self._run, self._wordy = _Run(), False

    def summary(self) -> tuple[int, float | None]:
        """(claims, worst claim's mean NLL or None) of the tokens so far, the last one ending the answer."""
        if self._pending is None:
            return 0, None
        state = (self._count, self._settled_worst, self._last, self._run, self._wordy)
        self._run = _Run(self._run.total, self._run.count, self._run.peak)
        self._settle(*self._pending, next_token=None)
        count = self._count
        worst = max(self._settled_worst, self._last.mean) if self._last is not None else None
        self._count, self._settled_worst, self._last, self._run, self._wordy = state
        return count, worst
