"""Black-box uncertainty from several sampled answers. Higher = more uncertain.

Lin, Trivedi & Sun (2023), "Generating with Confidence": with m samples, W is the m x m similarity matrix
(:mod:`.similarity`: embedding cosine, or cosine corrected by lexical overlap and negation and number
checks), D its degree matrix and L = I - D^-1/2 W D^-1/2 the normalised graph Laplacian.

Li et al. (2025), "Semantic Volume": the log-determinant of the Gram matrix of the samples' normalised
embeddings, a continuous measure of how far they spread.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .similarity import cosine_matrix
from .similarity import similarity_matrix as pairwise_similarity

#: NumSemSets' default threshold per similarity: 0.85 for cosine (paraphrases ~0.83 on the pairs file
#: and contradictions too: cosine cannot separate them); 0.65 for combined, midway between its means on
#: paraphrases (0.76) and contradictions (0.55) in guardrails_uq/data/similarity_pairs.jsonl.
DEFAULT_SET_THRESHOLD = {"cosine": 0.85, "combined": 0.65}
#: Jitter added to the Gram matrix's diagonal so that identical samples give a finite volume.
VOLUME_EPSILON = 1e-3


def similarity_matrix(embeddings: np.ndarray) -> np.ndarray:
    """W_ij = max(0, cos(e_i, e_j)) for unit-length rows (the ``cosine`` similarity)."""
    return cosine_matrix(embeddings)


def num_semantic_sets(similarity: np.ndarray, threshold: float = 0.85) -> int:
    """NumSemSets: samples joined greedily into sets whose members are all >= ``threshold`` similar to the
    set's first member (Lin et al. use bidirectional entailment; here embedding similarity)."""
    representatives: list[int] = []
    for i in range(len(similarity)):
        if not any(similarity[i, r] >= threshold for r in representatives):
            representatives.append(i)
    return len(representatives)


def _laplacian(similarity: np.ndarray) -> np.ndarray:
    degree = similarity.sum(axis=1)
    inv_sqrt = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    return np.eye(len(similarity)) - inv_sqrt[:, None] * similarity * inv_sqrt[None, :]


def eigv(similarity: np.ndarray) -> float:
    """U_EigV = sum_k max(0, 1 - lambda_k) over the eigenvalues of L (a soft count of semantic clusters)."""
    eigenvalues = np.linalg.eigvalsh(_laplacian(similarity))
    return float(np.clip(1.0 - eigenvalues, 0.0, None).sum())


def degree(similarity: np.ndarray) -> float:
    """U_Deg = trace(mI - D) / m^2 = 1 - mean degree / m (low similarity to the others = uncertain)."""
    m = len(similarity)
    return float(1.0 - similarity.sum() / (m * m))


def eccentricity(similarity: np.ndarray, eigen_threshold: float = 0.9) -> float:
    """U_Ecc = || [v_1 - v_bar, ..., v_m - v_bar] ||_2, with v_j the rows of the eigenvectors of L whose
    eigenvalues are below ``eigen_threshold`` (the samples' spectral embedding)."""
    eigenvalues, vectors = np.linalg.eigh(_laplacian(similarity))
    keep = eigenvalues < eigen_threshold
    if not keep.any():
        keep[0] = True
    points = vectors[:, keep]
    return float(np.linalg.norm(points - points.mean(axis=0)))


def semantic_volume(embeddings: np.ndarray, epsilon: float = VOLUME_EPSILON) -> float:
    """Semantic Volume (Li et al. 2025): log det(V V^T + epsilon I), V the m x d matrix of the samples'
    embeddings scaled to unit length (so V V^T is their Gram matrix of cosines).

    Identical samples give log((m + epsilon) epsilon^(m-1)), the minimum; m orthogonal ones give
    m log(1 + epsilon), the maximum. The paper optionally projects the embeddings by PCA first; here
    they are used as they are."""
    v = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = v / np.where(norms == 0, 1.0, norms)
    sign, logdet = np.linalg.slogdet(v @ v.T + epsilon * np.eye(len(v)))
    return float(logdet) if sign > 0 else float("-inf")


def sample_scores(
    embeddings: np.ndarray,
    *,
    texts: Sequence[str] | None = None,
    similarity: str = "cosine",
    set_threshold: float | None = None,
) -> dict[str, float]:
    """Every sample-based score, by signal leaf name. ``texts`` (the samples, in the embeddings' order)
    are needed by the ``combined`` similarity; ``set_threshold`` defaults per similarity."""
    if similarity != "cosine" and texts is None:
        raise ValueError(f"the {similarity!r} similarity needs the samples' texts")
    matrix = pairwise_similarity(texts or [""] * len(embeddings), embeddings, similarity)
    threshold = DEFAULT_SET_THRESHOLD[similarity] if set_threshold is None else set_threshold
    return {
        "num_sem_sets": float(num_semantic_sets(matrix, threshold)),
        "eigv": eigv(matrix),
        "deg": degree(matrix),
        "ecc": eccentricity(matrix),
        "semantic_volume": semantic_volume(embeddings),
    }
