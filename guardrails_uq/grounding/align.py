"""Alignment features of a claim against evidence sentences: what the offline grounding scorer reads.

No NLI weights can be downloaded here, so the scorer learns from features that mean the same thing in any
knowledge base (nothing in them names a word of the operator's corpus), which is what lets a model fitted on
one knowledge base hold on another:

* lexical: content-word coverage of the claim by its best-aligned sentence, by that sentence's chunk and by
  all the evidence (light stemming; stop words, negations and yes/no words are not content), and the reverse;
* embedding: cosine between the claim and its best-aligned sentence (the packaged MiniLM), and the largest
  cosine over all evidence sentences;
* numbers: numbers of the claim (digits or number words) missing from the aligned sentence / from all evidence,
  a changed number (the sentence states another), a changed unit of the same kind (seconds vs minutes);
* polarity: a negated clause aligned with an affirmative one (or the reverse), clause by clause; a leading
  "No" negates an otherwise affirmative claim; "only" in a claim whose sentence names more;
* substitution: a claim word missing from the sentence where a sentence word missing from the claim stands
  (same neighbour): a swapped option, file type, menu item or platform; a quantity counted differently
  ("3 devices" vs "2 devices");
* antonyms: a claim word whose opposite the sentence uses (enable/disable, before/after, ...);
* specifics: names, options, flags, paths and numbers of the claim (capitalised mid-sentence, digits,
  inner punctuation, leading dashes) found nowhere in the aligned sentence / in the evidence;
* interactions of coverage with each conflict (a conflict only means contradiction when the claim is about
  what the sentence says).

The aligned sentence of a claim is the evidence sentence with the largest ``cosine + coverage``.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..textnorm import normalize

#: What a feature vector is; the artifact records it and refuses another definition.
FEATURES_ID = "grounding-align/v3"
FEATURE_NAMES: tuple[str, ...] = (
    "cos_best",
    "cos_max",
    "cov_sentence",
    "cov_chunk",
    "cov_evidence",
    "reverse_cov",
    "log_content",
    "has_number",
    "numbers_missing_sentence",
    "numbers_missing_evidence",
    "number_changed",
    "unit_changed",
    "polarity_mismatch",
    "claim_negated",
    "antonym",
    "specifics_missing_sentence",
    "specifics_missing_evidence",
    "content_missing_evidence",
    "cov_x_polarity",
    "cov_x_number",
    "cov_x_antonym",
    "cov_x_specific",
    "cov_x_unit",
    "cos_x_cov",
    "quantity_changed",
    "substituted",
    "only_but_more",
    "cov_x_quantity",
    "cov_x_substituted",
)

_CONFLICTS = (
    "number_changed",
    "unit_changed",
    "polarity_mismatch",
    "antonym",
    "specifics_missing_sentence",
    "specifics_missing_evidence",
    "cov_x_polarity",
    "cov_x_number",
    "cov_x_antonym",
    "cov_x_specific",
    "cov_x_unit",
    "quantity_changed",
    "substituted",
    "only_but_more",
    "cov_x_quantity",
    "cov_x_substituted",
)
_ALIGNMENT = ("cos_best", "cos_max", "cov_sentence", "cov_chunk", "cov_evidence", "cos_x_cov")
_MISSING = ("numbers_missing_evidence", "specifics_missing_evidence", "content_missing_evidence")
#: Known directions (label, feature) -> +1 / -1: a conflict never raises P(supported) and never lowers
#: P(contradicted); alignment never lowers P(supported) nor raises P(unsupported); what the evidence lacks
#: never lowers P(unsupported). The model keeps these signs whatever its fitting data says.
FEATURE_SIGNS: dict[tuple[str, str], int] = {
    **{("supported", f): -1 for f in _CONFLICTS},
    **{("contradicted", f): 1 for f in _CONFLICTS},
    **{("supported", f): 1 for f in _ALIGNMENT},
    **{("unsupported", f): -1 for f in _ALIGNMENT},
    **{("supported", f): -1 for f in _MISSING},
    **{("unsupported", f): 1 for f in _MISSING},
}

#: The features the contradicted class may read: the conflicts with the aligned sentence, their interactions
#: with coverage, and how well the claim aligns. A contradiction is a conflict with what the aligned sentence
#: says, never a mere partial overlap (the model cannot learn "moderate coverage means contradicted" from
#: generator noise), and never what the evidence as a whole lacks.
CONTRADICTION_FEATURES = frozenset({"cos_best", "cov_sentence", "cos_x_cov", *_CONFLICTS}) - {
    "specifics_missing_evidence"
}

_WORD = re.compile(r"--?[^\W\d_][\w-]*|[^\W_]+(?:[.,'/_-][^\W_]+)*")
#: Apostrophe look-alikes a reader takes for an apostrophe ("doesnʼt", "doesn`t").
_APOSTROPHES = str.maketrans(dict.fromkeys("’ʼ`´′‘", "'"))
_TAG = re.compile(r"<[^<>]{0,200}>")
_EMPHASIS = re.compile(r"(?<=\w)[*_~]+(?=\w)|(?<!\w)[*_~]+(?=\w)|(?<=\w)[*_~]+(?!\w)")
_NUMBER = re.compile(r"^\d+(?:[.,]\d+)*$")
_CLAUSE = re.compile(r"[,;:()]|\s(?:but|however|although|though|except|whereas|while|unless)\s", re.IGNORECASE)

NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "cannot",
        "can't",
        "won't",
        "don't",
        "doesn't",
        "didn't",
        "isn't",
        "aren't",
        "wasn't",
        "weren't",
        "hasn't",
        "haven't",
        "hadn't",
        "shouldn't",
        "wouldn't",
        "couldn't",
        "mustn't",
        "needn't",
        "without",
        "none",
        "neither",
        "nor",
        "nothing",
        "nobody",
        "nowhere",
        "unable",
        "cant",
        "wont",
        "dont",
        "doesnt",
        "didnt",
        "isnt",
        "arent",
        "wasnt",
        "werent",
        "hasnt",
        "havent",
        "shouldnt",
        "wouldnt",
        "couldnt",
    ]
)
_LEADING_NO = frozenset({"no", "nope", "incorrect", "wrong"})
STOP_WORDS = (
    frozenset(
        [
            "a",
            "an",
            "the",
            "and",
            "or",
            "of",
            "to",
            "in",
            "on",
            "at",
            "by",
            "for",
            "from",
            "with",
            "as",
            "into",
            "onto",
            "over",
            "under",
            "about",
            "after",
            "before",
            "than",
            "then",
            "is",
            "are",
            "was",
            "were",
            "be",
            "been",
            "being",
            "am",
            "do",
            "does",
            "did",
            "doing",
            "done",
            "has",
            "have",
            "had",
            "having",
            "can",
            "could",
            "will",
            "would",
            "shall",
            "should",
            "may",
            "might",
            "must",
            "need",
            "needs",
            "it",
            "its",
            "it's",
            "this",
            "that",
            "these",
            "those",
            "there",
            "here",
            "their",
            "they",
            "them",
            "he",
            "she",
            "his",
            "her",
            "him",
            "we",
            "us",
            "our",
            "you",
            "your",
            "yours",
            "i",
            "me",
            "my",
            "mine",
            "what",
            "which",
            "who",
            "whom",
            "whose",
            "when",
            "where",
            "why",
            "how",
            "if",
            "so",
            "also",
            "just",
            "only",
            "very",
            "too",
            "more",
            "most",
            "much",
            "many",
            "some",
            "any",
            "each",
            "every",
            "all",
            "both",
            "either",
            "other",
            "another",
            "such",
            "own",
            "same",
            "again",
            "once",
            "up",
            "down",
            "out",
            "off",
            "yes",
            "yeah",
            "yep",
            "yup",
            "ok",
            "okay",
            "sure",
            "correct",
            "right",
            "indeed",
            "well",
            "please",
            "thanks",
            "thank",
            "hope",
            "helps",
            "help",
            "happy",
            "glad",
            "welcome",
            "great",
            "let",
            "lets",
            "like",
            "get",
            "gets",
            "got",
            "one",
            "ones",
            "way",
            "ways",
            "thing",
            "things",
            "able",
            "via",
            "per",
            "etc",
            "e.g",
            "i.e",
        ]
    )
    | NEGATIONS
)

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "thirteen": 13,
    "fourteen": 14, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "hundred": 100,
    "thousand": 1000, "million": 1000000,
    "once": 1, "twice": 2, "single": 1, "double": 2, "half": 0.5, "dozen": 12,
}  # fmt: skip

_UNIT_FAMILIES: dict[str, str] = {
    **dict.fromkeys(["millisecond", "second", "minute", "hour", "day", "week", "month", "year", "decade"], "time"),
    **dict.fromkeys(["ms", "sec", "secs", "min", "mins", "hr", "hrs"], "time"),
    **dict.fromkeys(
        [
            "bit",
            "byte",
            "kb",
            "mb",
            "gb",
            "tb",
            "pb",
            "kib",
            "mib",
            "gib",
            "tib",
            "kilobyte",
            "megabyte",
            "gigabyte",
            "terabyte",
        ],
        "size",
    ),
    **dict.fromkeys(["dollar", "euro", "cent", "pound", "usd", "eur", "gbp"], "money"),
    **dict.fromkeys(["percent", "%"], "ratio"),
    **dict.fromkeys(["character", "char", "line", "word", "page", "item", "file", "row", "column"], "count"),
}

_ANTONYM_PAIRS = (
    ("enable", "disable"), ("enabled", "disabled"), ("on", "off"), ("free", "paid"), ("before", "after"),
    ("more", "less"), ("more", "fewer"), ("increase", "decrease"), ("allow", "block"), ("allow", "deny"),
    ("include", "exclude"), ("included", "excluded"), ("public", "private"), ("automatic", "manual"),
    ("automatically", "manually"), ("always", "never"), ("first", "last"), ("upload", "download"),
    ("import", "export"), ("minimum", "maximum"), ("min", "max"), ("above", "below"), ("older", "newer"),
    ("add", "remove"), ("show", "hide"), ("start", "stop"), ("open", "close"), ("lock", "unlock"),
    ("encrypted", "unencrypted"), ("supported", "unsupported"), ("required", "optional"), ("true", "false"),
    ("read", "write"), ("local", "remote"), ("input", "output"), ("left", "right"), ("top", "bottom"),
    ("early", "late"), ("earlier", "later"), ("higher", "lower"), ("high", "low"), ("longer", "shorter"),
    ("larger", "smaller"), ("faster", "slower"), ("increment", "decrement"), ("visible", "hidden"),
    ("online", "offline"), ("synchronous", "asynchronous"), ("mutable", "immutable"), ("inside", "outside"),
    ("ascending", "descending"), ("start", "end"), ("begin", "end"), ("beginning", "end"), ("keep", "delete"),
    ("keeps", "deletes"), ("permanent", "temporary"), ("permanently", "temporarily"), ("success", "failure"),
    ("succeed", "fail"), ("accept", "reject"), ("add", "delete"), ("create", "delete"), ("yes", "no"),
    ("keep", "drop"), ("keep", "lose"), ("keeps", "drops"), ("kept", "dropped"), ("keep", "discard"),
    ("same", "different"), ("all", "some"), ("every", "some"), ("included", "excluded"), ("with", "without"),
)  # fmt: skip
_ANTONYMS: dict[str, frozenset[str]] = {}
for _a, _b in _ANTONYM_PAIRS:
    _ANTONYMS[_a] = _ANTONYMS.get(_a, frozenset()) | {_b}
    _ANTONYMS[_b] = _ANTONYMS.get(_b, frozenset()) | {_a}


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light suffix-stripping stem of a lowercased word (plural, -ing, -ed), numbers unchanged."""
    if "-" in word and word[0].isalpha():
        head, _, tail = word.rpartition("-")
        return f"{head}-{stem(tail)}" if tail else word
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, keep in (("ies", "y"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("xes", "x")):
        if word.endswith(suffix):
            return word[: -len(suffix)] + keep
    if word.endswith("ing") and len(word) > 5:
        return word[:-3]
    if word.endswith("ed") and len(word) > 4:
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@lru_cache(maxsize=16384)
def rendered(text: str) -> str:
    """The text as a reader sees it rendered: HTML entities decoded, tags and markdown emphasis inside or
    around words removed, look-alike letters folded (Cyrillic "о" in "nоt"), apostrophe look-alikes as "'"."""
    text = html.unescape(_TAG.sub("", html.unescape(text)))
    text = _EMPHASIS.sub("", text)
    return normalize(text, fold_confusables=True).translate(_APOSTROPHES)


def words(text: str) -> list[str]:
    """Lowercased word tokens of the rendered text (any script; numbers keep inner ``.``/``,``; flags keep
    dashes)."""
    return [w.lower() for w in _WORD.findall(rendered(text))]


def content_words(text: str) -> list[str]:
    """Stems of the words that carry content: not stop words, negations or yes/no."""
    return [stem(w) for w in words(text) if w not in STOP_WORDS and not (len(w) == 1 and w.isalpha())]


def number_value(word: str) -> float | None:
    """The number a token spells (``"2,000"``, ``"1.5"``, ``"thirty"``), or None."""
    if word in _NUMBER_WORDS:
        return float(_NUMBER_WORDS[word])
    if "-" in word and all(part in _NUMBER_WORDS for part in word.split("-")):  # forty-five
        return float(sum(_NUMBER_WORDS[part] for part in word.split("-")))
    if _NUMBER.match(word):
        try:
            return float(word.replace(",", "") if re.match(r"^\d{1,3}(,\d{3})+$", word) else word.replace(",", "."))
        except ValueError:
            return None
    return None


#: Negation words that mark a clause as negated ("without" and "none" qualify a noun, not the clause).
_POLARITY_CUES = (NEGATIONS - {"without", "none", "nothing", "nobody", "nowhere"}) | frozenset(
    [
        "fail",
        "fails",
        "failed",
        "lack",
        "lacks",
        "lacked",
        "stop",
        "stops",
        "stopped",
        "cease",
        "ceases",
        "refuse",
        "refuses",
        "rarely",
        "seldom",
        "hardly",
        "false",
        "untrue",
        "except",
        "unable",
        "impossible",
    ]
)
_ONLY = frozenset({"only", "just", "exclusively", "solely"})


def _negated(tokens: Sequence[str]) -> bool:
    return any(t in _POLARITY_CUES or t.endswith("n't") for t in tokens)


@dataclass(frozen=True)
class Profile:
    """What the features need of one text, computed once (evidence sentences are profiled once per call)."""

    text: str
    content: frozenset[str]
    numbers: frozenset[float]
    units: frozenset[str]
    specifics: frozenset[str]
    clauses: tuple[tuple[frozenset[str], bool], ...]  # (content stems, negated) per clause
    leading_no: bool
    quantities: frozenset[tuple[float, str]]  # (number, the content stem after it)
    neighbours: frozenset[tuple[str, str, str]]  # (previous stem, stem, next stem) of every word
    only: bool


def _specifics(text: str) -> frozenset[str]:
    found: set[str] = set()
    for sentence in re.split(r"(?<=[.!?])\s+", rendered(text)):
        tokens = _WORD.findall(sentence)
        for position, token in enumerate(tokens):
            lower = token.lower()
            if lower in STOP_WORDS:
                continue
            if (
                any(c.isdigit() for c in token)
                or token.startswith("-")
                or re.search(r"\w[._/]\w", token)
                or (position > 0 and token[:1].isupper())
                or (len(token) > 1 and token.isupper())
            ):
                found.add(stem(lower))
    return frozenset(found)


@lru_cache(maxsize=8192)
def profile(text: str) -> Profile:
    """The :class:`Profile` of a text (cached: knowledge-base sentences recur across calls)."""
    tokens = words(text)
    numbers = {v for t in tokens if (v := number_value(t)) is not None}
    units = {stem(t) for t in tokens if stem(t) in _UNIT_FAMILIES or t in _UNIT_FAMILIES}
    clauses = []
    for part in _CLAUSE.split(rendered(text)):
        clauses.append((frozenset(content_words(part)), _negated(words(part))))
    leading_no = bool(tokens) and tokens[0] in _LEADING_NO
    stems = [stem(t) for t in tokens]
    quantities = set()
    for i, token in enumerate(tokens):
        value = number_value(token)
        if value is not None:
            following = next(
                (stems[j] for j in range(i + 1, min(i + 3, len(tokens))) if tokens[j] not in STOP_WORDS), ""
            )
            if following and number_value(tokens[i + 1] if i + 1 < len(tokens) else "") is None:
                quantities.add((value, following))
    padded = ["", *stems, ""]
    neighbours = {(padded[i - 1], padded[i], padded[i + 1]) for i in range(1, len(padded) - 1)}
    return Profile(
        text=text,
        content=frozenset(content_words(text)),
        numbers=frozenset(numbers),
        units=frozenset(units),
        specifics=_specifics(text),
        clauses=tuple(clauses),
        leading_no=leading_no,
        quantities=frozenset(quantities),
        neighbours=frozenset(neighbours),
        only=any(t in _ONLY for t in tokens),
    )


def coverage(claim: frozenset[str], other: frozenset[str]) -> float:
    """Fraction of ``claim``'s content stems found in ``other`` (1 when the claim has none)."""
    return len(claim & other) / len(claim) if claim else 1.0


def polarity(claim: Profile, sentence: Profile) -> tuple[float, float]:
    """(mismatch, claim negated): whether a claim clause and a sentence clause it aligns with best (shares at
    least a third of its content words; ties count) differ in negation, or an affirmative claim clause holds
    every content word of a negated sentence clause; a leading "No" negates an affirmative claim."""
    claim_clauses = [c for c in claim.clauses if c[0]]
    negated_any = any(n for _, n in claim.clauses)
    if claim.leading_no and not negated_any and claim_clauses:
        claim_clauses = [(claim_clauses[0][0], True), *claim_clauses[1:]]
        negated_any = True
    mismatch = 0.0
    for stems, negated in claim_clauses:
        best, tied = 0.0, set()
        for other, other_negated in sentence.clauses:
            overlap = coverage(stems, other) if other else 0.0
            if overlap > best + 1e-9:
                best, tied = overlap, {other_negated}
            elif overlap >= best - 1e-9 and overlap > 0:
                tied.add(other_negated)
        if best >= 1 / 3 and (not negated) in tied:
            mismatch = 1.0
    # a thing the sentence negates ("... but not SMS codes") that an affirmative claim clause asserts
    for other, other_negated in sentence.clauses:
        if other_negated and other:
            for stems, negated in claim_clauses:
                if not negated and coverage(other, stems) >= 0.99:
                    mismatch = 1.0
    return mismatch, float(negated_any)


def _quantity_changed(claim: Profile, sentence: Profile) -> float:
    """A number the claim gives for a thing the sentence counts with another number ("3 devices" vs "2 devices")."""
    for value, thing in claim.quantities:
        others = {v for v, t in sentence.quantities if t == thing}
        if others and value not in others:
            return 1.0
    return 0.0


def _substituted(claim: Profile, sentence: Profile) -> float:
    """A claim word absent from the sentence standing where a sentence word absent from the claim stands
    (same word before or after it): "a tar file" vs "a zip file", "Settings > Account" vs "Settings > Security"."""
    claim_words = {w for _, w, _ in claim.neighbours}
    sentence_words = {w for _, w, _ in sentence.neighbours}
    for before, word, after in claim.neighbours:
        if word in sentence_words or word in STOP_WORDS or not word:
            continue
        for s_before, s_word, s_after in sentence.neighbours:
            if s_word in claim_words or s_word in STOP_WORDS or not s_word:
                continue
            if (before and before == s_before and before not in STOP_WORDS) or (
                after and after == s_after and after not in STOP_WORDS
            ):
                return 1.0
    return 0.0


def _unit_changed(claim: Profile, sentence: Profile) -> float:
    for unit in claim.units:
        family = _UNIT_FAMILIES.get(unit)
        same = {u for u in sentence.units if _UNIT_FAMILIES.get(u) == family}
        if same and unit not in same:
            return 1.0
    return 0.0


def _antonym(claim: Profile, sentence: Profile, claim_tokens: frozenset[str], sentence_tokens: frozenset[str]) -> float:
    for token in claim_tokens - sentence_tokens:
        opposite = _ANTONYMS.get(token)
        if opposite and (opposite & sentence_tokens) and not (opposite & claim_tokens):
            return 1.0
    return 0.0


@lru_cache(maxsize=8192)
def _token_set(text: str) -> frozenset[str]:
    return frozenset(words(text)) | frozenset(stem(w) for w in words(text))


@dataclass(frozen=True)
class Evidence:
    """The evidence of one call: sentences (profiled), their chunk's index, and pooled sets."""

    sentences: tuple[str, ...]
    chunk_of: tuple[int, ...]
    chunks: tuple[str, ...]

    def pooled(self) -> tuple[frozenset[str], frozenset[float], frozenset[str], frozenset[str]]:
        """(content stems, numbers, specifics, token set) over all chunks."""
        content: set[str] = set()
        numbers: set[float] = set()
        specifics: set[str] = set()
        tokens: set[str] = set()
        for chunk in self.chunks:
            p = profile(chunk)
            content |= p.content
            numbers |= p.numbers
            specifics |= p.specifics
            tokens |= _token_set(chunk)
        return frozenset(content), frozenset(numbers), frozenset(specifics), frozenset(tokens)


def align(
    claim: str, evidence: Evidence, claim_vector: np.ndarray, sentence_vectors: np.ndarray
) -> tuple[int, np.ndarray]:
    """(index of the aligned sentence, feature vector in ``FEATURE_NAMES`` order) for one claim.

    ``claim_vector`` (dim,) and ``sentence_vectors`` (len(evidence.sentences), dim) are unit-length
    embeddings. Contract: evidence has at least one sentence.
    """
    c = profile(claim)
    cosines = sentence_vectors @ claim_vector
    covs = np.array([coverage(c.content, profile(s).content) for s in evidence.sentences])
    best = int(np.argmax(cosines + covs))
    s = profile(evidence.sentences[best])
    chunk = profile(evidence.chunks[evidence.chunk_of[best]])
    pooled_content, pooled_numbers, pooled_specifics, pooled_tokens = evidence.pooled()
    claim_tokens, sentence_tokens = _token_set(claim), _token_set(evidence.sentences[best])
    cov_s = float(covs[best])
    numbers_missing_s = len(c.numbers - s.numbers)
    number_changed = float(numbers_missing_s > 0 and bool(s.numbers - c.numbers))
    unit_changed = _unit_changed(c, s)
    mismatch, negated = polarity(c, s)
    antonym = _antonym(c, s, claim_tokens, sentence_tokens)
    specifics_missing_s = len({x for x in c.specifics if x not in sentence_tokens and x not in s.specifics})
    specifics_missing_all = len({x for x in c.specifics if x not in pooled_tokens and x not in pooled_specifics})
    cos_best = float(cosines[best])
    quantity_changed = _quantity_changed(c, s)
    substituted = _substituted(c, s)
    only_but_more = float(c.only and bool(s.content - c.content))
    row = [
        cos_best,
        float(cosines.max()),
        cov_s,
        coverage(c.content, chunk.content),
        coverage(c.content, pooled_content),
        coverage(s.content, c.content) if s.content else 0.0,
        math.log1p(len(c.content)),
        float(bool(c.numbers)),
        float(min(numbers_missing_s, 3)),
        float(min(len(c.numbers - pooled_numbers), 3)),
        number_changed,
        unit_changed,
        mismatch,
        negated,
        antonym,
        float(min(specifics_missing_s, 3)),
        float(min(specifics_missing_all, 3)),
        float(min(len(c.content - pooled_content), 5)),
        cov_s * mismatch,
        cov_s * number_changed,
        cov_s * antonym,
        cov_s * min(specifics_missing_s, 1),
        cov_s * unit_changed,
        cos_best * cov_s,
        quantity_changed,
        substituted,
        only_but_more,
        cov_s * quantity_changed,
        cov_s * substituted,
    ]
    return best, np.asarray(row, dtype=np.float64)
