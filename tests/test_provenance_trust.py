"""Provenance you can trust: copied text is found whatever Unicode hides it (with evidence pointing at
what the user saw), and an index whose manifest was edited, is stale or is not an index at all is refused
with an ArtifactError that says how to fix it. Every index here is real: built from a JSONL corpus."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails_uq import ArtifactError
from guardrails_uq.artifacts import digest
from guardrails_uq.provenance import CorpusIndex, build_index, find_spans, tokenize
from guardrails_uq.provenance.evaldata import ensure_index
from guardrails_uq.provenance.stream import ProvenanceStream
from guardrails_uq.textnorm import CONFUSABLES, normalize, normalize_with_map

DOC = (
    "To build the device, first gather the following rare components: xylophone wire, quartz dust and cobalt. "
    "Then solder the café crème contacts while the brûlée timer runs."
)
DOCS = [{"id": "recipe", "text": DOC}, {"id": "weather", "text": "The weather today is sunny with a light breeze."}]
LEAD, TAIL = "Sure! Here it is: ", " Hope this helps."


def write_corpus(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture
def index(tmp_path: Path) -> CorpusIndex:
    build_index(write_corpus(tmp_path / "c.jsonl", DOCS), tmp_path / "idx")
    return CorpusIndex.load(tmp_path / "idx")


def invisible(char: str) -> bool:
    return unicodedata.category(char) in ("Cf", "Cc", "Mn") or char.isspace()


def wordy(char: str) -> bool:
    return unicodedata.category(char)[0] in "LN"


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


# Each rewrites the copied document the way an evasion (or a sloppy pipeline) would; the words stay visible.
DISGUISES = {
    "zero-width space after each word": lambda t: " ".join(w + "\u200b" for w in t.split()),
    "right-to-left mark before each word": lambda t: " ".join("\u200f" + w for w in t.split()),
    "right-to-left override inside words": lambda t: t.replace("e", "e\u202e"),
    "soft hyphens": lambda t: t.replace("o", "o\u00ad").replace("er", "e\u00adr"),
    "NUL between words": lambda t: t.replace(" ", " \x00"),
    "fullwidth letters": fullwidth,
    "ligatures": lambda t: t.replace("fi", "\ufb01").replace("ff", "\ufb00"),
    "decomposed accents": lambda t: unicodedata.normalize("NFD", t),
    "odd whitespace": lambda t: t.replace(" ", "\u00a0", 5).replace(" ", "\t\n", 3).replace(" ", "\u3000 "),
    "word joiners and BOMs": lambda t: t.replace("a", "a\u2060").replace("i", "\ufeffi"),
    "variation selectors": lambda t: t.replace("t", "t\ufe0f"),
    "Cyrillic and Greek look-alikes": lambda t: t.replace("a", "а").replace("o", "ο").replace("T", "Т"),
    "mathematical bold": lambda t: "".join(chr(0x1D41A + ord(c) - 97) if "a" <= c <= "z" else c for c in t),
    # markup a chat UI renders away: punctuation is not a token, so it cannot break a copied span
    "markdown emphasis every third word": lambda t: " ".join(
        f"*{w}*" if i % 3 == 0 else w for i, w in enumerate(t.split())
    ),
    "markdown bold, code, strike": lambda t: " ".join(
        ("**{}**", "`{}`", "~~{}~~", "__{}__")[i % 4].format(w) for i, w in enumerate(t.split())
    ),
    "punctuation between words": lambda t: t.replace(" ", " . "),
    # separators that render as a blank: they must become spaces, or the words around them fuse into one token
    "Hangul filler instead of spaces": lambda t: t.replace(" ", "\u3164"),
    "halfwidth Hangul filler instead of spaces": lambda t: t.replace(" ", "\uffa0"),
    "Hangul choseong/jungseong fillers instead of spaces": lambda t: t.replace(" ", "\u115f", 6).replace(" ", "\u1160"),
    "braille blank and null notehead instead of spaces": lambda t: t.replace(" ", "\u2800", 6).replace(
        " ", "\U0001d159"
    ),
    # format characters that are drawn (prepended concatenation marks): a visible mark between words
    "Arabic end-of-ayah mark between words": lambda t: t.replace(" ", "\u06dd"),
    "Syriac abbreviation mark between words": lambda t: t.replace(" ", "\u070f"),
}


@pytest.mark.parametrize("disguise", DISGUISES.values(), ids=DISGUISES.keys())
def test_disguised_copy_scores_like_the_plain_copy(index: CorpusIndex, disguise) -> None:
    plain = find_spans(index, LEAD + DOC + TAIL)
    copy = disguise(DOC)
    assert copy != DOC
    answer = LEAD + copy + TAIL
    spans = find_spans(index, answer)
    assert [(s.start, s.end, s.count) for s in spans] == [(s.start, s.end, s.count) for s in plain]
    assert spans[0].bci == pytest.approx(plain[0].bci) and spans[0].bci > 20.0
    # evidence points at the original answer: the copied words as the user saw them, nothing around them
    span = spans[0]
    assert answer[span.char_start : span.char_end] == span.text
    start = len(LEAD) + next(i for i, c in enumerate(copy) if wordy(c))  # tokens are letters and digits
    end = len(LEAD) + max(i for i, c in enumerate(copy) if wordy(c)) + 1
    assert (span.char_start, span.char_end) == (start, end)
    evidence = span.to_evidence()
    assert answer[evidence["char_start"] : evidence["char_end"]] == span.text  # type: ignore[misc]


def test_disguised_corpus_matches_a_plain_answer(tmp_path: Path) -> None:
    """Normalisation runs on the index side too: a corpus full of invisible characters still matches."""
    hidden = [{"id": "recipe", "text": " ".join("\u200b" + w + "\u00ad" for w in fullwidth(DOC).split())}]
    build_index(write_corpus(tmp_path / "c.jsonl", hidden), tmp_path / "idx")
    spans = find_spans(CorpusIndex.load(tmp_path / "idx"), LEAD + DOC)
    assert len(spans) == 1 and spans[0].text == DOC.rstrip(".") and spans[0].bci > 20.0


def test_composed_and_decomposed_accents_match_both_ways(tmp_path: Path) -> None:
    text = "the café crème brûlée recipe from the old café near the river"
    for corpus_form, answer_form in (("NFC", "NFD"), ("NFD", "NFC")):
        folder = tmp_path / corpus_form
        folder.mkdir()
        docs = [{"id": "d", "text": unicodedata.normalize(corpus_form, text)}]
        build_index(write_corpus(folder / "c.jsonl", docs), folder / "idx")
        answer = unicodedata.normalize(answer_form, text)
        spans = find_spans(CorpusIndex.load(folder / "idx"), answer, min_span=6)
        assert [(s.start, s.end) for s in spans] == [(0, len(tokenize(text)))]
        assert spans[0].text == answer


def test_lone_surrogates_never_raise(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "s", "text": "broken \\ud83d emoji then the quartz dust and cobalt recipe"}\n')
    build_index(corpus, tmp_path / "idx")
    index = CorpusIndex.load(tmp_path / "idx")
    spans = find_spans(index, "a \udc00 broken \ud83d emoji then the quartz dust and cobalt recipe", min_span=4)
    assert [s.text for s in spans] == ["broken \ud83d emoji then the quartz dust and cobalt recipe"]
    assert normalize("\ud800x") == "\ufffdx"


def test_streaming_normalises_across_chunk_boundaries(index: CorpusIndex) -> None:
    """Chunks that split an accent from its letter, an invisible run or a ligature give the spans and
    offsets of find_spans on the whole text."""
    answer = LEAD + unicodedata.normalize("NFD", DOC).replace(" ", " \u200b").replace("fi", "\ufb01") + " ½ done"
    expected = find_spans(index, answer)
    for size in (1, 2, 3, 7):
        stream = ProvenanceStream(index, threshold=20.0)
        alerts = [stream.feed(answer[i : i + size]) for i in range(0, len(answer), size)]
        got = stream.finish()
        assert [(s.start, s.end, s.char_start, s.char_end, s.text) for s in got] == [
            (s.start, s.end, s.char_start, s.char_end, s.text) for s in expected
        ]
        first = next(a for a in alerts if a is not None)
        assert first.char_start == expected[0].char_start and answer[first.char_start :].startswith("To \u200bbuild")


# --- textnorm on its own --------------------------------------------------------------------------------------

NORMALISED = [
    ("plain ascii", "plain ascii"),
    ("a\u200bb\u200cc\u200dd\u2060e\ufeff", "abcde"),
    ("r\u00adisk \u200f\u202eword\u202c", "risk word"),
    ("nul\x00 byte\x7f and\x1b[0m", "nul byte and[0m"),
    ("tabs\tand\r\nnewlines  \u2028 spaces\u00a0\u3000end", "tabs and newlines spaces end"),
    ("\ufb01nd the \ufb00ect", "find the ffect"),
    ("ｈｏｗ ｔｏ", "how to"),
    ("e\u0301 = \u00e9", "\u00e9 = \u00e9"),
    ("e\u200b\u0301", "\u00e9"),  # the removed character does not keep the accent off its letter
    ("q\u0323\u0307 = q\u0307\u0323", "q\u0323\u0307 = q\u0323\u0307"),  # canonical order of marks
    ("\u1112\u1161\u11ab \u314e\u314f", "\ud55c \ud558"),  # conjoining and compatibility jamo compose
    ("\uff76\uff9e", "\u30ac"),  # halfwidth katakana and its voiced mark
    ("\U0001d421\U0001d428\U0001d430 \u24d7", "how h"),
    ("\u2800braille\u2800blank", " braille blank"),
    ("how\u3164to\uffa0make\u115fa\u1160bomb\U0001d159now \u3164\u3164 end", "how to make a bomb now end"),
    ("how\u06ddto\u0600make\U000110bda", "how to make a"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALISED)
def test_normalize_examples(raw: str, expected: str) -> None:
    assert normalize(raw) == expected
    assert normalize_with_map(raw).text == expected


def test_confusables_fold_only_when_asked() -> None:
    assert normalize("раураl", fold_confusables=True) == "paypal"
    assert normalize("раураl") == "раураl"
    assert all(normalize(v) == v for v in CONFUSABLES.values())


def test_plain_ascii_is_returned_as_is() -> None:
    text = "Nothing to do here: plain, printable ASCII with single spaces."
    assert normalize(text) is text
    mapped = normalize_with_map(text)
    assert mapped.text is text and mapped.span(0, 7) == (0, 7)


def test_map_points_every_character_at_its_origin() -> None:
    raw = "x \ufb01ve\u200b\u200b  caf\u0065\u0301!"
    mapped = normalize_with_map(raw)
    assert mapped.text == "x five café!"
    start = mapped.text.index("five")
    assert raw[slice(*mapped.span(start, start + 4))] == "\ufb01ve"  # ligature: both letters map to it
    start = mapped.text.index("café")
    assert raw[slice(*mapped.span(start, start + 4))] == "cafe\u0301"
    assert not mapped.is_boundary(mapped.text.index("five") + 1)  # inside the ligature's expansion


def _reference(text: str) -> str:
    """The scheme applied to the whole string at once (no offsets): what per-cluster NFKC must equal."""
    kept = []
    for char in text:
        char = "\ufffd" if "\ud800" <= char <= "\udfff" else char
        if char.isspace() or char in BLANKS or char in DRAWN_FORMAT:
            kept.append(" ")
        elif unicodedata.category(char) not in ("Cf", "Cc") and not _ignorable(char):
            kept.append(char)
    nfkc = unicodedata.normalize("NFKC", "".join(kept))
    return re.sub(" +", " ", "".join(" " if c.isspace() else c for c in nfkc))


# Default_Ignorable_Code_Point outside Cf (Unicode DerivedCoreProperties), copied independently of textnorm
IGNORABLE = ((0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x3164, 0x3164),
             (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0xE0000, 0xE0FFF))  # fmt: skip


# Drawn as an empty space by common fonts, though not whitespace to Unicode (copied independently of textnorm)
BLANKS = frozenset("\u115f\u1160\u2800\u3164\uffa0\U0001d159")
# Prepended_Concatenation_Mark (Unicode PropList): format characters that are drawn, so they separate words
DRAWN_FORMAT = frozenset("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd")


def _ignorable(char: str) -> bool:
    return any(low <= ord(char) <= high for low, high in IGNORABLE)


TRICKY = (
    "ae ̣́̀̃̇\u0327\u0316\u200b\u200f\u202e\u00ad\x00\t\n\u00a0\u3000\u2028\x85\u1100\u1161\u11a8\u314e\u314f"
    "\uac00\uff76\uff9e\uff9f\ufb01\uff48½´\u0e33\u0bc6\u0bbe\u0b47\u0b3e\ufe0f\u034f\ud800\U0001d421аο\u2800"
    "\u3164\uffa0\u115f\u1160\U0001d159\u06dd\u0600"
)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(TRICKY), max_size=24) | st.text(max_size=24))
def test_per_cluster_nfkc_equals_whole_string_nfkc(raw: str) -> None:
    mapped = normalize_with_map(raw)
    assert mapped.text == normalize(raw) == _reference(raw)
    assert len(mapped.starts) == len(mapped.ends) == len(mapped.text)
    assert list(mapped.starts) == sorted(mapped.starts) and list(mapped.ends) == sorted(mapped.ends)
    assert all(0 <= a < b <= len(raw) for a, b in zip(mapped.starts, mapped.ends, strict=True))


# --- the manifest: stale, edited and foreign indexes ---------------------------------------------------------


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def write_manifest(folder: Path, manifest: object, *, seal: bool) -> None:
    if seal and isinstance(manifest, dict):
        body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
        manifest = {**body, "manifest_sha256": digest(body)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def make_old(folder: Path) -> None:
    """What an index built before text normalisation looks like: format 1, no normalisation, no seal."""
    manifest = read_manifest(folder)
    for key in ("normalization", "unicode_version", "manifest_sha256"):
        del manifest[key]
    write_manifest(folder, {**manifest, "format": 1}, seal=False)
    for marker in folder.glob("shard-*/shard.json"):
        entry = json.loads(marker.read_text())
        marker.write_text(json.dumps({k: v for k, v in entry.items() if k not in ("format", "normalization")}))


def test_an_index_from_before_normalisation_is_refused_with_the_rebuild_command(index: CorpusIndex) -> None:
    assert index.manifest["normalization"] == "nfkc-cf-ws-v2+confusables-v1"
    make_old(index.path)
    with pytest.raises(ArtifactError, match=r"format 1 .*before text normalisation") as info:
        CorpusIndex.load(index.path)
    assert f"guardrails-uq provenance index --corpus CORPUS.jsonl -o {index.path}" in str(info.value)
    manifest = read_manifest(index.path)
    write_manifest(index.path, {**manifest, "format": 2, "normalization": "nfc-v0"}, seal=True)
    with pytest.raises(ArtifactError, match=r"normalization 'nfc-v0'(.|\n)*guardrails-uq provenance index"):
        CorpusIndex.load(index.path)


def test_a_stale_cached_index_is_rebuilt_not_reported(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "unsafe-corpus"
    ensure_index(folder, lambda: DOCS)
    make_old(folder)
    ensure_index(folder, lambda: DOCS)  # refused -> rebuilt, old shards not reused
    index = CorpusIndex.load(folder)
    assert index.manifest["format"] == 2 and find_spans(index, DISGUISES["zero-width space after each word"](DOC))


def test_a_rebuild_does_not_reuse_a_damaged_shard(tmp_path: Path) -> None:
    docs = [
        {"id": str(i), "text": f"document {i} says " + " ".join(f"t{(i * j) % 50}" for j in range(40))}
        for i in range(30)
    ]
    corpus = write_corpus(tmp_path / "c.jsonl", docs)
    build_index(corpus, tmp_path / "idx", shard_tokens=200)
    target = tmp_path / "idx" / "shard-00002" / "tokens.npy"
    data = bytearray(target.read_bytes())
    data[-5] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="damaged"):
        CorpusIndex.load(tmp_path / "idx")
    report = build_index(corpus, tmp_path / "idx", shard_tokens=200)  # the fix the error names
    assert report.resumed_shards == 2
    CorpusIndex.load(tmp_path / "idx")


# Each edit changes a result (tokens=1 used to make a verbatim copy's BCI negative; vocab_size=0 or no
# shards made it 0). Unsealed, the checksum refuses it; re-sealed, the consistency checks still do.
EDITS = {
    "tokens": lambda m: {**m, "tokens": 1},
    "vocab_size": lambda m: {**m, "vocab_size": 0},
    "shards": lambda m: {**m, "shards": []},
    "documents": lambda m: {**m, "documents": m["documents"] + 1},
    "shard tokens": lambda m: {**m, "shards": [{**m["shards"][0], "tokens": 5}]},
    "shard name": lambda m: {**m, "shards": [{**m["shards"][0], "name": "../idx/shard-00000"}]},
    "file checksum": lambda m: {
        **m,
        "files": {**m["files"], "vocab.txt": {**m["files"]["vocab.txt"], "sha256": "0" * 64}},
    },
}


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
@pytest.mark.parametrize("resealed", [False, True], ids=["edited", "edited-and-resealed"])
def test_an_edited_manifest_is_refused(index: CorpusIndex, edit, resealed: bool) -> None:
    write_manifest(index.path, edit(read_manifest(index.path)), seal=resealed)
    with pytest.raises(ArtifactError, match="edited" if not resealed else "manifest|damaged") as info:
        CorpusIndex.load(index.path)
    assert "fix:" in str(info.value)


def test_unsealed_metadata_is_covered_too(index: CorpusIndex) -> None:
    for field, value in (("created", 0.0), ("library_version", "9.9"), ("unicode_version", "1.0")):
        write_manifest(index.path, {**read_manifest(index.path), field: value}, seal=False)
        with pytest.raises(ArtifactError, match="edited"):
            CorpusIndex.load(index.path)
        build_index(index.path.parent / "c.jsonl", index.path)


def test_bci_is_never_negative_even_from_inconsistent_counts(index: CorpusIndex) -> None:
    lying = CorpusIndex(index.path, {**index.manifest, "tokens": 1}, index.vocab, index.counts, index.shards)
    spans = find_spans(lying, LEAD + DOC)
    assert spans and all(s.bci >= 0.0 for s in spans)


def _replace(path: Path, content: bytes | None) -> None:
    if content is None:
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(content)


FOREIGN = {
    "a list": (b"[]", "a JSON array, not an object"),
    "an empty object": (b"{}", "field 'kind' is None"),
    "a string": (b'"manifest"', "a JSON string, not an object"),
    "null": (b"null", "a JSON null, not an object"),
    "not JSON": (b"{not json", "not JSON"),
    "not UTF-8": (b"\xff\xfe{}", "not JSON"),
    "a directory": (None, "cannot read the manifest"),
}


@pytest.mark.parametrize(("content", "message"), FOREIGN.values(), ids=FOREIGN.keys())
def test_a_foreign_manifest_is_refused_with_the_fix(index: CorpusIndex, content: bytes | None, message: str) -> None:
    _replace(index.path / "manifest.json", content)
    with pytest.raises(ArtifactError) as info:
        CorpusIndex.load(index.path)
    text = str(info.value)
    assert message in text and str(index.path / "manifest.json") in text
    assert "fix: rebuild it: guardrails-uq provenance index --corpus CORPUS.jsonl -o" in text


MISSING = [
    "documents",
    "tokens",
    "vocab_size",
    "shards",
    "files",
    "shards[0].files",
    "shards[0].name",
    "files.vocab.txt",
]


@pytest.mark.parametrize("field", MISSING)
def test_a_manifest_missing_a_field_names_it(index: CorpusIndex, field: str) -> None:
    manifest = read_manifest(index.path)
    if field.startswith("shards[0]."):
        del manifest["shards"][0][field.split(".")[1]]
    elif field == "files.vocab.txt":
        del manifest["files"]["vocab.txt"]
    else:
        manifest[field] = "oops" if field == "shards" else None
    write_manifest(index.path, manifest, seal=True)  # sealed: the field check itself must catch it
    with pytest.raises(ArtifactError, match=re.escape(field.split(".vocab")[0])) as info:
        CorpusIndex.load(index.path)
    assert "manifest field" in str(info.value) and "fix:" in str(info.value)


def test_a_file_or_a_missing_folder_is_not_an_index(tmp_path: Path, index: CorpusIndex) -> None:
    with pytest.raises(ArtifactError, match=r"is a file, not a provenance index folder(.|\n)*fix:"):
        CorpusIndex.load(tmp_path / "c.jsonl")
    with pytest.raises(ArtifactError, match=r"not found(.|\n)*fix: build it: guardrails-uq provenance index"):
        CorpusIndex.load(tmp_path / "nowhere")
    np.save(index.path / "counts.npy", np.zeros((2, 2)))  # a wrong array with the manifest's size...
    with pytest.raises(ArtifactError, match="damaged"):
        CorpusIndex.load(index.path, verify="size")
