"""Validating numbers that users hand in: CLI arguments, numeric fields of input files, constructor parameters.

One :class:`Range` per kind of number, shared by every caller: the constructor that uses the number checks it
(``PostHocDeferral(l2=...)``), the file reader checks each field (naming file:line), and the CLI declares its
arguments with :func:`number_argument`, so that ``--l2 nan`` fails while the arguments are parsed, before any
work, with an InputError naming the argument, the accepted range and the fix. NaN, infinities and values far
outside what the method can use (``1e308``) are refused, never written into an artifact.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InputError


@dataclass(frozen=True)
class Range:
    """An interval of acceptable numbers (always finite): ``[low, high]``, either end open when asked; integers
    only when ``integer``. ``fix`` says what a sensible value is."""

    low: float
    high: float
    fix: str
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        """The accepted values in words, e.g. ``a finite number in (0, 1)``."""
        kind = "an integer" if self.integer else "a finite number"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        low, high = (f"{int(v)}" if self.integer else f"{v:g}" for v in (self.low, self.high))
        return f"{kind} in {left}{low}, {high}{right}"

    def contains(self, value: object) -> bool:
        """Whether ``value`` is a number (not a bool) of the right kind inside the interval."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def check(self, value: Any, name: str, *, source: str | None = None, line: int | None = None) -> Any:
        """``value`` unchanged when :meth:`contains` it, else InputError naming ``name`` (and ``source:line``
        when given: a file), the accepted range and the fix."""
        if not self.contains(value):
            raise InputError(
                f"{name} must be {self.describe()}, got {value!r}; fix: {self.fix}", source=source, line=line
            )
        return value


class _CheckedNumber(argparse.Action):
    """An argparse action that stores the parsed number once its :class:`Range` accepts it (InputError
    otherwise: the CLI prints it as ``error: --flag must be ...`` and exits with status 2)."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, bounds: Range, **kwargs: Any) -> None:
        self.bounds = bounds
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        setattr(namespace, self.dest, self.bounds.check(values, option or self.dest))


def number_argument(parser: argparse.ArgumentParser, flag: str, bounds: Range, **kwargs: Any) -> None:
    """``parser.add_argument(flag, ...)`` for a number checked against ``bounds`` as it is parsed; the help
    text gains the accepted range."""
    kwargs["help"] = f"{kwargs.get('help', '')} ({bounds.describe()})".strip()
    parser.add_argument(flag, type=int if bounds.integer else float, action=_CheckedNumber, bounds=bounds, **kwargs)


L2 = Range(0.0, 1e6, "a penalty such as 1 (deferral) or 100 (guidelines); above 1e6 it shrinks every weight to 0")
"""The L2 penalty of a logistic model."""
TARGET_ERROR = Range(1e-4, 1.0, "the largest error rate among allowed answers you accept, e.g. 0.1", high_open=True)
"""Risk control: the largest error among allowed answers (below 1e-4 no realistic calibration set certifies it)."""
DELTA = Range(1e-6, 1.0, "the probability that the guarantee may fail, e.g. 0.1 or 0.05", high_open=True)
"""Risk control: the allowed probability that the error bound fails."""
TARGET_FPR = Range(1e-4, 1.0, "the false-positive rate on benign requests you accept, e.g. 0.05", high_open=True)
"""Harm detector: the target false-positive rate on benign requests."""
FRACTION = Range(0.0, 1.0, "a share such as 0.3", low_open=True, high_open=True)
"""A share of the data held out (strictly between 0 and 1)."""
FOLDS = Range(0, 100, "0 (no cross-validation) or a number of folds such as 5", integer=True)
"""Cross-validation folds (0: none)."""
SEED = Range(0, 2**32 - 1, "any integer from 0 to 4294967295", integer=True)
"""A random seed."""
WEIGHT = Range(0.0, 1e6, "a positive weight such as 1 (how much the request counts in fitting)", low_open=True)
"""The fitting weight of a labelled request."""
LOGPROB_TOLERANCE = 1e-4
"""A log-probability above 0 is a probability above 1; providers round, so allow this much above 0."""
LOGPROB = Range(-1e6, LOGPROB_TOLERANCE, "a model's natural-log probability: finite and <= 0")
"""A token log-probability read from a file (the small tolerance above 0 is for providers' rounding)."""
MAX_REQUESTS = Range(1, 1_000_000, "how many request cards a report shows, e.g. 1000", integer=True)
"""Report: the number of requests shown as cards."""
