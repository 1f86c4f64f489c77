"""Guideline libraries (Guide-Align): YAML or JSONL lists of guidelines, validated with file:line errors.

YAML form::

    categories: [weapons, cybercrime, quality]      # optional: when present, every category must be listed
    guidelines:
      - id: weapons-1
        title: No weapon construction
        text: Do not give instructions ...
        category: weapons
        severity: high                              # optional: low | medium | high | critical
        tags: [violence]                            # optional
        sources: ["prompt-17"]                      # optional: the prompts that produced it (builder)

JSONL form: one guideline object per line (no category list).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InputError
from ..policy.source import read_yaml

Severity = Literal["low", "medium", "high", "critical"]


class Guideline(BaseModel):
    """One written guideline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Unique id, recorded in guidelines.ids.")
    title: str = Field(min_length=1, description="Short title; 'title: text' is what is embedded.")
    text: str = Field(description="The guideline, as injected into the prompt.")
    category: str = Field(min_length=1, description="Category, published in guidelines.categories.")
    severity: Severity | None = Field(default=None, description="Optional: low, medium, high or critical.")
    tags: list[str] = Field(default_factory=list, description="Optional labels.")
    sources: list[str] = Field(default_factory=list, description="Optional: the prompts that produced it (builder).")

    @field_validator("text")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty")
        return value

    @property
    def document(self) -> str:
        """What is embedded: "title: text"."""
        return f"{self.title}: {self.text}"


class LibraryFile(BaseModel):
    """A YAML library (the JSON Schema's source; :meth:`GuidelineLibrary.load` validates with file:line errors)."""

    model_config = ConfigDict(extra="forbid")

    categories: list[str] | None = Field(
        default=None, description="Optional: when present, every guideline's category must be listed."
    )
    guidelines: list[Guideline] = Field(min_length=1, description="The guidelines; ids unique.")


class GuidelineLibrary:
    """A validated list of guidelines with a content hash (the index is rebuilt when it changes)."""

    def __init__(
        self, guidelines: Sequence[Guideline], *, categories: Sequence[str] | None = None, path: Path | None = None
    ):
        self.guidelines = list(guidelines)
        self.categories = list(categories) if categories is not None else sorted({g.category for g in guidelines})
        self.path = path
        self._by_id = {g.id: g for g in self.guidelines}

    def __len__(self) -> int:
        return len(self.guidelines)

    def __iter__(self) -> Iterator[Guideline]:
        return iter(self.guidelines)

    def __getitem__(self, guideline_id: str) -> Guideline:
        return self._by_id[guideline_id]

    @property
    def content_hash(self) -> str:
        """SHA-256 of the embedded texts and ids, in order (what the index depends on)."""
        digest = hashlib.sha256()
        for g in self.guidelines:
            digest.update(json.dumps([g.id, g.document]).encode())
        return digest.hexdigest()

    @classmethod
    def load(cls, path: str | Path) -> GuidelineLibrary:
        """Read and validate a YAML or JSONL library; InputError names the file, line and field."""
        path = Path(path)
        if not path.exists():
            raise InputError("guideline library not found", source=str(path))
        if path.suffix == ".jsonl":
            return cls._load_jsonl(path)
        source = read_yaml(path)
        data = source.data
        declared = None
        items = data
        if isinstance(data, dict):
            unknown = set(data) - {"categories", "guidelines"}
            if unknown:
                raise InputError(
                    f"unknown keys {sorted(unknown)} (expected categories, guidelines)",
                    source=str(path),
                    line=source.line_of(()),
                )
            declared = data.get("categories")
            items = data.get("guidelines")
            if declared is not None and (
                not isinstance(declared, list) or not all(isinstance(c, str) for c in declared)
            ):
                raise InputError(
                    "categories must be a list of names", source=str(path), line=source.line_of(("categories",))
                )
        if not isinstance(items, list) or not items:
            raise InputError(
                "a library needs a non-empty list of guidelines", source=str(path), line=source.line_of(())
            )
        prefix = ("guidelines",) if isinstance(data, dict) else ()
        guidelines = []
        for index, item in enumerate(items):
            guidelines.append(_validate(item, str(path), source.line_of((*prefix, index))))
        return cls._checked(guidelines, declared, path, lambda i: source.line_of((*prefix, i)))

    @classmethod
    def _load_jsonl(cls, path: Path) -> GuidelineLibrary:
        guidelines, lines = [], []
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    item = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise InputError(f"not a UTF-8 JSON object: {exc}", source=str(path), line=number) from None
                guidelines.append(_validate(item, str(path), number))
                lines.append(number)
        if not guidelines:
            raise InputError("a library needs at least one guideline", source=str(path))
        return cls._checked(guidelines, None, path, lambda i: lines[i])

    @classmethod
    def _checked(cls, guidelines: list[Guideline], declared: list[str] | None, path: Path, line_of) -> GuidelineLibrary:
        seen: dict[str, int] = {}
        for index, g in enumerate(guidelines):
            if g.id in seen:
                raise InputError(
                    f"duplicate guideline id {g.id!r} (first at line {line_of(seen[g.id])})",
                    source=str(path),
                    line=line_of(index),
                )
            seen[g.id] = index
            if declared is not None and g.category not in declared:
                raise InputError(
                    f"guideline {g.id!r} has category {g.category!r}, not in the declared categories {declared}",
                    source=str(path),
                    line=line_of(index),
                )
        return cls(guidelines, categories=declared, path=path)

    def save(self, path: str | Path) -> Path:
        """Write as YAML (with the category list) or JSONL, by suffix."""
        import yaml

        path = Path(path)
        items = [g.model_dump(exclude_defaults=True) for g in self.guidelines]
        if path.suffix == ".jsonl":
            path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
        else:
            path.write_text(
                yaml.safe_dump(
                    {"categories": self.categories, "guidelines": items}, sort_keys=False, allow_unicode=True
                ),
                encoding="utf-8",
            )
        return path


def _validate(item: object, source: str, line: int | None) -> Guideline:
    try:
        return Guideline.model_validate(item)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "guideline"
        raise InputError(
            f"{where}: {err['msg']} (each guideline needs id, title, text, category)", source=source, line=line
        ) from None
