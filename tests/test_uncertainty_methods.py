"""SAR, Semantic Volume, the claim-level view and the combined similarity: each against a small
hand-computed case, their direction (higher = more uncertain), the check's signals and the report's view."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from guardrails_uq import Action, Decision, Generation, TokenLogprob, TopLogprob
from guardrails_uq.call import Call
from guardrails_uq.report import render
from guardrails_uq.testing import assert_conforms
from guardrails_uq.uncertainty import UncertaintyCheck
from guardrails_uq.uncertainty.claims import claim_spans, claims, worst_claim
from guardrails_uq.uncertainty.sample_scores import sample_scores, semantic_volume
from guardrails_uq.uncertainty.sar import leave_one_out, sar, sentence_sar, token_relevance, token_sar
from guardrails_uq.uncertainty.similarity import (
    combined_matrix,
    content_words,
    negation_parity,
    numbers,
    pair_auroc,
)
from guardrails_uq.uncertainty.spec import SPEC

DATA = Path(__file__).resolve().parent.parent / "guardrails_uq" / "data"


# -- SAR ------------------------------------------------------------------------------------------------------


def test_token_sar_weights_nll_by_relevance() -> None:
    # NLL 1 and 2, relevance 0.25 and 0.75: (1 * 0.25 + 2 * 0.75) / 1.0 = 1.75
    assert token_sar(np.array([-1.0, -2.0]), np.array([0.25, 0.75])) == pytest.approx(1.75)
    # weights are normalised: scaling relevance changes nothing
    assert token_sar(np.array([-1.0, -2.0]), np.array([1.0, 3.0])) == pytest.approx(1.75)
    # no relevant token: uniform weights, the mean NLL
    assert token_sar(np.array([-1.0, -2.0]), np.zeros(2)) == pytest.approx(1.5)
    assert token_sar(np.array([]), np.array([])) == 0.0
    with pytest.raises(ValueError, match="2 logprobs but 1"):
        token_sar(np.array([-1.0, -2.0]), np.array([1.0]))


def test_token_relevance_and_leave_one_out() -> None:
    assert leave_one_out(["Paris", " is", "."]) == [" is.", "Paris.", "Paris is"]
    full = np.array([1.0, 0.0])
    without = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])  # cos 1, 0.6, -1 (clipped to 0)
    assert token_relevance(full, without).tolist() == pytest.approx([0.0, 0.4, 1.0])


def test_sentence_sar_and_sar_by_hand() -> None:
    # p = (0.5, 0.25), g_01 = 0.5, t = 1: E_0 = -log(0.5 + 0.5 * 0.25), E_1 = -log(0.25 + 0.5 * 0.5)
    g = np.array([[1.0, 0.5], [0.5, 1.0]])
    expected = (-math.log(0.625) - math.log(0.5)) / 2
    assert sentence_sar(np.log([0.5, 0.25]), g, temperature=1.0) == pytest.approx(expected)
    # SAR is SentSAR with p_j = exp(-TokenSAR_j)
    assert sar(np.array([-math.log(0.5), -math.log(0.25)]), g, temperature=1.0) == pytest.approx(expected)
    # agreeing, likely samples are less uncertain than disagreeing ones
    agree, disagree = np.ones((3, 3)), np.eye(3)
    assert sar(np.full(3, 0.5), agree) < sar(np.full(3, 0.5), disagree)


# -- Semantic Volume ------------------------------------------------------------------------------------------


def test_semantic_volume_by_hand() -> None:
    eps = 1e-3
    # orthogonal unit vectors: Gram = I, log det((1 + eps) I) = m log(1 + eps)
    assert semantic_volume(np.eye(3), eps) == pytest.approx(3 * math.log(1 + eps))
    # identical: Gram = all ones, eigenvalues (m, 0, 0): log((m + eps) eps^(m-1))
    assert semantic_volume(np.ones((3, 4)), eps) == pytest.approx(math.log((3 + eps) * eps**2))
    # two at cosine c: eigenvalues 1 +- c; vectors need not be unit length (they are normalised)
    c = 0.6
    pair = np.array([[2.0, 0.0], [c, math.sqrt(1 - c * c)]])
    assert semantic_volume(pair, eps) == pytest.approx(math.log((1 + c + eps) * (1 - c + eps)))


def test_sample_scores_include_volume_and_its_direction() -> None:
    same = np.tile([[1.0, 0.0, 0.0]], (4, 1))
    spread = np.eye(4)[:, :3].copy()
    spread[3] = [0.0, 0.6, 0.8]
    low, high = sample_scores(same), sample_scores(spread)
    assert high["semantic_volume"] > low["semantic_volume"]
    with pytest.raises(ValueError, match="needs the samples' texts"):
        sample_scores(same, similarity="combined")


# -- claims ---------------------------------------------------------------------------------------------------

TOKENS = ["Paris", " is", " big", ".", " It", " has", " 2", ".", "1", " million", " people", ".", "\n", "Lyon", "?"]
LOGPROBS = [-0.1, -0.2, -0.3, -0.1, -1.0, -2.0, -3.0, -0.5, -0.5, -1.0, -1.5, -0.1, -0.2, -0.4, -0.6]


def test_claims_split_sentences_not_decimals() -> None:
    assert claim_spans(TOKENS) == [(0, 4), (4, 13), (13, 15)]
    found = claims(TOKENS, LOGPROBS)
    assert [c.text for c in found] == ["Paris is big.", "It has 2.1 million people.", "Lyon?"]
    assert found[0].mean_nll == pytest.approx(0.175) and found[0].max_nll == pytest.approx(0.3)
    assert found[1].g_nll == pytest.approx(9.8) and found[1].mean_nll == pytest.approx(9.8 / 9)
    assert worst_claim(found) is found[1]
    assert claim_spans([".", " Hi"]) == [(0, 2)] and claim_spans([]) == []
    assert claim_spans(["Hi", ".", " ", "."]) == [(0, 4)], "punctuation alone joins the claim before it"


# -- similarity -----------------------------------------------------------------------------------------------


def test_negation_numbers_and_content_words() -> None:
    assert negation_parity("You can cancel.") == 0 and negation_parity("You cannot cancel.") == 1
    assert negation_parity("You can\u2019t cancel.") == 1 and negation_parity("It isn't not true.") == 0
    assert negation_parity("No, you can't.") == 1 and negation_parity("Yes, it works.") == 0
    assert numbers("seven plus 5 is 12") == {"7", "5", "12"} and numbers("Paris") == frozenset()
    assert content_words("The capital of Australia's states is Canberra.") == {
        "capital",
        "australia",
        "state",
        "canberra",
    }


def test_combined_similarity_by_hand() -> None:
    texts = ["You can cancel.", "You cannot cancel.", "Cancel, you can."]
    embeddings = np.tile([[1.0, 0.0]], (3, 1))  # cosine 1 everywhere: the embedder sees no difference
    w = combined_matrix(texts, embeddings)
    # 0 vs 1: overlap {cancel} = 1, so 0.5 * 1 + 0.5 * 1 = 1, times 0.5 for the negation mismatch
    assert w[0, 1] == pytest.approx(0.5) and w[1, 2] == pytest.approx(0.5)
    assert w[0, 2] == pytest.approx(1.0) and np.allclose(np.diag(w), 1.0) and np.allclose(w, w.T)
    years = combined_matrix(["In 1963.", "In 1961."], np.array([[1.0, 0.0], [0.8, 0.6]]))
    # cosine 0.8, overlap 0 ({1963} vs {1961}), number mismatch: (0.4 + 0) * 0.5
    assert years[0, 1] == pytest.approx(0.2)
    scores = sample_scores(embeddings, texts=texts, similarity="combined")
    assert scores["num_sem_sets"] == 2 and sample_scores(embeddings)["num_sem_sets"] == 1


@pytest.mark.slow
def test_combined_similarity_separates_contradictions_better_than_cosine() -> None:
    """On the written pairs (paraphrases vs contradictions), with the packaged MiniLM."""
    from guardrails_uq.embeddings import default_embedder

    rows = [json.loads(line) for line in (DATA / "similarity_pairs.jsonl").read_text().splitlines()]
    pairs = [(r["a"], r["b"]) for r in rows]
    paraphrase = [r["label"] == "paraphrase" for r in rows]
    embed = default_embedder().embed
    cosine, combined = (pair_auroc(pairs, paraphrase, embed, kind) for kind in ("cosine", "combined"))
    assert combined > 0.72 and combined > cosine + 0.15, (cosine, combined)


# -- the check and the report ---------------------------------------------------------------------------------


class FakeEmbedder:
    """Deterministic unit vectors from a text's letters (no model): same letters, same vector."""

    name = "fake-letters"

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = np.zeros((len(texts), 26))
        for i, text in enumerate(texts):
            for ch in text.lower():
                if "a" <= ch <= "z":
                    rows[i, ord(ch) - 97] += 1.0
        rows[:, 0] += 1e-3
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def tokens_of(pieces: list[str], logprobs: list[float]) -> list[TokenLogprob]:
    return [
        TokenLogprob(token=p, logprob=lp, top=[TopLogprob(token=p, logprob=lp)])
        for p, lp in zip(pieces, logprobs, strict=True)
    ]


def test_check_publishes_claims_sar_and_volume() -> None:
    check = UncertaintyCheck(embedder=FakeEmbedder(), sar=True, samples=2)
    generation = Generation(
        text="".join(TOKENS), tokens=tokens_of(TOKENS, LOGPROBS), samples=["Paris is big.", "Lyon is small."]
    )
    result = check.run(Call(generation=generation))
    values = result.values
    assert values["uncertainty.samples"] == 2 and values["uncertainty.claims"] == 3
    assert values["uncertainty.worst_claim_nll"] == pytest.approx(9.8 / 9)
    assert result.evidence["claims"][1]["text"] == "It has 2.1 million people."
    assert values["uncertainty.token_sar"] > 0 and values["uncertainty.semantic_volume"] is not None
    assert values["uncertainty.num_sem_sets"] >= 2
    short = UncertaintyCheck(embedder=FakeEmbedder(), sar=True, sar_max_tokens=3).run(Call(generation=generation))
    assert short.values["uncertainty.token_sar"] is None, "too long for sar_max_tokens"
    assert short.values["uncertainty.semantic_volume"] is not None
    calls = [
        Call(generation=generation),
        Call(generation=Generation(text="x")),
        Call(generation=Generation(text="Lyon.", tokens=tokens_of(["Lyon", "."], [-0.5, -0.1]))),
    ]
    assert_conforms(check, SPEC, calls)
    assert_conforms(UncertaintyCheck(similarity="cosine"), SPEC, calls)


def test_token_sar_and_worst_claim_are_higher_when_more_uncertain() -> None:
    check = UncertaintyCheck(embedder=FakeEmbedder(), sar=True)
    sure = check.run(Call(generation=Generation(text="Paris.", tokens=tokens_of(["Paris", "."], [-0.05, -0.01]))))
    unsure = check.run(Call(generation=Generation(text="Lyon.", tokens=tokens_of(["Lyon", "."], [-2.0, -0.5]))))
    for name in ("uncertainty.token_sar", "uncertainty.worst_claim_nll"):
        assert unsure.values[name] > sure.values[name], name


def test_report_shows_which_claim_was_unsure() -> None:
    evidence = {
        "uncertainty": {"tokens": [{"token": t, "logprob": lp} for t, lp in zip(TOKENS, LOGPROBS, strict=True)]}
    }
    decision = Decision(
        policy="demo", phase="output", action=Action.ALLOW, generated="".join(TOKENS), evidence=evidence
    )
    page = render([decision])
    assert 'class="claims"' in page and "Claims: 3 sentence(s)" in page
    assert "least sure: \u201cIt has 2.1 million people.\u201d" in page
    assert page.count('<tr class="unsure">') == 1
    unsure_row = page[page.index('<tr class="unsure">') :].split("</tr>")[0]
    assert " million" in unsure_row and f"{9.8 / 9:.3f}" in unsure_row
    single = render(
        [decision.model_copy(update={"evidence": {"uncertainty": {"tokens": evidence["uncertainty"]["tokens"][:4]}}})]
    )
    assert "Claims: 1 sentence(s)" in single and '<tr class="unsure">' not in single
