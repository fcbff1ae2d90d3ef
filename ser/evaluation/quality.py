"""How good is a synthetic set? Distances between sets of embeddings (or of images), as pure functions.

All inputs are (N, D) float arrays. The embeddings come from a classifier trained on real clips
(`ser.diffusion.assess` builds them); any fixed feature space works.

- Frechet distance and KID (torchmetrics' implementations, fed precomputed features). KID is
  the unbiased polynomial-kernel MMD^2 averaged over random subsets, the one to trust with the
  tens-to-hundreds of clips an emotion corpus has; FD is biased upward at small N.
- k-NN precision and recall (Kynkaanniemi et al., 2019): precision = share of synthetic samples
  inside the real data's k-NN balls (realism), recall = share of real samples inside the
  synthetic data's balls (coverage).
- Memorisation: each synthetic sample's distance to its nearest training clip, against the same
  distance for real clips the generator never saw. Copies sit far below the held-out distances.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance


class _Precomputed(nn.Module):
    """torchmetrics' FID/KID take a feature extractor; ours already ran, so it is the identity."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def frechet_distance(a, b) -> float:
    """Frechet distance between Gaussians fitted to two sets of features."""
    a, b = _as_tensor(a), _as_tensor(b)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Frechet distance needs at least 2 samples per set")
    fid = FrechetInceptionDistance(feature=_Precomputed(a.shape[1]), normalize=True)
    fid.set_dtype(torch.float64)
    fid.update(a, real=True)
    fid.update(b, real=False)
    return float(fid.compute())


def kernel_distance(a, b, subsets: int = 100, subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets
    (subset_size defaults to the smaller set, capped at 1000)."""
    a, b = _as_tensor(a), _as_tensor(b)
    size = subset_size or min(len(a), len(b), 1000)
    if size < 2 or size > min(len(a), len(b)):
        raise ValueError(f"KID subset size {size} needs 2 <= size <= min set size {min(len(a), len(b))}")
    kid = KernelInceptionDistance(feature=_Precomputed(a.shape[1]), subsets=subsets, subset_size=size, normalize=True)
    kid.set_dtype(torch.float64)
    kid.update(a, real=True)
    kid.update(b, real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the subsets are random
        mean, std = kid.compute()
    return float(mean), float(std)


def _kth_neighbour_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # +1: each point is its own nearest neighbour


def knn_precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    real, fake = _as_tensor(real), _as_tensor(fake)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"k-NN precision/recall with k={k} needs more than {k} samples per set")
    real_r, fake_r = _kth_neighbour_radius(real, k), _kth_neighbour_radius(fake, k)
    d = torch.cdist(fake, real)  # (n_fake, n_real)
    precision = (d <= real_r[None, :]).any(dim=1).double().mean()
    recall = (d.T <= fake_r[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


def nearest_distances(queries, reference) -> np.ndarray:
    """Euclidean distance from each query to its nearest reference point."""
    return torch.cdist(_as_tensor(queries), _as_tensor(reference)).min(dim=1).values.numpy()


def memorization(train, synthetic, heldout, quantile: float = 0.05) -> dict:
    """Are synthetic samples closer to the training clips than new real clips are?

    `close_rate`: share of synthetic samples nearer their nearest training clip than the
    `quantile` of held-out clips' nearest-training distances (about `quantile` for a generator
    that makes new clips; near 1 for one that copies). `median_ratio`: median synthetic distance
    over median held-out distance (below 1: closer to the training set than new speech is).
    """
    syn_d, held_d = nearest_distances(synthetic, train), nearest_distances(heldout, train)
    threshold = float(np.quantile(held_d, quantile))
    return {
        "close_rate": float(np.mean(syn_d < threshold)),
        "expected_close_rate": quantile,
        "median_ratio": float(np.median(syn_d) / np.median(held_d)),
        "synthetic_median_nn": float(np.median(syn_d)),
        "heldout_median_nn": float(np.median(held_d)),
        "synthetic_min_nn": float(syn_d.min()),
    }
