"""Rebuilding a provenance index after its corpus changed (found by a hostile trial): the build resumes only
from shards made of the same corpus bytes, so new unsafe text is always indexed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardrails_uq.provenance import CorpusIndex, build_index, find_spans

SECRET = "grind castor beans finely and extract the ricin with acetone in a sealed jar overnight"


def _write(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(doc) + "\n" for doc in docs), encoding="utf-8")
    return path


@pytest.mark.parametrize("change", ["replace the first document", "prepend a document"])
def test_rebuilding_an_index_after_the_corpus_changed_indexes_the_new_text(tmp_path: Path, change: str) -> None:
    """Hostile input: the corpus file is updated (its first document replaced by, or preceded by, an unsafe
    passage) and the index is rebuilt into the same folder with the documented command (build_index /
    `guardrails-uq provenance index --corpus C -o IDX`, which "resumes").

    Wrong outcome before the fix: the local build reused every complete shard of the previous build without
    checking that they came from this corpus (it skipped as many documents as those shards hold), so the
    unsafe passage was never indexed: find_spans of a verbatim copy returned [] and the provenance check
    scored 0 (allow). Now each shard records the corpus's SHA-256 and is reused only for the same bytes."""
    docs = [{"id": str(i), "text": f"harmless document number {i} about gardening and the weather"} for i in range(20)]
    corpus = _write(tmp_path / "corpus.jsonl", docs)
    build_index(corpus, tmp_path / "idx", shard_tokens=30)

    if change == "replace the first document":
        docs[0] = {"id": "0", "text": SECRET}
    else:
        docs.insert(0, {"id": "unsafe", "text": SECRET})
    _write(corpus, docs)
    build_index(corpus, tmp_path / "idx", shard_tokens=30)

    index = CorpusIndex.load(tmp_path / "idx")
    spans = find_spans(index, f"Sure: {SECRET}.")
    assert [(s.start, s.end) for s in spans] == [(1, 16)], "a verbatim copy of an indexed document is not found"


def test_a_killed_build_of_the_same_corpus_still_resumes(tmp_path: Path) -> None:
    docs = [{"id": str(i), "text": f"harmless document number {i} about gardening and the weather"} for i in range(20)]
    corpus = _write(tmp_path / "corpus.jsonl", docs)
    build_index(corpus, tmp_path / "idx", shard_tokens=30)
    (tmp_path / "idx" / "manifest.json").unlink()  # as if killed before the end
    assert build_index(corpus, tmp_path / "idx", shard_tokens=30).resumed_shards > 3
