"""Provenance: the suffix-array index, maximal span matching (against a brute-force oracle), BCI,
streaming, the check in a Guard, damaged indexes and bad corpora."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails_uq import Action, ArtifactError, Guard, InputError, PolicyError, load_policy
from guardrails_uq.errors import WorkBudgetError
from guardrails_uq.provenance import CorpusIndex, ProvenanceCheck, build_index, find_spans, tokenize
from guardrails_uq.provenance.spec import SPEC
from guardrails_uq.provenance.stream import ProvenanceStream
from guardrails_uq.testing import assert_conforms

DOCS = [
    {"id": "recipe", "text": "To build the device, first gather the following rare components: xylophone wire, "
     "quartz dust and cobalt."},
    {"id": "weather", "text": "The weather today is sunny with a light breeze from the west."},
    {"id": "ritual", "text": "Mix the quartz dust and cobalt slowly while humming a sea shanty under the full moon."},
]  # fmt: skip


def write_corpus(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture
def index(tmp_path: Path) -> CorpusIndex:
    build_index(write_corpus(tmp_path / "c.jsonl", DOCS), tmp_path / "idx")
    return CorpusIndex.load(tmp_path / "idx")


def test_spans_are_maximal_with_sources_and_bci(index: CorpusIndex) -> None:
    answer = "Sure! First gather the following rare components: xylophone wire, quartz dust and cobalt slowly while humming a sea shanty. Enjoy"
    spans = find_spans(index, answer, min_span=4)
    assert [(s.text, s.count) for s in spans] == [
        ("First gather the following rare components: xylophone wire, quartz dust and cobalt", 1),
        ("quartz dust and cobalt slowly while humming a sea shanty", 1),
    ]
    assert spans[0].sources[0].doc == "recipe" and spans[0].sources[0].offset == 4  # word tokens only
    assert spans[1].sources[0].doc == "ritual" and spans[1].sources[0].offset == 2
    counts, total = index.counts, index.total
    expected = -sum(math.log(counts[index.vocab[t]] / total) for t in tokenize(spans[1].text))
    assert spans[1].bci == pytest.approx(expected)
    assert spans[1].bci_density == pytest.approx(expected / spans[1].length)


def test_text_not_in_corpus_has_no_spans(index: CorpusIndex) -> None:
    assert find_spans(index, "A completely different sentence about gardening and tomatoes in June.") == []
    assert find_spans(index, "") == []


def brute_force(docs: list[list[int]], query: list[int], k: int) -> list[tuple[int, int, int]]:
    """Maximal spans by definition: L(s) = longest occurring prefix of query[s:]."""

    def occurrences(pattern: list[int]) -> int:
        n = len(pattern)
        return sum(1 for d in docs for i in range(len(d) - n + 1) if d[i : i + n] == pattern)

    spans, reach = [], 0
    for s in range(len(query)):
        length = 0
        while s + length < len(query) and occurrences(query[s : s + length + 1]) > 0:
            length += 1
        if length >= k and s + length > reach:
            spans.append((s, s + length, occurrences(query[s : s + length])))
            reach = s + length
    return spans


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=30), min_size=1, max_size=6),
    query=st.lists(st.integers(1, 5), max_size=40),
    k=st.integers(1, 4),
    shard_tokens=st.sampled_from([1, 7, 1000]),
    copy=st.booleans(),
)
def test_matching_equals_brute_force(tmp_path_factory, docs, query, k, shard_tokens, copy) -> None:
    if copy:  # make long matches likely
        query = query[:5] + docs[0] + query[5:]
    words = {i: f"w{i}" for i in range(1, 6)}
    folder = tmp_path_factory.mktemp("oracle")
    corpus = write_corpus(folder / "c.jsonl", [{"text": " ".join(words[t] for t in d)} for d in docs])
    build_index(corpus, folder / "idx", shard_tokens=shard_tokens)
    index = CorpusIndex.load(folder / "idx")
    found = find_spans(index, " ".join(words[t] for t in query), min_span=k)
    assert [(s.start, s.end, s.count) for s in found] == brute_force(docs, query, k)


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=40), min_size=1, max_size=8),
    query=st.lists(st.integers(1, 5), max_size=60),
    cuts=st.lists(st.integers(1, 9), min_size=1, max_size=20),
    copies=st.integers(1, 3),
)
def test_tokens_pushed_in_any_pieces_find_the_spans_of_the_whole_answer(tmp_path_factory, docs, query, cuts, copies):
    """The matcher compares occurrences with the answer tokens known so far and resumes when more arrive:
    however the answer is cut into pieces (a stream), the spans are those of the whole answer."""
    from guardrails_uq.provenance import SpanMatcher

    docs = docs * copies  # repeated documents: several occurrences per span
    query = query[:7] + docs[0] + query[7:]
    words = {i: f"w{i}" for i in range(1, 6)}
    folder = tmp_path_factory.mktemp("pieces")
    corpus = write_corpus(folder / "c.jsonl", [{"text": " ".join(words[t] for t in d)} for d in docs])
    build_index(corpus, folder / "idx")
    index = CorpusIndex.load(folder / "idx")
    ids = index.ids([words[t] for t in query])
    matcher = SpanMatcher(index, min_span=3)
    begin = 0
    for cut in cuts * (len(ids) // max(sum(cuts), 1) + 1):
        matcher.push(ids[begin : begin + cut])
        begin += cut
        if begin >= len(ids):
            break
    streamed = [(s.start, s.end, s.count, s.sources) for s in matcher.finish()]
    whole = [
        (s.start, s.end, s.count, s.sources) for s in find_spans(index, " ".join(words[t] for t in query), min_span=3)
    ]
    assert streamed == whole
    assert [(s, e, c) for s, e, c, _ in whole] == brute_force(docs, query, 3)


def test_streaming_finds_the_same_spans_and_alerts_early(index: CorpusIndex) -> None:
    answer = "Well, first gather the following rare components: xylophone wire, quartz dust and cobalt, then rest."
    expected = find_spans(index, answer, min_span=4)
    stream = ProvenanceStream(index, threshold=20.0, min_span=4)
    alert_at = None
    for i in range(0, len(answer), 3):
        alert = stream.feed(answer[i : i + 3])
        if alert is not None and alert_at is None:
            alert_at = i + 3
            first = alert
    assert [(s.start, s.end, s.count) for s in stream.finish()] == [(s.start, s.end, s.count) for s in expected]
    assert alert_at is not None and alert_at < len(answer) - 20, "the alert comes before the span ends"
    assert first.bci >= 20.0 and answer[first.char_start :].startswith("first gather")


def test_index_resumes_after_the_last_complete_shard(tmp_path: Path) -> None:
    docs = [
        {"id": str(i), "text": f"document {i} says " + " ".join(f"t{(i * j) % 50}" for j in range(40))}
        for i in range(30)
    ]
    corpus = write_corpus(tmp_path / "c.jsonl", docs)
    full = build_index(corpus, tmp_path / "a", shard_tokens=200)
    assert full.shards > 3
    partial = tmp_path / "b"
    build_index(corpus, partial, shard_tokens=200)
    (partial / "manifest.json").unlink()  # as if killed before the end...
    (partial / "shard-00003" / "shard.json").unlink()  # ...while writing shard 3
    resumed = build_index(corpus, partial, shard_tokens=200)
    assert resumed.resumed_shards == 3
    a, b = CorpusIndex.load(tmp_path / "a"), CorpusIndex.load(partial)
    assert a.vocab == b.vocab and np.array_equal(a.counts, b.counts)
    text = docs[7]["text"]
    assert [(s.start, s.end, s.count) for s in find_spans(a, text)] == [
        (s.start, s.end, s.count) for s in find_spans(b, text)
    ]


def test_unfinished_index_is_refused(tmp_path: Path) -> None:
    build_index(write_corpus(tmp_path / "c.jsonl", DOCS), tmp_path / "idx")
    (tmp_path / "idx" / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        CorpusIndex.load(tmp_path / "idx")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_index_is_refused(index: CorpusIndex, damage: str) -> None:
    target = index.path / "shard-00000" / "sa.npy"
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[-3] ^= 0xFF
    else:
        data = data[:-8]
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="damaged"):
        CorpusIndex.load(index.path)
    if damage == "truncate":
        with pytest.raises(ArtifactError, match="damaged"):
            CorpusIndex.load(index.path, verify="size")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no documents"),
        (b'{"id": 1, "text": "ok"}\n\xff\xfe bad\n', ":2: line is not valid UTF-8"),
        (b'{"id": 1, "body": "no text"}\n', ':1: each line needs a string "text"'),
        (b'{"id": 1, "text": "ok"}\n{not json\n', ":2: invalid JSON"),
    ],
)
def test_bad_corpus_lines_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(content)
    with pytest.raises(InputError, match=message):
        build_index(corpus, tmp_path / "idx")


def test_gzip_corpus(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(d) + "\n" for d in DOCS))
    report = build_index(tmp_path / "c.jsonl.gz", tmp_path / "idx")
    assert report.documents == 3


POLICY = """
version: 1
name: shield
provenance: {index: idx, min_span: 6}
rules:
  - {name: memorized-unsafe-text, at: output, when: "provenance.bci_max > 20.0", action: abstain,
     message: "I can't help with that."}
"""


def test_guard_refuses_copied_text_and_explains(tmp_path: Path, index: CorpusIndex) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    guard = Guard.from_policy(tmp_path / "p.yaml", audit=False)
    refused = guard.after("Okay: first gather the following rare components: xylophone wire, quartz dust.")
    assert refused.action is Action.ABSTAIN and refused.rule == "memorized-unsafe-text"
    span = refused.evidence["provenance"]["spans"][0]
    assert span["sources"][0] == {"doc": "recipe", "offset": 4}
    assert refused.signals["provenance.longest_span"] == 10
    allowed = guard.after("The weather is nice, with a light breeze.")
    assert allowed.action is Action.ALLOW and allowed.signals["provenance.spans"] == 0


def test_policy_with_missing_index_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY.replace("index: idx", "index: nowhere"))
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "p.yaml")
    assert info.value.line == 4 and "artifact not found" in str(info.value)


def test_check_conforms(index: CorpusIndex) -> None:
    from guardrails_uq import Call, Generation

    check = ProvenanceCheck(index, min_span=4)
    calls = [Call(generation=Generation(text=t)) for t in ("quartz dust and cobalt slowly while humming", "hi", "")]
    assert_conforms(check, SPEC, calls)


@pytest.mark.parametrize("chunk", [7, 512])
@pytest.mark.parametrize("repeats", [3, 70, 200])
def test_frequent_and_long_copies_match_the_definition(tmp_path: Path, monkeypatch, repeats: int, chunk: int) -> None:
    """Spans with more occurrences than the direct-comparison limit (64), and long spans occurring several
    times that diverge after one comparison chunk, are found exactly as the definition says."""
    from guardrails_uq.provenance import match

    monkeypatch.setattr(match, "_DIRECT_CHUNK", chunk)
    rng = np.random.default_rng(repeats)
    phrase = [int(t) for t in rng.integers(1, 30, 12)]
    docs = [[*phrase, *(int(t) for t in rng.integers(1, 30, 6))] for _ in range(repeats)]
    long_doc = [int(t) for t in rng.integers(1, 30, 700)]
    docs += [long_doc, [*long_doc[:520], 30, *long_doc[521:]], long_doc[:300], long_doc[:640]]
    words = {i: f"w{i}" for i in range(1, 31)}
    corpus = write_corpus(tmp_path / "c.jsonl", [{"text": " ".join(words[t] for t in d)} for d in docs])
    build_index(corpus, tmp_path / "idx", shard_tokens=400)
    index = CorpusIndex.load(tmp_path / "idx")
    text = "|".join("".join(chr(0x100 + t) for t in d) for d in docs)  # one character per token

    def oracle(query: list[int], k: int) -> list[tuple[int, int, int]]:  # brute_force's definition, with str.find
        q = "".join(chr(0x100 + t) for t in query)
        spans, reach = [], 0
        for s in range(len(q)):
            length = 0
            while s + length < len(q) and q[s : s + length + 1] in text:
                length += 1
            if length >= k and s + length > reach:
                count = sum(1 for i in range(len(text)) if text.startswith(q[s : s + length], i))
                spans.append((s, s + length, count))
                reach = s + length
        return spans

    assert oracle(docs[0][:10] + [30] * 3, 3) == brute_force(docs, docs[0][:10] + [30] * 3, 3)
    for query in (docs[0] + [30, 30] + long_doc[:600] + [30], phrase[:10] + long_doc[100:650] + docs[1][5:]):
        found = find_spans(index, " ".join(words[t] for t in query), min_span=6)
        assert [(s.start, s.end, s.count) for s in found] == oracle(query, 6)


def test_a_repetitive_answer_fails_closed_within_the_work_budget(tmp_path: Path) -> None:
    """Hostile input (found by a hostile trial): an answer repeating one token thousands of times, against a
    corpus holding a long run of it, made span matching quadratic (70 s for 2,000 tokens), stalling the
    proxy's event loop on streams. Past a work budget matching fails, and the check fails closed."""
    build_index(write_corpus(tmp_path / "c.jsonl", [*DOCS, {"id": "laugh", "text": "na " * 1000}]), tmp_path / "idx")
    index = CorpusIndex.load(tmp_path / "idx")
    with pytest.raises(InputError, match="work budget"):
        find_spans(index, "na " * 2000)
    stream = ProvenanceStream(index, threshold=1e9, min_span=6)
    with pytest.raises(InputError, match="work budget"):
        for _ in range(2000):
            stream.feed("na ")
    (tmp_path / "p.yaml").write_text(POLICY)
    decision = Guard.from_policy(tmp_path / "p.yaml", audit=False).after("na " * 2000)
    assert decision.action is Action.ABSTAIN and "work budget" in decision.errors[0].error
    assert find_spans(index, "na " * 300), "a shorter run is still matched"


def test_a_work_budget_failure_fails_closed_even_under_on_error_allow(tmp_path: Path) -> None:
    """A budget failure is an attack signal (issue 22 item 4): the padded copy must not pass because the
    policy lets other check failures through. Other failures still follow on_error."""
    build_index(write_corpus(tmp_path / "c.jsonl", [*DOCS, {"id": "laugh", "text": "na " * 1000}]), tmp_path / "idx")
    (tmp_path / "p.yaml").write_text(POLICY + "default: allow\non_error: allow\n")
    guard = Guard.from_policy(tmp_path / "p.yaml", audit=False)
    padded = "na " * 2000 + "first gather the following rare components: xylophone wire, quartz dust."
    decision = guard.after(padded)
    assert decision.action is Action.ABSTAIN and "work budget" in decision.errors[0].error
    assert decision.message  # the policy's message, not the blocked text
    stream = ProvenanceStream(CorpusIndex.load(tmp_path / "idx"), threshold=1e9, min_span=6)
    with pytest.raises(WorkBudgetError) as caught:  # what a streaming integration or the proxy hands to failure()
        for _ in range(2000):
            stream.feed("na ")
    assert guard.failure("output", "stream", caught.value, record=False).action is Action.ABSTAIN
    assert guard.failure("output", "stream", InputError("odd chunk"), record=False).action is Action.ALLOW
