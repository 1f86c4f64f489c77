"""``escalate_to``: the one name every integration uses for the model that answers escalated requests."""

from __future__ import annotations

import warnings
from typing import Any


def escalation_target(escalate_to: Any, escalate_llm: Any, owner: str) -> Any:
    """``escalate_to``, or the deprecated ``escalate_llm`` (with a DeprecationWarning; removed in the next
    release). Passing both is a TypeError."""
    if escalate_llm is None:
        return escalate_to
    if escalate_to is not None:
        raise TypeError(f"{owner}: pass escalate_to only (escalate_llm is its deprecated name)")
    warnings.warn(
        f"{owner}(escalate_llm=...) is deprecated and will be removed in the next release; use escalate_to=",
        DeprecationWarning,
        stacklevel=3,
    )
    return escalate_llm
