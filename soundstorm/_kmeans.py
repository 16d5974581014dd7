"""K-means codebooks shared by the offline codecs and the semantic tokenizers.

One job: fit codebooks on feature frames with scikit-learn (``MiniBatchKMeans`` on a random
subsample, fast on a few CPU cores) and assign frames to their nearest codeword with torch.
Residual (RVQ) fitting fits level q on what levels 1..q-1 left unexplained. The first level may match
frames on a linear projection of them (``first_basis_DC``, e.g. a log-mel frame's first cepstral
coefficients, its spectral envelope): it clusters the projected frames and keeps, as each codeword, the
mean *full* frame of its cluster, so decoding still sums codewords and the later levels code what the
projection left out.

Shape letters: see :mod:`soundstorm`.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans


def fit_kmeans(frames_ND: torch.Tensor, num_clusters: int, seed: int = 0, max_iter: int = 30,
               max_frames: int = 100_000, what: str = "k-means") -> torch.Tensor:
    """Centroids ``[K, D]`` of ``frames_ND`` (a random subsample of at most ``max_frames`` rows)."""
    if frames_ND.ndim != 2:
        raise ValueError(f"{what}: frames must have shape [N, D], got {tuple(frames_ND.shape)}")
    num_frames = frames_ND.shape[0]
    if num_frames < num_clusters:
        raise ValueError(f"{what}: fitting {num_clusters} clusters needs at least {num_clusters} frames, "
                         f"got {num_frames}; give more audio or a smaller codebook/vocabulary size")
    if not torch.isfinite(frames_ND).all():
        raise ValueError(f"{what}: frames contain NaN or inf values")
    rng = np.random.default_rng(seed)
    if num_frames > max_frames:
        frames_ND = frames_ND[torch.from_numpy(np.sort(rng.choice(num_frames, max_frames, replace=False)))]
    data = frames_ND.double().numpy()
    kmeans = MiniBatchKMeans(n_clusters=num_clusters, batch_size=max(1024, 2 * num_clusters), n_init=1,
                             max_iter=max_iter, random_state=seed, init_size=min(len(data), 3 * max(1024, num_clusters)))
    kmeans.fit(data)
    return torch.from_numpy(kmeans.cluster_centers_).float()


def nearest(frames_ND: torch.Tensor, centroids_KD: torch.Tensor) -> torch.Tensor:
    """Index ``[N]`` of the closest centroid (squared Euclidean distance) of each frame."""
    frames_ND = frames_ND.float()
    dist_NK = (frames_ND.pow(2).sum(1, keepdim=True) - 2 * frames_ND @ centroids_KD.t()
               + centroids_KD.pow(2).sum(1)[None, :])
    return dist_NK.argmin(dim=1)


def _fit_projected(frames_ND: torch.Tensor, basis_DC: torch.Tensor, num_clusters: int, seed: int, max_iter: int,
                   max_frames: int, what: str) -> torch.Tensor:
    """Codewords ``[K, D]`` clustered on ``frames_ND @ basis_DC``: each the mean full frame of its cluster (a
    cluster left empty keeps its centroid mapped back through the basis, ``centroid @ basis.T``)."""
    projected_NC = frames_ND @ basis_DC
    centroids_KC = fit_kmeans(projected_NC, num_clusters, seed, max_iter, max_frames, what=what)
    idx_N = nearest(projected_NC, centroids_KC)
    sums_KD = torch.zeros(num_clusters, frames_ND.shape[1]).index_add_(0, idx_N, frames_ND)
    counts_K1 = torch.bincount(idx_N, minlength=num_clusters).float()[:, None]
    return torch.where(counts_K1 > 0, sums_KD / counts_K1.clamp(min=1.0), centroids_KC @ basis_DC.t())


def _nearest_at_level(residual_ND: torch.Tensor, centroids_KD: torch.Tensor, level: int,
                      first_basis_DC: torch.Tensor | None) -> torch.Tensor:
    if level == 0 and first_basis_DC is not None:
        return nearest(residual_ND @ first_basis_DC, centroids_KD @ first_basis_DC)
    return nearest(residual_ND, centroids_KD)


def fit_residual(frames_ND: torch.Tensor, num_levels: int, codebook_size: int, seed: int = 0, max_iter: int = 30,
                 max_frames: int = 100_000, what: str = "residual k-means",
                 first_basis_DC: torch.Tensor | None = None) -> torch.Tensor:
    """Residual codebooks ``[Q, K, D]``: level q is k-means on the residual after levels < q; level 1 on
    ``frames @ first_basis_DC`` when that is given (the module docstring says how)."""
    residual_ND = frames_ND.float().clone()
    codebooks = []
    for level in range(num_levels):
        name = f"{what} level {level + 1}"
        if level == 0 and first_basis_DC is not None:
            centroids_KD = _fit_projected(residual_ND, first_basis_DC.float(), codebook_size, seed, max_iter,
                                          max_frames, name)
        else:
            centroids_KD = fit_kmeans(residual_ND, codebook_size, seed + level, max_iter, max_frames, what=name)
        residual_ND = residual_ND - centroids_KD[_nearest_at_level(residual_ND, centroids_KD, level, first_basis_DC)]
        codebooks.append(centroids_KD)
    return torch.stack(codebooks)


def residual_encode(frames_ND: torch.Tensor, codebooks_QKD: torch.Tensor,
                    first_basis_DC: torch.Tensor | None = None) -> torch.Tensor:
    """Codes ``[Q, N]`` of frames under residual codebooks ``[Q, K, D]`` (fitted with the same
    ``first_basis_DC``)."""
    residual_ND = frames_ND.float()
    codes = []
    for level, centroids_KD in enumerate(codebooks_QKD):
        idx_N = _nearest_at_level(residual_ND, centroids_KD, level, first_basis_DC)
        residual_ND = residual_ND - centroids_KD[idx_N]
        codes.append(idx_N)
    return torch.stack(codes)


def residual_decode(codes_QN: torch.Tensor, codebooks_QKD: torch.Tensor) -> torch.Tensor:
    """Sum of the chosen codewords, ``[N, D]``; ``codes_QN`` may hold fewer levels than the codebooks."""
    out_ND = torch.zeros(codes_QN.shape[1], codebooks_QKD.shape[2])
    for level, idx_N in enumerate(codes_QN):
        out_ND = out_ND + codebooks_QKD[level][idx_N]
    return out_ND
