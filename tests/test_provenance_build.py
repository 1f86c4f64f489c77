"""The index build's parts: SA-IS suffix arrays, the fast tokenizer path and block vocabularies."""

from __future__ import annotations

import json

import numpy as np
import pydivsufsort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails_uq.provenance.index import tokenize_block
from guardrails_uq.provenance.suffix import native, suffix_array
from guardrails_uq.provenance.tokenize import normalize, token_line, tokenize, tokens_of


def naive_suffix_array(tokens: list[int]) -> list[int]:
    return sorted(range(len(tokens)), key=lambda i: tokens[i:])


def test_the_c_extension_is_built() -> None:
    assert native(), "guardrails_uq.provenance._sais is missing: reinstall with a C compiler (pip install -e .)"


@settings(max_examples=200, deadline=None)
@given(tokens=st.lists(st.integers(0, 6), max_size=80))
def test_suffix_array_is_the_sorted_suffixes(tokens: list[int]) -> None:
    got = suffix_array(np.array(tokens, dtype=np.int32), 7)
    assert got.dtype == np.int32
    assert got.tolist() == naive_suffix_array(tokens)


@pytest.mark.parametrize("alphabet", [3, 300, 70_000, 2_000_000])
def test_suffix_array_matches_divsufsort_on_zipf_text(alphabet: int) -> None:
    rng = np.random.default_rng(alphabet)
    tokens = ((rng.zipf(1.2, 200_000) - 1) % alphabet).astype(np.int32)
    tokens[rng.integers(0, len(tokens), 50)] = 0  # document separators
    tokens[1000:3000] = tokens[5000:7000]  # a long repeat
    assert np.array_equal(suffix_array(tokens, alphabet), pydivsufsort.divsufsort(tokens))


@pytest.mark.parametrize(
    ("tokens", "alphabet", "message"),
    [([0, 5], 5, r"\[0, 5\)"), ([-1, 2], 5, r"\[0, 5\)"), ([[1, 2]], 5, "1-D")],
)
def test_suffix_array_refuses_bad_input(tokens: list, alphabet: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        suffix_array(np.array(tokens, dtype=np.int32), alphabet)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
    | st.text(alphabet=st.characters(max_codepoint=127))
)
def test_the_fast_tokenizer_path_gives_the_same_tokens(text: str) -> None:
    normalized = normalize(text)
    assert token_line(normalized).split() == [t.encode() for t in tokens_of(normalized)]


def test_a_block_vocabulary_gives_every_document_its_tokens() -> None:
    texts = [
        "The quick brown fox, again: THE QUICK brown fox!",
        "",
        "Caf\u00e9 na\u00efve \u0130stanbul \u03a3\u03bf\u03c6\u03af\u03b1 x\u200by \uff21\uff22\uff23",
        "supercalifragilistic supercalifragilistic 12345678 123456789 a_b_c **bold** <b>tag</b>",
        "\u3053\u308c\u306f\u65e5\u672c\u8a9e\u306e\u6587\u3067\u3059 and more words",
    ]
    lines = [(n, json.dumps({"id": f"d{n}", "text": t}).encode()) for n, t in enumerate(texts, start=1)]
    doc_ids, words, ids, lengths = tokenize_block("corpus.jsonl", lines)
    assert doc_ids == [f"d{n}" for n in range(1, 6)]
    assert len(set(words)) == len(words) and "" not in words
    assert ids.dtype == np.int32 and ids.min() == 0 and ids.max() == len(words)
    vocabulary = np.array(["", *words], dtype=object)
    got = vocabulary[ids].tolist()
    expected = [token for t in texts for token in [*tokenize(t), ""]]
    assert got == expected
    assert lengths.tolist() == [len(tokenize(t)) + 1 for t in texts]


def test_a_lookup_worker_loads_some_shards_with_the_global_counts(tmp_path) -> None:
    from guardrails_uq import InputError
    from guardrails_uq.provenance import CorpusIndex, build_index

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"doc {i} " + "word " * i}) + "\n" for i in range(40)))
    build_index(corpus, tmp_path / "idx", shard_tokens=100)
    whole = CorpusIndex.load(tmp_path / "idx")
    part = CorpusIndex.load(tmp_path / "idx", shards=[1, 2])
    assert len(whole.shards) > 3 and [s.name for s in part.shards] == ["shard-00001", "shard-00002"]
    assert np.array_equal(part.counts, whole.counts) and part.total == whole.total
    (tmp_path / "idx" / "shard-00000" / "sa.npy").write_bytes(b"damaged")  # not part of this worker's load
    CorpusIndex.load(tmp_path / "idx", shards=[1])
    with pytest.raises(InputError, match="no shard 99"):
        CorpusIndex.load(tmp_path / "idx", shards=[99])
