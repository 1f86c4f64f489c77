"""The file formats users write besides the policy, their JSON Schemas, and validation that reports every problem.

Formats (documented with examples in docs/formats.md; schemas shipped in ``policies/schemas/``):

- ``call``: the JSON ``guardrails-uq check --call`` reads (:class:`~guardrails_uq.call.Call`);
- ``cases``: the YAML ``guardrails-uq policy test`` reads (:class:`~guardrails_uq.policy.cases.CasesFile`);
- ``guidelines``: a guideline library, YAML (:class:`~guardrails_uq.guidelines.library.LibraryFile`, or a bare list)
  or JSONL (one guideline a line);
- ``policy``: the policy itself (:func:`guardrails_uq.policy.json_schema`).

:func:`problems` turns a pydantic ValidationError into one line per problem, each naming the field (dotted path)
and the fix, so a file with five mistakes is fixed in one round, not five.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import InputError

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
FORMATS = ("policy", "call", "cases", "guidelines")


def json_schema(kind: str = "policy") -> dict[str, Any]:
    """The JSON Schema of format ``kind`` (one of :data:`FORMATS`), generated from the pydantic models."""
    if kind == "policy":
        from .policy import json_schema as policy_schema

        return policy_schema()
    if kind == "call":
        from .call import Call

        schema, title = Call.model_json_schema(), "guardrails-uq call (check --call)"
    elif kind == "cases":
        from .policy.cases import CasesFile

        schema, title = CasesFile.model_json_schema(), "guardrails-uq policy test cases"
    elif kind == "guidelines":
        from .guidelines.library import Guideline, LibraryFile

        schema = TypeAdapter(LibraryFile | list[Guideline]).json_schema()
        title = "guardrails-uq guideline library (YAML; a JSONL library has one guideline object a line)"
    else:
        raise InputError(f"unknown format {kind!r}: use one of {', '.join(FORMATS)}", source="format")
    return {"$schema": SCHEMA_DIALECT, "title": title, **schema}


def problems(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """One line per validation error of ``model``: ``field.path: problem (got ...); fix: ...``."""
    from .policy.loader import _did_you_mean, _model_at

    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            options = list(owner.model_fields) if owner else []
            lines.append(f"{where}: unknown field; fix: {_did_you_mean(str(loc[-1]), options)}")
            continue
        if kind == "missing":
            lines.append(f"{where}: required field missing; fix: add {str(loc[-1])!r}")
            continue
        got = err.get("input")
        shown = json.dumps(got)[:60] if not isinstance(got, dict | list) else ("an object" if got else "{}")
        ctx = err.get("ctx") or {}
        if "expected" in ctx:
            fix = f"use one of {ctx['expected']}"
        elif kind == "model_type":
            owner = _model_at(model, loc)
            fields = ", ".join(owner.model_fields) if owner else "see the schema"
            fix = f"give an object with fields {fields}"
        else:
            fix = "see docs/formats.md or `guardrails-uq policy schema` for the expected type"
        lines.append(f"{where}: {err['msg']} (got {shown}); fix: {fix}")
    return lines


def read_call(path: str) -> Any:
    """The :class:`~guardrails_uq.call.Call` in the JSON file ``path`` (``-``: stdin); InputError listing every
    problem, each with its field and fix."""
    from .call import Call

    source = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read call file: {exc.strerror}", source=source) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"call file is not UTF-8: {exc}", source=source) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", source=source) from None
    try:
        return Call.model_validate(data)
    except ValidationError as exc:
        found = problems(exc, Call)
        raise InputError(
            f"{len(found)} problem(s) in the call (format: docs/formats.md, schema: `guardrails-uq policy schema "
            "call`):\n  " + "\n  ".join(found),
            source=source,
        ) from None
