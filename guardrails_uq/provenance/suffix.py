"""Suffix arrays of token-id sequences: SA-IS in the bundled C extension, pydivsufsort without it.

Both give the same array (a suffix array is unique). The extension (``_sais``, built at install time from
sais-lite) sorts the int32 tokens directly in 8 bytes per token plus O(alphabet); pydivsufsort sorts the
tokens' 4-byte encodings as a byte string, which takes about 5x the memory and time.
"""

from __future__ import annotations

import numpy as np

try:
    from . import _sais
except ImportError:  # built without a C compiler: the slower fallback below
    _sais = None  # type: ignore[assignment]  # (no C compiler at install)

#: The largest shard the int32 suffix array can hold.
MAX_TOKENS = 2**31 - 1


def native() -> bool:
    """True when the C extension is available (index builds use it)."""
    return _sais is not None


def suffix_array(tokens: np.ndarray, alphabet: int) -> np.ndarray:
    """The int32 suffix array of ``tokens`` (a 1-D array of ids in [0, ``alphabet``)).

    ValueError when ``tokens`` is not 1-D, holds an id outside [0, alphabet) or has more than
    :data:`MAX_TOKENS` tokens (split the corpus into smaller shards)."""
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be a 1-D array, not shape {tokens.shape}")
    if len(tokens) > MAX_TOKENS:
        raise ValueError(f"{len(tokens)} tokens do not fit an int32 suffix array: use shards of <= {MAX_TOKENS}")
    if len(tokens) and (int(tokens.min()) < 0 or int(tokens.max()) >= alphabet):
        raise ValueError(f"token ids must lie in [0, {alphabet})")
    if _sais is None:
        import pydivsufsort

        return np.asarray(pydivsufsort.divsufsort(tokens.astype(np.int32, copy=False)), dtype=np.int32)
    text = np.ascontiguousarray(tokens, dtype=np.int32)
    out = np.empty(len(text), dtype=np.int32)
    if len(text):
        _sais.suffix_array(text, out, max(int(alphabet), 1))
    return out
