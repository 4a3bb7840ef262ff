"""Where the fields live: world space (object-centric scenes) or NDC (forward-facing captures).

The sampler, the occupancy grid and the radiance/kinematic grids work in *field* coordinates: world
coordinates for D-NeRF-style scenes, NDC for forward-facing LLFF/NSFF captures (METHOD 1.5). The
kinematic field's outputs, displacements, trajectories and every physics derivative are in *world*
units (METHOD 8.3): this module is the one place that maps between the two.

The NDC parameters are a buffer, so a checkpoint restores its space without the dataset.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..geometry.ndc import ndc_jacobian, ndc_rays, ndc_to_world, world_to_ndc


class SceneSpace(nn.Module):
    """Identity (world) or NDC mapping between world and field coordinates.

    Args:
        ndc: ``None`` for world space, or ``(focal, width, height, near)`` of the NDC map.
    """

    def __init__(self, ndc: Optional[Tuple[float, float, float, float]] = None):
        super().__init__()
        self.register_buffer("ndc", torch.tensor(list(ndc) if ndc is not None else [0.0] * 4, dtype=torch.float32))
        self._refresh_host_copy()

    def _refresh_host_copy(self) -> None:
        # the parameters as Python floats, read once here and after loading a state dict (reading the buffer
        # on every call would be a host sync per call on a GPU)
        self._host = tuple(float(v) for v in self.ndc.detach().cpu())

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh_host_copy()

    @property
    def is_ndc(self) -> bool:
        return self._host[0] > 0

    def _p(self):
        return self._host

    def rays(self, origins: torch.Tensor, dirs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """World rays ``[R, 3]`` (unit directions) to field rays (unit directions in field space)."""
        if not self.is_ndc:
            return origins, dirs
        o, d = ndc_rays(origins, dirs, *self._p())
        return o, d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def to_field(self, x: torch.Tensor) -> torch.Tensor:
        """World points ``[N, 3]`` to field coordinates."""
        return world_to_ndc(x, *self._p()) if self.is_ndc else x

    def to_world(self, x: torch.Tensor) -> torch.Tensor:
        """Field coordinates ``[N, 3]`` to world points."""
        return ndc_to_world(x, *self._p()) if self.is_ndc else x

    def move(self, x: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
        """Field points ``x [N, 3]`` moved by world ``displacement [N, 3]``, back in field coordinates."""
        if not self.is_ndc:
            return x + displacement
        return self.to_field(self.to_world(x) + displacement)

    def density_to_world(self, sigma: torch.Tensor, x_world: torch.Tensor) -> torch.Tensor:
        """Field density ``[N]`` at world points to a world-volume density (times ``|det d field / d world|``)."""
        if not self.is_ndc:
            return sigma
        det = torch.linalg.det(ndc_jacobian(x_world.detach(), *self._p())).abs()
        return sigma * det

    def world_step(self, x_world: torch.Tensor, field_step: float) -> torch.Tensor:
        """Per-point world finite-difference step ``[N]`` spanning about ``field_step`` in field units
        (the smallest over the three axes; clamped at the batch's 95th percentile in NDC)."""
        n = x_world.shape[0]
        if not self.is_ndc:
            return torch.full((n,), float(field_step), dtype=x_world.dtype, device=x_world.device)
        jac = ndc_jacobian(x_world.detach(), *self._p())  # [N, 3, 3]: field change per world unit, by column
        steps = (field_step / jac.norm(dim=1).clamp_min(1e-12)).amin(-1)
        if n > 1:
            steps = steps.clamp(max=float(torch.quantile(steps, 0.95)))
        return steps
