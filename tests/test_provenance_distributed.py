"""The provenance index on Ray (guardrails_uq.provenance.distributed), on a local Ray cluster: shards built
as Ray tasks give the local build's index, and actors serving blocks of shards give find_spans' answers."""

from __future__ import annotations

import gzip
import itertools
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from guardrails_uq import ArtifactError, GuardrailsError, InputError
from guardrails_uq.provenance import CorpusIndex, build_index, find_spans, score
from guardrails_uq.provenance.corpus import read_line_blocks
from guardrails_uq.provenance.distributed import (
    RayCorpusIndex,
    ShardLookup,
    _range_lines,
    build_index_ray,
    merge_document_frequencies,
    merge_partial_spans,
    plan_ranges,
    shard_groups,
)
from guardrails_uq.provenance.synthetic import edit_words
from guardrails_uq.provenance.tokenize import tokenize

#: Tests on the local Ray cluster: it takes ~5 s to start and its workers ~1 s each. The merge and the byte
#: ranges are also tested without Ray, in the fast suite.
on_ray = pytest.mark.slow

WORDS = [f"w{i}" for i in range(400)] + ["café", "naïve", "straße", "東京", "İstanbul", "ﬁre", "x"]
#: Passages repeated across many documents: spans with many occurrences in several shards.
PASSAGES = [" ".join(random.Random(k).choices(WORDS[:60], k=random.Random(k).randint(12, 30))) for k in range(8)]


def make_docs(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        words = [WORDS[min(int(rng.paretovariate(1.1)) - 1, len(WORDS) - 1)] for _ in range(rng.randint(5, 90))]
        text = " ".join(words)
        if rng.random() < 0.4:
            cut = rng.randint(0, len(words))
            text = " ".join(words[:cut]) + ", " + rng.choice(PASSAGES) + ". " + " ".join(words[cut:])
        docs.append(text)
    return docs


def write_jsonl(path: Path, docs: list[str], *, seed: int = 0) -> Path:
    """One document a line; some without an id (named line-N), some blank lines, CRLF on a few."""
    rng = random.Random(seed)
    lines = []
    for i, text in enumerate(docs):
        record = {"text": text} if i % 3 == 0 else {"id": f"doc-{seed}-{i}", "text": text}
        lines.append(json.dumps(record, ensure_ascii=rng.random() < 0.5) + ("\r\n" if i % 17 == 0 else "\n"))
        if rng.random() < 0.05:
            lines.append("\n" if rng.random() < 0.5 else "   \n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def queries(docs: list[str], seed: int) -> list[str]:
    """Copies of corpus passages inside novel text, edited copies, and novel text."""
    rng = random.Random(seed)
    out = []
    for _ in range(40):
        words = rng.choice(docs).split()
        a = rng.randint(0, max(0, len(words) - 10))
        copy = " ".join(words[a : a + rng.randint(6, 60)])
        out.append(f"Sure, here it is: {copy} and then qqnovel {' '.join(rng.choices(WORDS, k=5))}")
    for _ in range(15):
        out.append(edit_words(rng, " ".join(rng.choice(docs).split()[:70]), 0.1))
    for _ in range(15):
        out.append(" ".join(rng.choices(WORDS, k=rng.randint(1, 80))))
    out.append(PASSAGES[0] + " " + PASSAGES[1] + " " + PASSAGES[0])
    out += ["", "   ", "!!"]
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    docs = make_docs(500, seed=1)
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", docs), docs


@pytest.fixture(scope="module")
def local_index(corpus, tmp_path_factory) -> CorpusIndex:
    out = tmp_path_factory.mktemp("local") / "idx"
    build_index(corpus[0], out, shard_tokens=4_000, workers=0)
    index = CorpusIndex.load(out)
    assert len(index.shards) >= 5
    return index


@pytest.fixture(scope="module")
def ray_built(ray_cluster, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "idx"
    report = build_index_ray(corpus[0], out, shard_bytes=corpus[0].stat().st_size // 5)
    return out, report


def words_of(index: CorpusIndex) -> np.ndarray:
    return np.array(["", *sorted(index.vocab, key=index.vocab.__getitem__)], dtype=object)


@on_ray
def test_a_ray_build_loads_and_holds_the_local_builds_documents_tokens_and_counts(ray_built, local_index) -> None:
    out, report = ray_built
    index = CorpusIndex.load(out)
    assert report.shards == len(index.shards) == 5 and report.ranges == 5 and report.resumed_shards == 0
    assert report.documents == index.manifest["documents"] == local_index.manifest["documents"]
    assert report.tokens == index.total == local_index.total
    assert set(index.vocab) == set(local_index.vocab)
    for word, number in index.vocab.items():
        assert index.counts[number] == local_index.counts[local_index.vocab[word]], word
    # the same documents in the same order, the same ids ("line-N": N the line in the file), the same tokens
    assert [d for s in index.shards for d in s.doc_ids] == [d for s in local_index.shards for d in s.doc_ids]
    assert "line-1" in index.shards[0].doc_ids
    ray_words, local_words = words_of(index), words_of(local_index)
    assert np.array_equal(
        np.concatenate([ray_words[s.tokens] for s in index.shards]),
        np.concatenate([local_words[s.tokens] for s in local_index.shards]),
    )


@on_ray
@pytest.mark.parametrize("min_span", [5, 8])
def test_a_ray_built_index_finds_what_the_local_index_finds(ray_built, local_index, corpus, min_span) -> None:
    index = CorpusIndex.load(ray_built[0])
    found = 0
    for text in queries(corpus[1], seed=min_span):
        ours = [(s.start, s.end, s.count, s.bci, s.text) for s in find_spans(index, text, min_span=min_span)]
        theirs = [(s.start, s.end, s.count, s.bci, s.text) for s in find_spans(local_index, text, min_span=min_span)]
        assert ours == theirs, text
        found += bool(ours)
    assert found > 30


@pytest.mark.parametrize("groups", [1, 3, 100])
def test_merging_the_spans_of_shard_groups_gives_find_spans_exactly(local_index, corpus, groups) -> None:
    """In-process ShardLookup per group: every grouping, several max_sources (SA order vs position order)."""
    path = str(local_index.path)
    lookups = [ShardLookup(path, group, verify="size") for group in shard_groups(len(local_index.shards), groups)]
    many = 0
    for max_sources in (1, 2, 5):
        for text in queries(corpus[1], seed=groups):
            expected = find_spans(local_index, text, max_sources=max_sources)
            parts = [lookup.find([text], 8, max_sources)[0] for lookup in lookups]
            assert merge_partial_spans(parts, max_sources) == expected, text
            many += any(s.count > max_sources for s in expected)
    assert many > 10, "the queries must exercise spans with more occurrences than sources"


def grams_of(index: CorpusIndex, texts: list[str], gram: int = 4) -> np.ndarray:
    rows = [
        np.lib.stride_tricks.sliding_window_view(index.ids(tokenize(t)), gram)
        for t in texts
        if len(tokenize(t)) >= gram
    ]
    return np.concatenate(rows)


@pytest.mark.parametrize("limit", [score.SCAN_LIMIT, 3])
def test_merged_document_frequencies_are_the_whole_indexs(local_index, corpus, monkeypatch, limit) -> None:
    monkeypatch.setattr(score, "SCAN_LIMIT", limit)  # 3: many n-grams are "formulaic" in some shard, not in others
    grams = grams_of(local_index, queries(corpus[1], seed=3) + PASSAGES)
    expected = score.document_frequency(local_index, grams)
    for groups in (1, 2, 4):
        lookups = [
            ShardLookup(str(local_index.path), g, verify="size") for g in shard_groups(len(local_index.shards), groups)
        ]
        merged = merge_document_frequencies([lookup.document_frequency(grams) for lookup in lookups], len(grams))
        assert np.array_equal(merged, expected)
    saturated = expected == np.iinfo(np.int64).max
    assert (expected > 1).sum() > 50 and (saturated.any() if limit == 3 else not saturated.any())


@on_ray
def test_ray_actors_answer_exactly_like_find_spans_on_the_whole_index(ray_cluster, local_index, corpus) -> None:
    texts = queries(corpus[1], seed=7)
    with RayCorpusIndex(local_index.path, actors=3, verify="size", num_cpus=0.5) as served:
        assert [len(g) for g in served.groups] == [len(local_index.shards) // 3 + (i < len(local_index.shards) % 3)
                                                   for i in range(3)]  # fmt: skip
        for max_sources in (2, 5):
            batch = served.find_spans_batch(texts, max_sources=max_sources)
            assert batch == [find_spans(local_index, t, max_sources=max_sources) for t in texts]
        assert served.find_spans(texts[0]) == find_spans(local_index, texts[0])
        assert served.find_spans(texts[1], min_span=5) == find_spans(local_index, texts[1], min_span=5)
        grams = grams_of(local_index, texts)
        assert np.array_equal(served.document_frequency(grams), score.document_frequency(local_index, grams))
        memory = served.memory()
        assert len(memory) == 3 and all(m["VmRSS"] > 0 for m in memory)
    with pytest.raises(GuardrailsError, match="closed"):
        served.find_spans("anything")


@on_ray
def test_a_rerun_reuses_finished_shards_and_rebuilds_the_others(ray_cluster, corpus, tmp_path) -> None:
    out = tmp_path / "idx"
    first = build_index_ray(corpus[0], out, shard_bytes=corpus[0].stat().st_size // 4)
    manifest = json.loads((out / "manifest.json").read_text())
    again = build_index_ray(corpus[0], out, shard_bytes=corpus[0].stat().st_size // 4)
    assert again.resumed_shards == again.shards == first.shards == 4
    (out / "shard-00001" / "shard.json").unlink()  # as if its task died before the end
    sa = out / "shard-00002" / "sa.npy"
    data = bytearray(sa.read_bytes())
    data[-4:] = b"\0\0\0\0"
    sa.write_bytes(bytes(data))  # damaged, same size
    (out / "shard-00009").mkdir()  # left over from a build with more shards
    third = build_index_ray(corpus[0], out, shard_bytes=corpus[0].stat().st_size // 4)
    assert third.resumed_shards == 2 and not (out / "shard-00009").exists()
    rebuilt = json.loads((out / "manifest.json").read_text())
    assert rebuilt["shards"] == manifest["shards"] and rebuilt["files"] == manifest["files"]
    CorpusIndex.load(out)
    # other byte ranges: nothing is reused
    assert build_index_ray(corpus[0], out, shard_bytes=corpus[0].stat().st_size // 3).resumed_shards == 0


@on_ray
def test_several_files_and_a_gz_file_each_number_their_own_lines(ray_cluster, tmp_path) -> None:
    docs = make_docs(120, seed=3)
    plain = write_jsonl(tmp_path / "a.jsonl", docs[:80], seed=3)
    packed = tmp_path / "b.jsonl.gz"
    packed.write_bytes(gzip.compress(write_jsonl(tmp_path / "b.jsonl", docs[80:], seed=4).read_bytes()))
    report = build_index_ray([plain, packed], tmp_path / "idx", shard_bytes=plain.stat().st_size // 2)
    index = CorpusIndex.load(tmp_path / "idx")
    assert report.documents == 120 and report.shards == 3  # two ranges of a.jsonl, b.jsonl.gz whole
    assert index.shards[-1].doc_ids[0] == "line-1" and index.shards[0].doc_ids[0] == "line-1"
    local = tmp_path / "local"
    build_index(tmp_path / "b.jsonl", local)
    assert index.shards[-1].doc_ids == CorpusIndex.load(local).shards[0].doc_ids
    with pytest.raises(InputError, match=r"b\.jsonl\.gz.*\.gz file is one shard.*decompress"):
        build_index_ray([plain, packed], tmp_path / "idx2", shard_bytes=packed.stat().st_size - 1)


def test_line_ranges_cover_every_line_once_with_its_number(tmp_path) -> None:
    """No Ray: the byte ranges, cut anywhere, give read_line_blocks' lines and numbers (long lines, blank
    lines, no final newline)."""
    rng = random.Random(5)
    lines = []
    for _ in range(300):
        roll = rng.random()
        lines.append("" if roll < 0.1 else "  " if roll < 0.15 else json.dumps({"text": "w " * rng.randint(0, 3000)}))
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + ("\n" if rng.random() < 0.5 else ""))
    expected = [line for _, block, _ in read_line_blocks(path) for line in block]
    expected = [(n, raw.rstrip(b"\n")) for n, raw in expected]
    for shard_bytes in (1, 7, 1000, 6000, 50_000, 10**9):
        pieces = plan_ranges([path], shard_bytes)
        got, first = [], 1
        for piece in pieces:
            passed = 0
            for block, lines in _range_lines(piece, first):
                got.extend(block)
                passed = lines
            first += passed
        assert got == expected, shard_bytes
        assert pieces[0].start == 0 and pieces[-1].end == path.stat().st_size
        assert all(a.end == b.start for a, b in itertools.pairwise(pieces))


@on_ray
def test_bad_inputs_fail_with_clear_errors(ray_cluster, tmp_path) -> None:
    out = tmp_path / "idx"
    with pytest.raises(InputError, match=r"missing\.jsonl: corpus file not found"):
        build_index_ray(tmp_path / "missing.jsonl", out)
    with pytest.raises(InputError, match="no corpus files"):
        build_index_ray([], out)
    with pytest.raises(InputError, match="is a folder"):
        build_index_ray(tmp_path, out)
    (tmp_path / "c.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    with pytest.raises(InputError, match=r"\.zst files are not supported"):
        build_index_ray(tmp_path / "c.jsonl.zst", out)
    (tmp_path / "blank.jsonl").write_text("\n  \n\n")
    with pytest.raises(InputError, match="no documents"):
        build_index_ray(tmp_path / "blank.jsonl", out)
    with pytest.raises(InputError, match="shard_bytes"):
        build_index_ray(tmp_path / "blank.jsonl", out, shard_bytes=0)
    good = [json.dumps({"text": f"document {i} " * 20}) for i in range(60)]
    good[47] = '{"text": "unterminated'
    (tmp_path / "bad.jsonl").write_text("\n".join(good) + "\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:48: invalid JSON") as caught:
        build_index_ray(tmp_path / "bad.jsonl", out, shard_bytes=500)  # line 48 is in a later range
    assert type(caught.value) is InputError and caught.value.line == 48
    assert not (out / "manifest.json").exists()
    with pytest.raises(ArtifactError, match="not found"):
        RayCorpusIndex(tmp_path / "no-index")


def test_without_ray_the_error_says_how_to_install(tmp_path, monkeypatch, local_index) -> None:
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "a b c"}) + "\n")
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(GuardrailsError, match=r"needs Ray: pip install 'guardrails-uq\[ray\]'"):
        build_index_ray(tmp_path / "c.jsonl", tmp_path / "idx")
    with pytest.raises(GuardrailsError, match="needs Ray"):
        RayCorpusIndex(local_index.path)


@on_ray
def test_an_actor_that_cannot_load_its_shards_fails_the_start(ray_cluster, local_index, tmp_path) -> None:
    copy = tmp_path / "idx"
    shutil.copytree(local_index.path, copy)
    (copy / "shard-00003" / "sa.npy").write_bytes(b"damaged")
    with pytest.raises(ArtifactError, match=r"shard-00003.sa\.npy.*damaged"):
        RayCorpusIndex(copy, actors=2, verify="size", num_cpus=0.5)
    with pytest.raises(InputError, match="actors"):
        RayCorpusIndex(copy, actors=0)


@on_ray
def test_the_cli_builds_with_ray_and_refuses_mixed_shard_options(
    ray_cluster, corpus, local_index, tmp_path, capsys
) -> None:
    from guardrails_uq.cli import main

    out = tmp_path / "idx"
    size = str(corpus[0].stat().st_size // 3)
    args = ["provenance", "index", "--corpus", str(corpus[0]), "-o", str(out), "--quiet"]
    assert main([*args, "--engine", "ray", "--shard-bytes", size]) == 0
    index = CorpusIndex.load(out)
    assert len(index.shards) >= 3 and index.manifest["documents"] == local_index.manifest["documents"]
    text = queries(corpus[1], seed=3)[0]
    assert [(s.start, s.end, s.count) for s in find_spans(index, text)] == [
        (s.start, s.end, s.count) for s in find_spans(local_index, text)
    ]
    assert main([*args, "--shard-bytes", size]) != 0
    assert "--shard-bytes is for --engine ray" in capsys.readouterr().err
    assert main([*args, "--engine", "ray", "--shard-size", "100"]) != 0
    assert "use --shard-bytes" in capsys.readouterr().err
