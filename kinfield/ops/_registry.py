"""One entry per custom op: its PyTorch twin, its CUDA function (when it exists), test inputs and tolerances.

Tests are parametrised over :data:`REGISTRY`, so no op can exist without a twin and tolerances.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch

from . import _cuda, _torch


@dataclass
class OpEntry:
    name: str
    twin: Callable
    cuda: Optional[Callable]
    make_inputs: Callable[[str, torch.dtype, int], Tuple[tuple, dict]]
    differentiable: Tuple[int, ...]  # positional inputs with gradients
    fwd_tol: Dict[str, float] = field(default_factory=lambda: {"rtol": 1e-5, "atol": 1e-6})
    bwd_tol: Dict[str, float] = field(default_factory=lambda: {"rtol": 1e-4, "atol": 1e-5})
    first_order_only: bool = False


def _hash_inputs(device: str, dtype: torch.dtype, seed: int, dim: int = 3):
    from ..nn.hashgrid import HashGridConfig, level_layout

    g = torch.Generator().manual_seed(seed)
    cfg = HashGridConfig(n_levels=3, n_features_per_level=2, log2_hashmap_size=7, base_resolution=3,
                         per_level_scale=2.0)  # small (gradcheck); the last level is hashed
    scales, res, offsets, hashed = level_layout(dim, cfg)
    params = (torch.rand(int(offsets[-1]) * 2, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
    # positions away from vertices of every level (finite differences and kernels agree there)
    x = (torch.rand(16, dim, generator=g, dtype=torch.float64) * 0.9 + 0.05).to(dtype)
    args = (x.to(device), params.to(device), offsets.to(device), res.to(device), scales.to(device),
            hashed.to(device), 2)
    return args, {}


def _composite_inputs(device: str, dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor([5, 0, 3, 8])
    ray_ids = torch.repeat_interleave(torch.arange(4), counts)
    m = int(counts.sum())
    t_starts = torch.cat([torch.sort(torch.rand(int(c), generator=g, dtype=torch.float64))[0] for c in counts])
    t_ends = t_starts + 0.05
    sig_s = torch.rand(m, generator=g, dtype=torch.float64) * 5
    sig_d = torch.rand(m, generator=g, dtype=torch.float64) * 5
    args = tuple(a.to(device=device, dtype=dtype) for a in (sig_s, sig_d, t_starts, t_ends))
    return args + (ray_ids.to(device), 4), {}


def _hash_inputs_4d(device: str, dtype: torch.dtype, seed: int):
    return _hash_inputs(device, dtype, seed, dim=4)


REGISTRY: Dict[str, OpEntry] = {
    "hash_grid_encode": OpEntry("hash_grid_encode", _torch.hash_grid_encode, _cuda.hash_grid_encode, _hash_inputs,
                                (0, 1), first_order_only=True),
    # the same op on space-time inputs (the dynamic and kinematic fields)
    "hash_grid_encode_4d": OpEntry("hash_grid_encode", _torch.hash_grid_encode, _cuda.hash_grid_encode,
                                   _hash_inputs_4d, (0, 1), first_order_only=True),
    "composite_blended": OpEntry("composite_blended", _torch.composite_blended, _cuda.composite_blended, _composite_inputs,
                                   (0, 1, 2, 3), first_order_only=True),
}
