"""Policy section ``guidelines`` (Guide-Align): registry entry and configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from ..checks import CheckDeps, CheckSpec, SignalSpec
from ..policy.schema import StrictModel


class GuidelinesConfig(StrictModel):
    """Retrieve the written guidelines that apply to a request and inject them into the prompt."""

    library: str = Field(description="Guideline library, YAML or JSONL (relative to the policy).")
    top_k: int = Field(default=4, ge=1, le=50, description="Most guidelines injected (the paper uses 6).")
    min_score: float = Field(default=0.35, ge=-1, le=1, description="Least cosine similarity to the request.")
    dedup: float = Field(default=0.9, gt=0, le=1, description="Drop a candidate this similar to a kept guideline.")
    inject: bool = Field(default=True, description="Rewrite the prompt (a system message); false: signals only.")


def _build(config: Any, base_dir: Path, deps: CheckDeps) -> Any:
    from .check import GuidelinesCheck

    path = Path(config.library)
    return GuidelinesCheck.from_config(config, path if path.is_absolute() else base_dir / path, deps.embedder)


SPEC = CheckSpec(
    name="guidelines",
    phase="input",
    config=GuidelinesConfig,
    signals={
        "guidelines.count": SignalSpec("integer", "Guidelines retrieved for the request (0 to top_k)."),
        "guidelines.top_score": SignalSpec(
            "number", "Similarity of the best guideline (0 when none passed min_score)."
        ),
        "guidelines.ids": SignalSpec("list", "Ids of the retrieved guidelines, best first."),
        "guidelines.categories": SignalSpec("list", "Their categories (with repeats), best first."),
    },
    build=_build,
    description="Guide-Align: retrieve applicable guidelines and inject them into the prompt.",
    artifacts=lambda config: {"library": config.library},
)
