"""Static and dynamic radiance fields on hash grids (METHOD 1.1, 1.2; hash-grid variant of section 8).

Both fields share one head design: hash features -> density MLP (log-density + geometry features)
-> colour MLP (geometry features + spherical harmonics of the view direction). Positions are world
coordinates, mapped to [0, 1] by the scene box; time is the dataset's normalised time in [0, 1],
compressed into ``[0, time_scale]`` of the 4-D grid so that the time axis stays coarse (about one
grid cell per frame at the finest level, METHOD 8.1).

Keyframe advection (optional, dynamic field only): with ``keyframe_points`` set, the field at ``(x, t)``
is read from the two keyframe times around ``t`` at the points the kinematic field carries ``x`` to, and
blended by time; see :meth:`kinfield.render.SceneModel.set_keyframe_advection`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from ..nn import MLP, HashGrid, HashGridConfig, sh_encode


@dataclass
class FieldConfig:
    """Architecture of one radiance field."""

    grid: HashGridConfig = field(default_factory=HashGridConfig)
    geo_features: int = field(default=15, metadata={
        "help": "geometry features the density MLP outputs besides the density, read by the colour MLP (and, for "
                "the dynamic field, the normal regressor)"})
    density_hidden: int = field(default=64, metadata={"help": "width of the density MLP's hidden layer (one)"})
    color_hidden: int = field(default=64, metadata={"help": "width of the colour MLP's hidden layers"})
    color_layers: int = field(default=2, metadata={"help": "hidden layers of the colour MLP (0 = one linear layer)"})
    sh_degree: int = field(default=4, metadata={
        "help": "spherical-harmonics bands (1-4) of the view direction fed to the colour MLP (degree^2 values)"})
    density_bias: float = field(default=-1.0, metadata={
        "help": "added to the density MLP's raw output before exp: density = exp(raw + bias) (below 0: the field "
                "starts emptier)"})
    time_scale: float = field(default=1.0, metadata={
        "help": "time in [0, 1] spans [0, time_scale] of the grid's time axis (below 1: coarser in time); the "
                "static field has no time axis (--static_time_scale other than 1 is refused)"})
    grid_backend: str = field(default="auto", metadata={
        "help": "hash-grid implementation: auto (tinycudann for CUDA inputs when it imports, else torch), tcnn "
                "or torch"})


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """``exp`` with its input clamped at 15 so a density never overflows."""
    return torch.exp(x.clamp(max=15.0))


class RadianceField(nn.Module):
    """A hash-grid radiance field over space (``n_dims=3``) or space-time (``n_dims=4``).

    Args:
        aabb: ``[6]`` world box mapped to [0, 1]^3.
        cfg: architecture.
        n_dims: 3 for the static field F_ST(x, d), 4 for the dynamic field F_DY(x, t, d).
    """

    def __init__(self, aabb: torch.Tensor, cfg: FieldConfig, n_dims: int):
        super().__init__()
        if n_dims not in (3, 4):
            raise ValueError("a radiance field is 3-D (static) or 4-D (dynamic)")
        self.cfg = cfg
        self.n_dims = n_dims
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        self.encoding = HashGrid(n_dims, cfg.grid, backend=cfg.grid_backend)
        self.density_net = MLP(self.encoding.n_output_dims, 1 + cfg.geo_features, cfg.density_hidden, 1)
        self.color_net = MLP(cfg.geo_features + cfg.sh_degree**2, 3, cfg.color_hidden, cfg.color_layers)
        # (x [N, 3], t [N][, u [N]]) -> (points [2N, 3], times [2N], w [N]): where and when to read the grid
        # instead (keyframe advection; with u: [N] points and times of one keyframe each); a plain callable,
        # not a submodule, so the state dict does not change
        self.keyframe_points: Optional[Callable] = None

    @property
    def is_dynamic(self) -> bool:
        return self.n_dims == 4

    def normalize(self, x: torch.Tensor, t: Optional[torch.Tensor]) -> torch.Tensor:
        """World ``x [N, 3]`` (and time ``t [N]`` or ``[N, 1]``) to grid coordinates ``[N, D]`` in [0, 1]."""
        lo, hi = self.aabb[:3], self.aabb[3:]
        u = (x - lo) / (hi - lo)
        if self.is_dynamic:
            if t is None:
                raise ValueError("the dynamic field needs a time per point")
            t = t.reshape(-1, 1).to(u.dtype)
            u = torch.cat([u, t * self.cfg.time_scale], dim=-1)
        return u

    def _grid_features(self, x, t) -> Tuple[torch.Tensor, torch.Tensor]:
        """Density ``[N]`` and geometry features ``[N, G]`` read straight from the grid at ``(x, t)``."""
        h = self.density_net(self.encoding(self.normalize(x, t)))
        raw, geo = h.split([1, h.shape[1] - 1], dim=1)  # (one node in the backward pass, not two)
        return trunc_exp(raw.squeeze(1) + self.cfg.density_bias), geo

    def _features(self, x, t, keyframe_u: Optional[torch.Tensor] = None,
                  motion_grad: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """Density ``[N]`` and geometry features ``[N, G]`` at ``(x, t)``, through the keyframes when advected.
        ``motion_grad=False``: the keyframe points are computed without gradient (nothing reaches F_K)."""
        if self.keyframe_points is None or not self.is_dynamic:
            return self._grid_features(x, t)
        with torch.set_grad_enabled(motion_grad and torch.is_grad_enabled()):
            xs, ts, w = self.keyframe_points(x, t.reshape(-1), keyframe_u)
        if keyframe_u is not None:  # one keyframe per point: the later one where keyframe_u < w
            return self._grid_features(xs, ts)
        return blend_keyframes(*self._grid_features(xs, ts), w)

    def density(self, x: torch.Tensor, t: Optional[torch.Tensor] = None,
                keyframe_u: Optional[torch.Tensor] = None, motion_grad: bool = True) -> torch.Tensor:
        """Density ``[N]`` at world points ``x [N, 3]`` (and times ``t [N]``); zero outside the box.
        ``keyframe_u``: as in :meth:`forward`; ``motion_grad``: as in :meth:`_features`."""
        sigma, _ = self._features(x, t, keyframe_u, motion_grad)
        return sigma * self.inside(x)

    def forward(self, x: torch.Tensor, t: Optional[torch.Tensor], d: torch.Tensor,
                keyframe_u: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Density ``[N]`` and colour ``[N, 3]`` at points ``x [N, 3]``, times ``t [N]``, directions ``d [N, 3]``.

        ``keyframe_u [N]`` (uniform in [0, 1), keyframe advection only): read one keyframe per point, the
        later one with probability ``w``, instead of blending both (half the grid reads; training draws one
        ``u`` per ray so a ray sees one keyframe)."""
        sigma, geo = self._features(x, t, keyframe_u)
        rgb = torch.sigmoid(self.color_net(torch.cat([geo, sh_encode(d, self.cfg.sh_degree)], dim=-1)))
        return sigma * self.inside(x), rgb

    def inside(self, x: torch.Tensor) -> torch.Tensor:
        """``[N]`` float mask of points inside the box."""
        lo, hi = self.aabb[:3], self.aabb[3:]
        return ((x >= lo) & (x <= hi)).all(-1).to(x.dtype)


def blend_keyframes(sigma: torch.Tensor, geo: torch.Tensor, w: torch.Tensor, eps: float = 1e-6
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Blend the reads at the earlier and later keyframe (``sigma [2N]``, ``geo [2N, G]``: earlier first)
    with weights ``1 - w`` and ``w`` (``w [N]``): densities linearly, geometry features by density (the
    features of whichever keyframe holds matter there), so where both keyframes agree the result is theirs."""
    s0, s1 = sigma.chunk(2)
    g0, g1 = geo.chunk(2)
    a0, a1 = (1.0 - w) * s0, w * s1
    b0, b1 = a0 + eps * (1.0 - w), a1 + eps * w
    geo_out = (b0[:, None] * g0 + b1[:, None] * g1) / (b0 + b1)[:, None]
    return a0 + a1, geo_out
