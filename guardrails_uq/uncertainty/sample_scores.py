"""Black-box uncertainty from several sampled answers (Lin, Trivedi & Sun 2023, "Generating with
Confidence"), with embedding cosine similarity as the pairwise similarity. Higher = more uncertain.

With m samples, W is the m x m similarity matrix (cosine of normalised embeddings, clipped to [0, 1]),
D its degree matrix and L = I - D^-1/2 W D^-1/2 the normalised graph Laplacian.
"""

from __future__ import annotations

import numpy as np


def similarity_matrix(embeddings: np.ndarray) -> np.ndarray:
    """W_ij = max(0, cos(e_i, e_j)) for unit-length rows."""
    return np.clip(embeddings @ embeddings.T, 0.0, 1.0)


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


def sample_scores(embeddings: np.ndarray, *, set_threshold: float = 0.85) -> dict[str, float]:
    """Every sample-based score, by signal leaf name."""
    similarity = similarity_matrix(embeddings)
    return {
        "num_sem_sets": float(num_semantic_sets(similarity, set_threshold)),
        "eigv": eigv(similarity),
        "deg": degree(similarity),
        "ecc": eccentricity(similarity),
    }
