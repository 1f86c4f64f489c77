"""SAR, "Shifting Attention to Relevance" (Duan et al., ACL 2024). Higher = more uncertain.

Token level (TokenSAR). A token that carries little meaning ("the", ".") should not make an answer look
unsure. Token i's relevance is how much the answer's meaning changes without it,
R_i = 1 - g(s, s without token i); TokenSAR = sum_i -log p(z_i) * R_i / sum_j R_j.

Sentence level (SentSAR) over m sampled answers with probabilities p_j: an answer that many likely
answers agree with is less uncertain, E_j = -log(p_j + (1/t) sum_{k != j} g(s_j, s_k) p_k), and
SentSAR = mean_j E_j (t = 0.001 as in LM-Polygraph). SAR is SentSAR with p_j = exp(-TokenSAR_j).

Deviation from the paper: g is a cross-encoder (RoBERTa-large fine-tuned on STS-B) there; here it is the
cosine of the configured embedder (MiniLM by default), clipped to [0, 1], so no second model is loaded.
Relevance is measured on the answer alone (the paper prepends the question): a long prompt would push the
answer out of the embedder's input window, and the weights are normalised per answer anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: SentSAR's temperature t (LM-Polygraph's value).
TEMPERATURE = 1e-3


def leave_one_out(tokens: Sequence[str]) -> list[str]:
    """The answer without each token in turn: ``"".join(tokens)`` minus token i, for every i."""
    return ["".join(tokens[:i]) + "".join(tokens[i + 1 :]) for i in range(len(tokens))]


def token_relevance(full: np.ndarray, without: np.ndarray) -> np.ndarray:
    """R_i = 1 - max(0, cos(full, without_i)) for a unit vector ``full`` and unit rows ``without``."""
    return 1.0 - np.clip(np.asarray(without) @ np.asarray(full), 0.0, 1.0)


def embedder_relevance(tokens: Sequence[str], embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """Token relevance with ``embed`` (unit rows) as the similarity: one call embedding the answer and its
    len(tokens) leave-one-out variants."""
    vectors = np.asarray(embed(["".join(tokens), *leave_one_out(tokens)]), dtype=np.float64)
    return token_relevance(vectors[0], vectors[1:])


def token_sar(logprobs: np.ndarray, relevance: np.ndarray) -> float:
    """TokenSAR = sum_i -log p_i * R_i / sum_j R_j. With no relevant token (all R = 0) the weights are
    uniform (mean NLL); an empty answer scores 0."""
    logprobs = np.asarray(logprobs, dtype=np.float64)
    relevance = np.asarray(relevance, dtype=np.float64)
    if len(logprobs) != len(relevance):
        raise ValueError(f"{len(logprobs)} logprobs but {len(relevance)} relevance weights")
    if not len(logprobs):
        return 0.0
    total = relevance.sum()
    weights = relevance / total if total > 0 else np.full(len(relevance), 1.0 / len(relevance))
    return float(-(logprobs * weights).sum())


def sentence_sar(log_likelihoods: np.ndarray, similarity: np.ndarray, temperature: float = TEMPERATURE) -> float:
    """SentSAR = mean_j -log(p_j + (1/t) sum_{k != j} g_jk p_k), with p_j = exp(log_likelihoods[j]) the
    samples' probabilities and ``similarity`` the m x m matrix g."""
    p = np.exp(np.asarray(log_likelihoods, dtype=np.float64))
    g = np.asarray(similarity, dtype=np.float64) * (1.0 - np.eye(len(p)))
    relevance = g @ p / temperature
    return float(np.mean(-np.log(p + relevance)))


def sar(token_sars: np.ndarray, similarity: np.ndarray, temperature: float = TEMPERATURE) -> float:
    """SAR: SentSAR over the samples with each sample's probability exp(-TokenSAR)."""
    return sentence_sar(-np.asarray(token_sars, dtype=np.float64), similarity, temperature)
