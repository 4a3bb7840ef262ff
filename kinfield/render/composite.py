"""Compositing packed samples: per-field weights (METHOD 1.4) and accumulation along rays."""
from __future__ import annotations

import torch

from ..ops import composite_blended


def accumulate(values: torch.Tensor, ray_ids: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Sum packed per-sample values along their rays.

    Args:
        values: ``[M]`` or ``[M, C]``; ray_ids: ``[M]`` int64; n_rays: ``R``.

    Returns:
        ``[R]`` or ``[R, C]``.
    """
    out = values.new_zeros((n_rays,) + tuple(values.shape[1:]))
    return out.index_add(0, ray_ids, values)


def dynamic_probability(samples) -> torch.Tensor:
    """Expected probability ``[R]`` that each ray of a render sees dynamic content (detached; METHOD 2.2):
    ``sum_k w^d_k sigma^d_k / (sigma^d_k + sigma^s_k)`` over the ray's packed ``samples``."""
    s = samples
    share = s.sigma_d / (s.sigma_d + s.sigma_s).clamp_min(1e-10)
    return accumulate((s.w_d * share).detach(), s.ray_ids, s.n_rays)


__all__ = ["accumulate", "composite_blended", "dynamic_probability"]
