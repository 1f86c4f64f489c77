"""Pairwise similarity of sampled answers, for the sample-based scores (NumSemSets, EigV, Deg, Ecc).

Lin et al. (2023) judge two answers the same by bidirectional entailment (an NLI model). The embedded
MiniLM is not an NLI model: it puts "You can cancel at any time" and "You cannot cancel at any time" at
cosine ~0.9, so two contradictory samples count as one meaning. ``combined`` corrects the cosine with
three cheap, explainable text checks (no second model):

    s(a, b) = ((1 - w) * cos(a, b) + w * overlap(a, b)) * (1 - p_neg)^[negations differ]
                                                          * (1 - p_num)^[numbers differ]

* ``overlap``: overlap coefficient |A & B| / min(|A|, |B|) of the two answers' content words (lowercased,
  stop words and negation cues removed, number words read as numbers, plural -s stripped); a short
  answer contained in a long one ("Canberra" / "The capital is Canberra") scores 1, two different
  entities in the same frame ("... is Canberra" / "... is Sydney") score below 1. Without content words
  on either side it is the cosine.
* negations differ: the two answers' polarities differ (:func:`negation_parity`: the count of negation
  cues such as not, no, never, n't, cannot, without, unable, impossible, modulo 2; a leading "No," makes
  an answer negative): "you can" / "you cannot".
* numbers differ: both answers state numbers and the sets differ ("1963" / "1961", "seven" / "7" agree).

Weights are fixed (w = 0.5, p_neg = p_num = 0.5), chosen before measuring, not fitted. On the written
pairs in ``guardrails_uq/data/similarity_pairs.jsonl`` (60 paraphrases, 66 contradictions: negation, other
entity, other number, antonym) the AUROC for telling paraphrases from contradictions with MiniLM is 0.50
for cosine and 0.78 for combined (negation pairs 0.48 -> 0.86, numbers 0.30 -> 0.85, entities
0.61 -> 0.67, antonyms 0.59 -> 0.70; bench/uncertainty.py prints it). Known misses: a paraphrase that
negates differently ("closed on Sundays" / "not open on Sunday") is penalised; antonyms ("early" /
"late") stay hard.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import numpy as np

Similarity = Literal["cosine", "combined"]
SIMILARITIES: tuple[str, ...] = ("cosine", "combined")

#: Weight of the lexical overlap, and the factors applied on a negation or number mismatch.
OVERLAP_WEIGHT = 0.5
NEGATION_PENALTY = 0.5
NUMBER_PENALTY = 0.5

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NEGATIONS = frozenset((
    "not", "no", "never", "none", "nobody", "nothing", "nowhere", "neither", "nor", "cannot", "without", "unable",
    "impossible",
))  # fmt: skip
_STOP = frozenset((
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "doing", "has",
    "have", "had", "having", "it", "its", "it's", "this", "that", "these", "those", "there", "here", "of", "in",
    "on", "at", "to", "for", "from", "by", "with", "as", "and", "or", "but", "if", "then", "so", "than", "too",
    "very", "can", "could", "will", "would", "shall", "should", "may", "might", "must", "i", "you", "he", "she",
    "we", "they", "me", "him", "her", "us", "them", "my", "your", "his", "our", "their", "what", "which", "who",
    "whom", "whose", "when", "where", "why", "how", "yes", "sorry", "answer", "just", "about", "also", "only",
    "really", "right", "now",
))  # fmt: skip
_SMALL_NUMBERS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)  # fmt: skip
_NUMBER_WORDS = {word: str(value) for value, word in enumerate(_SMALL_NUMBERS)}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "hundred": "100", "thousand": "1000"})


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def is_negation(word: str) -> bool:
    """A negation cue: not, no, never, cannot, any n't contraction, unable, impossible, ..."""
    return word in _NEGATIONS or word.endswith("n't")


def negation_parity(text: str) -> int:
    """Polarity of ``text``: 1 negative, 0 positive. The number of negation cues modulo 2 ("you can't not"
    negates twice), except that a leading answer particle sets it: "No, ..." is negative whatever follows
    ("No, you can't" agrees with "You cannot"), "Yes, ..." is read from the rest."""
    words = _words(text)
    if words and words[0] == "no":
        return 1
    if words and words[0] == "yes":
        words = words[1:]
    return sum(is_negation(w) for w in words) % 2


def numbers(text: str) -> frozenset[str]:
    """The numbers ``text`` states, as digit strings (number words up to twenty and tens read too)."""
    found = set()
    for word in _words(text):
        if word.isdigit():
            found.add(str(int(word)))
        elif word in _NUMBER_WORDS:
            found.add(_NUMBER_WORDS[word])
    return frozenset(found)


def content_words(text: str) -> frozenset[str]:
    """Lowercased words without stop words and negation cues; numbers as digits; plural -s stripped."""
    out = set()
    for word in _words(text):
        word = word.removesuffix("'s")
        if word in _STOP or is_negation(word):
            continue
        word = _NUMBER_WORDS.get(word, word)
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.add(word)
    return frozenset(out)


def cosine_matrix(embeddings: np.ndarray) -> np.ndarray:
    """W_ij = max(0, cos(e_i, e_j)) for unit-length rows."""
    return np.clip(embeddings @ embeddings.T, 0.0, 1.0)


def overlap_matrix(texts: Sequence[str], fallback: np.ndarray) -> np.ndarray:
    """Overlap coefficient of content words per pair; ``fallback[i, j]`` where a side has none."""
    words = [content_words(t) for t in texts]
    out = np.array(fallback, dtype=np.float64, copy=True)
    for i, a in enumerate(words):
        for j in range(i + 1, len(words)):
            b = words[j]
            if a and b:
                out[i, j] = out[j, i] = len(a & b) / min(len(a), len(b))
    np.fill_diagonal(out, 1.0)
    return out


def mismatch_matrices(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(negation parity differs, both state numbers and they differ) per pair, as boolean matrices."""
    parity = np.array([negation_parity(t) for t in texts])
    stated = [numbers(t) for t in texts]
    negation = parity[:, None] != parity[None, :]
    number = np.zeros((len(texts), len(texts)), dtype=bool)
    for i, a in enumerate(stated):
        for j in range(i + 1, len(stated)):
            number[i, j] = number[j, i] = bool(a) and bool(stated[j]) and a != stated[j]
    return negation, number


def combined_matrix(
    texts: Sequence[str],
    embeddings: np.ndarray,
    *,
    overlap_weight: float = OVERLAP_WEIGHT,
    negation_penalty: float = NEGATION_PENALTY,
    number_penalty: float = NUMBER_PENALTY,
) -> np.ndarray:
    """The ``combined`` similarity (module docstring): symmetric, in [0, 1], 1 on the diagonal."""
    if len(texts) != len(embeddings):
        raise ValueError(f"{len(texts)} texts but {len(embeddings)} embeddings")
    cosine = cosine_matrix(embeddings).astype(np.float64)
    mixed = (1 - overlap_weight) * cosine + overlap_weight * overlap_matrix(texts, cosine)
    negation, number = mismatch_matrices(texts)
    mixed *= np.where(negation, 1 - negation_penalty, 1.0) * np.where(number, 1 - number_penalty, 1.0)
    np.fill_diagonal(mixed, 1.0)
    return np.clip(mixed, 0.0, 1.0)


def similarity_matrix(texts: Sequence[str], embeddings: np.ndarray, kind: str = "combined") -> np.ndarray:
    """The m x m similarity the sample scores use: ``cosine`` (embeddings only) or ``combined``."""
    if kind == "cosine":
        return cosine_matrix(embeddings)
    if kind == "combined":
        return combined_matrix(texts, embeddings)
    raise ValueError(f"unknown similarity {kind!r}; use one of {SIMILARITIES}")


def pair_similarities(pairs: Sequence[tuple[str, str]], embed: object, kind: str) -> np.ndarray:
    """Similarity of each (a, b) pair under ``kind``; ``embed(texts) -> unit rows`` embeds all texts once."""
    texts = [t for pair in pairs for t in pair]
    vectors = np.asarray(embed(texts))  # type: ignore[operator]
    return np.array([similarity_matrix(pair, vectors[2 * i : 2 * i + 2], kind)[0, 1] for i, pair in enumerate(pairs)])


def pair_auroc(pairs: Sequence[tuple[str, str]], paraphrase: Sequence[bool], embed: object, kind: str) -> float:
    """AUROC of ``kind``'s similarity for telling paraphrases (True) from contradictions (False)."""
    from ..metrics import auroc

    return auroc(pair_similarities(pairs, embed, kind), paraphrase)
