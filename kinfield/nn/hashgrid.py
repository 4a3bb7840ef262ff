"""Multiresolution hash encoding with a tinycudann backend and an exact pure-PyTorch twin."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .. import _external
from ..ops import hash_grid_encode


@dataclass
class HashGridConfig:
    """tcnn ``HashGrid`` encoding options (same names as tcnn's JSON, snake_case)."""

    n_levels: int = field(default=16, metadata={"help": "hash-grid levels (resolutions)"})
    n_features_per_level: int = field(default=2, metadata={
        "help": "features per hash-grid level (the encoding outputs levels x this)"})
    log2_hashmap_size: int = field(default=19, metadata={
        "help": "log2 of the entries of each hash-grid level's table (a level with fewer vertices is stored dense)"})
    base_resolution: int = field(default=16, metadata={
        "help": "resolution of the coarsest hash-grid level (vertices per axis of the grid's [0, 1] coordinates)"})
    per_level_scale: float = field(default=1.5, metadata={
        "help": "resolution factor from one hash-grid level to the next (>= 1)"})

    def tcnn_config(self) -> dict:
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
        }


def level_layout(n_dims: int, cfg: HashGridConfig):
    """Per-level scale, resolution, table size and hashing exactly as tiny-cuda-nn computes them.

    Returns:
        ``(scales [L] float32, resolutions [L] int64, offsets [L+1] int64, hashed [L] bool)``.
    """
    log2_scale = np.float32(np.log2(np.float32(cfg.per_level_scale)))
    max_params = 1 << cfg.log2_hashmap_size
    scales, resolutions, sizes, hashed = [], [], [], []
    for level in range(cfg.n_levels):
        scale = np.float32(np.exp2(np.float32(level) * log2_scale) * np.float32(cfg.base_resolution) - np.float32(1.0))
        res = int(math.ceil(float(scale))) + 1
        dense = res**n_dims
        size = min(((min(dense, 2**31 - 1) + 7) // 8) * 8, max_params)
        scales.append(scale)
        resolutions.append(res)
        sizes.append(size)
        hashed.append(dense > size)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return (
        torch.tensor(np.array(scales, dtype=np.float32)),
        torch.tensor(resolutions, dtype=torch.int64),
        torch.tensor(offsets, dtype=torch.int64),
        torch.tensor(hashed, dtype=torch.bool),
    )


class HashGrid(nn.Module):
    """Hash-grid encoding of points in [0, 1]^D.

    The parameters are one flat tensor in tinycudann's layout (``params``), so a state dict moves
    between the ``torch`` and ``tcnn`` backends unchanged. Inputs are clamped to [0, 1]. The output is
    always float32 (the kinematic losses take finite differences, where fp16 rounding would swamp
    the signal).

    Args:
        n_dims: input dimension D (3 for space, 4 for space-time).
        cfg: encoding options.
        backend: ``"auto"`` (tcnn when importable and the input is on CUDA), ``"tcnn"`` or ``"torch"``.
    """

    def __init__(self, n_dims: int, cfg: HashGridConfig, backend: str = "auto"):
        super().__init__()
        if backend not in ("auto", "tcnn", "torch"):
            raise ValueError(f"HashGrid backend must be auto, tcnn or torch, not {backend!r}")
        self.n_dims = n_dims
        self.cfg = cfg
        self.backend = backend
        scales, res, offsets, hashed = level_layout(n_dims, cfg)
        self.finest_scale = float(scales[-1])  # (a Python float: reading the buffer is a host sync on a GPU)
        self.register_buffer("scales", scales, persistent=False)
        self.register_buffer("resolutions", res, persistent=False)
        self.register_buffer("offsets", offsets, persistent=False)
        self.register_buffer("hashed", hashed, persistent=False)
        n_params = int(offsets[-1]) * cfg.n_features_per_level
        self.params = nn.Parameter(torch.empty(n_params).uniform_(-1e-4, 1e-4))
        self._tcnn = None
        if backend == "auto" and not torch.cuda.is_available():
            _external.get("tinycudann", "hash grid")  # logs once per process why the torch path is used

    def finest_cell(self, extent: float) -> float:
        """World size of one cell of the finest level when [0, 1] spans ``extent`` (a box's longest side)."""
        return extent / self.finest_scale

    @property
    def n_output_dims(self) -> int:
        return self.cfg.n_levels * self.cfg.n_features_per_level

    def _tcnn_module(self):
        if self._tcnn is None:
            tcnn = _external.get("tinycudann", "hash grid")
            if tcnn is None:
                return None
            enc = tcnn.Encoding(self.n_dims, self.cfg.tcnn_config(), dtype=torch.float32)
            object.__setattr__(self, "_tcnn", enc)  # (not a submodule: its parameter is ours, see forward)
        return self._tcnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``x [N, D]`` in [0, 1] to ``[N, L * F]`` float32 features."""
        x = x.clamp(0.0, 1.0)
        if self.backend != "torch" and x.is_cuda:
            enc = self._tcnn_module()
            if enc is not None:
                # tcnn computes with its module's ``params``: hand it the tensor this module holds now, which under
                # torch.func.functional_call (the frozen dynamic field of the warps) is not the Parameter
                enc._parameters["params"] = self.params
                return enc(x).float()
            if self.backend == "tcnn":
                raise RuntimeError(f"HashGrid(backend='tcnn') but tinycudann is unusable: {_external.reason('tinycudann')}")
        elif self.backend == "tcnn":
            raise RuntimeError("HashGrid(backend='tcnn') needs CUDA inputs; use backend='auto' or 'torch' on CPU")
        return hash_grid_encode(
            x, self.params, self.offsets, self.resolutions, self.scales, self.hashed, self.cfg.n_features_per_level
        )
