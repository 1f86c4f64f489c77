"""JSON artifacts (calibrations, deferral models): atomic writes, checksums, and loading that refuses
missing, damaged, edited or foreign files with an ArtifactError saying how to rebuild them.

The checksum (``sha256``) covers every other field of the artifact, header included, so changing a
``score_kind``, a ``direction``, ``n`` or a threshold is refused exactly like a flipped bit: an artifact's
numbers only mean something together with the header that says how they were made.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import ArtifactError

CHECKSUM_FIELD = "sha256"


def digest(value: Any) -> str:
    """SHA-256 of a JSON-serialisable value (keys sorted, strict JSON: no NaN or infinities)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, allow_nan=False).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in blocks; OSError when it cannot be read)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def labelled_digest(rows: Iterable[tuple[int, str]]) -> str:
    """SHA-256 over (label, text) rows, order-independent: names the labelled data a calibration was fitted on
    (its ``data_sha256``), so that a test can tell whether a shipped artifact is fitted on the shipped data."""
    lines = sorted(f"{int(label)}\t{text}" for label, text in rows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def seal(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its checksum over every other field."""
    body = {k: v for k, v in data.items() if k != CHECKSUM_FIELD}
    return {**body, CHECKSUM_FIELD: digest(body)}


def write_artifact(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` sealed with its checksum as indented strict JSON, atomically (a reader never sees
    half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(seal(data), indent=1, allow_nan=False), encoding="utf-8")
        tmp.replace(path)
    except (IsADirectoryError, NotADirectoryError, FileNotFoundError, PermissionError) as exc:
        raise ArtifactError(
            path, f"cannot write the artifact: {exc.strerror or exc}", fix="pass a writable file path"
        ) from None
    return path


def read_artifact(path: str | Path, *, kind: str, version: int, what: str, fix: str) -> dict[str, Any]:
    """The artifact at ``path`` after checking its kind, format version and the checksum over all its fields."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(path, f"{what} not found", fix=fix) from None
    except IsADirectoryError:
        raise ArtifactError(path, f"{what} path is a directory, not a file", fix=fix) from None
    except PermissionError:
        raise ArtifactError(path, f"{what} is not readable (permission denied)", fix=fix) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(path, f"{what} is not valid JSON: {exc}", fix=fix) from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise ArtifactError(path, f"not a {what} (kind {kind!r} expected)", fix=fix)
    if data.get("format") != version:
        raise ArtifactError(
            path, f"{what} has format {data.get('format')!r}; this version reads format {version}", fix=fix
        )
    try:
        sealed = digest({k: v for k, v in data.items() if k != CHECKSUM_FIELD})
    except ValueError:  # NaN or infinity in the file: never written by us
        sealed = None
    if sealed is None or sealed != data.get(CHECKSUM_FIELD):
        raise ArtifactError(path, f"{what} is damaged or was edited (checksum mismatch)", fix=fix)
    return data


def field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], path: str | Path, fix: str) -> Any:
    """``data[name]`` when it has type ``kind`` (bool never counts as a number); ArtifactError otherwise."""
    value = data.get(name)
    number_wanted = kind in (int, float) or (isinstance(kind, tuple) and (int in kind or float in kind))
    if not isinstance(value, kind) or (number_wanted and isinstance(value, bool)):
        raise ArtifactError(path, f"field {name!r} is missing or not a {getattr(kind, '__name__', kind)}", fix=fix)
    return value


def sorted_probabilities(values: Any, name: str, path: str | Path, fix: str) -> Any:
    """``values`` as a float64 numpy array when it is a sorted list of probabilities (calibration scores);
    ArtifactError naming ``name`` otherwise."""
    import numpy as np

    if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ArtifactError(path, f"{name} must be a list of numbers", fix=fix)
    array = np.asarray(values, dtype=np.float64)
    if len(array) and (np.any(np.diff(array) < 0) or array.min() < 0 or array.max() > 1):
        raise ArtifactError(path, f"{name} must be sorted probabilities", fix=fix)
    return array


def calibrated_threshold(detector: Any, target_fpr: float | None, fix: str) -> float:
    """``detector.threshold`` at ``target_fpr`` (None: the detector's own target) for a calibrated detector
    (``threshold``, ``target_fpr``, ``loaded_from``); ArtifactError naming its artifact, with ``fix``, when its
    benign examples are too few for that target (the InputError ``threshold`` raises)."""
    from .errors import InputError

    try:
        return float(detector.threshold(detector.target_fpr if target_fpr is None else target_fpr))
    except InputError as exc:
        raise ArtifactError(detector.loaded_from, str(exc), fix=f"state a larger target_fpr, or {fix}") from None
