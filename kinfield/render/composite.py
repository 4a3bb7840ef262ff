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


__all__ = ["accumulate", "composite_blended"]
