"""Training claims made from the operator's own knowledge base: supported, contradicted, unsupported.

For each sentence of each chunk, with the chunk and its nearest neighbours (by embedding) as the evidence a
retriever would keep:

* supported: the sentence; its first clause (a compression); "Yes, ..." + the sentence; the sentence with
  synonyms swapped in (a paraphrase); small numbers written as words;
* contradicted: negation flipped (an auxiliary negated or a negation removed, sometimes after "No,"); a number
  changed; a unit changed within its kind (seconds -> minutes, MB -> GB); a word replaced by its antonym; a
  specific (a name, option, menu item, flag, platform) replaced by one from another chunk;
* unsupported: a sentence of a neighbouring chunk that is not in the evidence (true in the knowledge base,
  absent from the context); the sentence plus a clause from another chunk (a right answer with an invented
  detail); a sentence from a far chunk.

Every example names its group (the chunk it was made from), so fitting and calibration split by chunk.
Deterministic for a given seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .align import _UNIT_FAMILIES, STOP_WORDS, _specifics, number_value, words
from .model import LABELS
from .text import sentences

SUPPORTED, CONTRADICTED, UNSUPPORTED = (LABELS.index(x) for x in ("supported", "contradicted", "unsupported"))


@dataclass(frozen=True)
class Example:
    """One synthetic claim: text, the evidence documents (id, text), its label index, group and generator."""

    claim: str
    evidence: tuple[tuple[str, str], ...]
    label: int
    group: str
    kind: str


_AUX = re.compile(
    r"\b(can|will|is|are|was|were|does|do|did|has|have|should|must|may|could|would)\b(?!\s+not\b|n't)", re.IGNORECASE
)
_NEGATION = re.compile(
    r"\b(cannot|can't|can not|is not|are not|does not|do not|will not|isn't|aren't|doesn't|don't|won't|never|not)\b",
    re.IGNORECASE,
)
_UNNEGATE = {
    "cannot": "can", "can't": "can", "can not": "can", "is not": "is", "are not": "are", "does not": "does",
    "do not": "do", "will not": "will", "isn't": "is", "aren't": "are", "doesn't": "does", "don't": "do",
    "won't": "will", "never": "always", "not": "",
}  # fmt: skip
_SYNONYMS = (
    ("choose", "select"), ("open", "go to"), ("turn on", "enable"), ("every", "each"), ("automatically", "on its own"),
    ("can be", "may be"), ("you can", "it is possible to"), ("expires", "stops working"), ("removes", "deletes"),
    ("shows", "displays"), ("uses", "relies on"), ("returns", "gives back"), ("creates", "makes"),
    ("prints", "outputs"), ("begins", "starts"), ("large", "big"), ("small", "little"), ("quickly", "fast"),
    ("allows", "lets"), ("requires", "needs"), ("contains", "holds"), ("receives", "gets"), ("buy", "purchase"),
)  # fmt: skip
_SMALL_NUMBERS = {
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "10": "ten",
    "30": "thirty",
}
_ANTONYM_SWAPS = (
    ("enable", "disable"), ("before", "after"), ("more", "fewer"), ("increase", "decrease"), ("include", "exclude"),
    ("public", "private"), ("automatically", "manually"), ("always", "never"), ("first", "last"),
    ("upload", "download"), ("minimum", "maximum"), ("above", "below"), ("add", "remove"), ("show", "hide"),
    ("start", "stop"), ("open", "close"), ("lock", "unlock"), ("encrypted", "unencrypted"), ("required", "optional"),
    ("true", "false"), ("local", "remote"), ("higher", "lower"), ("larger", "smaller"), ("online", "offline"),
    ("left", "right"), ("beginning", "end"), ("permanently", "temporarily"), ("ascending", "descending"),
)  # fmt: skip
_CLAUSE_CUT = re.compile(r",\s|\s(?:and|but|while|which)\s")


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:] if len(text) > 1 and text[1:2].islower() else text


def negate(sentence: str) -> str | None:
    """The sentence with its polarity flipped (a negation removed, else the first auxiliary negated), or None."""
    match = _NEGATION.search(sentence)
    if match:
        replacement = _UNNEGATE[match.group(1).lower()]
        flipped = sentence[: match.start()] + replacement + sentence[match.end() :]
        return re.sub(r"\s{2,}", " ", flipped).strip()
    match = _AUX.search(sentence)
    if match is None:
        return None
    word = match.group(1)
    negated = "cannot" if word.lower() == "can" else f"{word} not"
    return sentence[: match.start()] + negated + sentence[match.end() :]


def question(sentence: str) -> str | None:
    """The yes/no question a sentence answers ("You can export X." -> "Can you export X?"), or None when it
    has no auxiliary among its first words."""
    match = _AUX.search(sentence)
    if match is None or len(sentence[: match.start()].split()) > 6 or not sentence[: match.start()].strip():
        return None
    subject = _lower_first(sentence[: match.start()].strip())
    rest = sentence[match.end() :].strip().rstrip(".!?")
    return f"{match.group(1).capitalize()} {subject} {rest}?"


def _replace_word(sentence: str, old: str, new: str) -> str | None:
    pattern = re.compile(rf"(?<![\w-]){re.escape(old)}(?![\w-])", re.IGNORECASE)
    if not pattern.search(sentence):
        return None
    return pattern.sub(new, sentence, count=1)


def _change_number(sentence: str, rng: random.Random, pool: Sequence[str]) -> str | None:
    found = [m for m in re.finditer(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w.]\d)", sentence)]
    if not found:
        return None
    match = rng.choice(found)
    value = number_value(match.group(0))
    if value is None:
        return None
    others = [p for p in pool if number_value(p) not in (None, value)]
    if others and rng.random() < 0.4:
        new = rng.choice(others)
    else:
        factor = rng.choice((2, 3, 10, 0.5))
        changed = value * factor if value * factor != value else value + 1
        new = str(int(changed)) if float(changed).is_integer() else f"{changed:g}"
        if new == match.group(0):
            new = str(int(value) + 1)
    return sentence[: match.start()] + new + sentence[match.end() :]


def _change_unit(sentence: str, rng: random.Random) -> str | None:
    tokens = [t for t in words(sentence) if t in _UNIT_FAMILIES or t.rstrip("s") in _UNIT_FAMILIES]
    if not tokens:
        return None
    token = rng.choice(tokens)
    base = token.rstrip("s") if token not in _UNIT_FAMILIES else token
    family = _UNIT_FAMILIES[base]
    options = [u for u, f in _UNIT_FAMILIES.items() if f == family and u != base and len(u) > 2]
    if not options:
        return None
    new = rng.choice(options) + ("s" if token.endswith("s") and token != base else "")
    return _replace_word(sentence, token, new)


def _swap_antonym(sentence: str, rng: random.Random) -> str | None:
    pairs = list(_ANTONYM_SWAPS)
    rng.shuffle(pairs)
    for a, b in pairs:
        for old, new in ((a, b), (b, a)):
            changed = _replace_word(sentence, old, new)
            if changed is not None:
                return changed
    return None


def _swap_specific(sentence: str, chunk: str, rng: random.Random, specifics: Sequence[str]) -> str | None:
    own = [t for t in re.findall(r"--?[\w-]+|[\w][\w.+/-]*", sentence) if t.lower() in _specifics(sentence)]
    own = [t for t in own if not t[0].isdigit()]
    chunk_lower = chunk.lower()
    candidates = [s for s in specifics if s.lower() not in chunk_lower]
    if not own or not candidates:
        return None
    return _replace_word(sentence, rng.choice(own), rng.choice(candidates))


def _paraphrase(sentence: str) -> str | None:
    changed, done = sentence, False
    for old, new in _SYNONYMS:
        replaced = _replace_word(changed, old, new)
        if replaced is not None:
            changed, done = replaced, True
    for digits, word in _SMALL_NUMBERS.items():
        replaced = _replace_word(changed, digits, word)
        if replaced is not None:
            changed, done = replaced, True
            break
    return changed if done else None


def _first_clause(sentence: str) -> str | None:
    parts = _CLAUSE_CUT.split(sentence, maxsplit=1)
    if len(parts) < 2:
        return None
    head = parts[0].strip().rstrip(",;:")
    if sum(1 for w in words(head) if w not in STOP_WORDS) < 3:
        return None
    return head + "."


def _raw_specifics(chunks: Sequence[tuple[str, str]]) -> list[str]:
    """Capitalised or option-like tokens of the corpus, in their original spelling (swap material)."""
    found: dict[str, None] = {}
    for _, text in chunks:
        lowered = _specifics(text)
        for token in re.findall(r"--?[\w-]+|[\w][\w.+/-]*", text):
            if token.lower() in lowered and not token[0].isdigit() and len(token) > 1:
                found[token] = None
    return list(found)


def generate(chunks: Sequence[tuple[str, str]], embedder: Any, *, neighbours: int = 2, seed: int = 0) -> list[Example]:
    """Synthetic claims for every sentence of ``chunks`` ((id, text) pairs, at least 3 with text)."""
    rng = random.Random(seed)
    chunks = [(i, t) for i, t in chunks if t.strip()]
    vectors = np.asarray(embedder.embed([t for _, t in chunks]), dtype=np.float32)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1)
    specifics = _raw_specifics(chunks)
    numbers = [w for _, t in chunks for w in words(t) if number_value(w) is not None and w[0].isdigit()]
    split = [sentences(t) for _, t in chunks]
    out: list[Example] = []
    for c, (chunk_id, text) in enumerate(chunks):
        near = [int(j) for j in order[c, :neighbours]]
        evidence = tuple([(chunk_id, text), *((chunks[j][0], chunks[j][1]) for j in near)])
        shuffled = list(evidence)
        rng.shuffle(shuffled)
        evidence = tuple(shuffled)
        without = tuple(d for d in evidence if d[0] != chunks[near[0]][0]) if near else evidence
        far = [int(j) for j in order[c, max(len(chunks) // 2, neighbours) :] if np.isfinite(similarity[c, j])]

        def add(claim: str | None, label: int, kind: str, docs: tuple[tuple[str, str], ...] = evidence) -> None:
            if claim and claim.strip():
                out.append(Example(claim.strip(), docs, label, chunk_id, kind))  # noqa: B023

        for span in split[c]:
            s = span.text
            add(s, SUPPORTED, "extractive")
            add(_first_clause(s), SUPPORTED, "compression")
            add(f"Yes, {_lower_first(s)}", SUPPORTED, "yes")
            negative = _NEGATION.search(s) is not None
            asked = question(negate(s) or "") if negative else question(s)
            if asked:  # a short answer read with its question, as the check reads "Yes." and "No."
                yes, no = (CONTRADICTED, SUPPORTED) if negative else (SUPPORTED, CONTRADICTED)
                add(f"{rng.choice(('Yes.', 'Yes, it is.', 'Yes, you can.'))} {asked}", yes, "yes-no")
                add(f"{rng.choice(('No.', 'No, it is not.', 'No, you cannot.'))} {asked}", no, "yes-no")
            add(_paraphrase(s), SUPPORTED, "paraphrase")
            flipped = negate(s)
            if flipped is not None:
                add(f"No, {_lower_first(flipped)}" if rng.random() < 0.5 else flipped, CONTRADICTED, "polarity")
            add(_change_number(s, rng, numbers), CONTRADICTED, "number")
            add(_change_unit(s, rng), CONTRADICTED, "unit")
            add(_swap_antonym(s, rng), CONTRADICTED, "antonym")
            add(_swap_specific(s, text, rng, specifics), CONTRADICTED, "specific")
            if near:
                neighbour = split[near[0]]
                if neighbour:
                    add(rng.choice(neighbour).text, UNSUPPORTED, "neighbour", without)
                    extra = _first_clause(rng.choice(neighbour).text)
                    if extra:
                        add(f"{s.rstrip('.!?')}, and {_lower_first(extra)}", UNSUPPORTED, "added-detail", without)
            if far:
                other = split[rng.choice(far)]
                if other:
                    add(rng.choice(other).text, UNSUPPORTED, "far")
    return out
