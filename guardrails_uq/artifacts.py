"""JSON artifacts (calibrations, deferral models): atomic writes, checksums, and loading that refuses
missing, damaged or foreign files with an ArtifactError saying how to rebuild them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import ArtifactError


def digest(value: Any) -> str:
    """SHA-256 of a JSON-serialisable value (keys sorted), as stored beside it in an artifact."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def write_artifact(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path


def read_artifact(path: str | Path, *, kind: str, version: int, what: str, fix: str, checked: str) -> dict[str, Any]:
    """The artifact at ``path`` after checking its kind, format version and the checksum of field ``checked``
    (stored as ``<checked>_sha256``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(path, f"{what} not found", fix=fix) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(path, f"{what} is not valid JSON: {exc}", fix=fix) from None
    if not isinstance(data, dict) or data.get("kind") != kind or data.get("format") != version:
        raise ArtifactError(path, f"not a {what} of a supported format", fix=fix)
    if digest(data.get(checked)) != data.get(f"{checked}_sha256"):
        raise ArtifactError(path, f"{what} is damaged (checksum mismatch)", fix=fix)
    return data
