"""Occupancy-grid ray marching (nerfacc ``OccupancyGridEstimator`` semantics, pure PyTorch).

The grid holds the union over time of the static and dynamic densities (METHOD 8.4): each update
evaluates ``occ_fn`` (static density + dynamic density at random times) at jittered cell centres,
keeps an exponential-moving maximum, and marks cells above ``min(mean, threshold)`` occupied.
Samples are packed: ``ray_ids [M]`` (sorted), ``t_starts [M]``, ``t_ends [M]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import torch
from torch import nn

from ..geometry import ray_aabb


@dataclass
class OccupancyConfig:
    resolution: int = 64
    update_every: int = 16
    warmup_steps: int = 256
    ema_decay: float = 0.95
    threshold: float = 0.01


class OccupancyGrid(nn.Module):
    """Binary occupancy over a world box, used to skip empty space while marching.

    Args:
        aabb: ``[6]`` world box.
        cfg: resolution and update schedule.
    """

    def __init__(self, aabb: torch.Tensor, cfg: OccupancyConfig):
        super().__init__()
        self.cfg = cfg
        r = cfg.resolution
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        self.register_buffer("occs", torch.zeros(r**3))
        self.register_buffer("binaries", torch.ones(r, r, r, dtype=torch.bool))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.int64))

    @property
    def cell_size(self) -> torch.Tensor:
        return (self.aabb[3:] - self.aabb[:3]) / self.cfg.resolution

    def _cell_centres(self, idx: torch.Tensor, jitter: bool) -> torch.Tensor:
        r = self.cfg.resolution
        ijk = torch.stack([idx // (r * r), (idx // r) % r, idx % r], dim=-1).to(torch.float32)
        off = torch.rand_like(ijk) if jitter else torch.full_like(ijk, 0.5)
        return self.aabb[:3] + (ijk + off) * self.cell_size

    @torch.no_grad()
    def update(self, step: int, occ_fn: Callable[[torch.Tensor], torch.Tensor], chunk: int = 1 << 18) -> bool:
        """Refresh the grid every ``update_every`` steps.

        Args:
            step: training step.
            occ_fn: world points ``[N, 3]`` -> opacity-like values ``[N]`` (e.g. density x step size).

        Returns:
            whether the grid was refreshed.
        """
        if step % self.cfg.update_every != 0:
            return False
        n_cells = self.occs.numel()
        if step < self.cfg.warmup_steps:
            idx = torch.arange(n_cells, device=self.occs.device)
        else:  # a quarter of all cells at random + a quarter drawn from the occupied ones
            rand = torch.randint(0, n_cells, (n_cells // 4,), device=self.occs.device)
            occupied = torch.nonzero(self.binaries.reshape(-1))[:, 0]
            if occupied.numel() > n_cells // 4:
                occupied = occupied[torch.randint(0, occupied.numel(), (n_cells // 4,), device=occupied.device)]
            idx = torch.cat([rand, occupied])
        x = self._cell_centres(idx, jitter=True)
        vals = torch.cat([occ_fn(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])
        decayed = self.occs * self.cfg.ema_decay
        decayed[idx] = torch.maximum(decayed[idx], vals.to(decayed.dtype))
        self.occs.copy_(decayed)
        thre = min(float(self.occs.mean()), self.cfg.threshold)
        r = self.cfg.resolution
        self.binaries.copy_((self.occs > thre).view(r, r, r))
        self.n_updates += 1
        return True

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        """``[N]`` bool: is each world point ``x [N, 3]`` inside the box and in an occupied cell."""
        r = self.cfg.resolution
        u = (x - self.aabb[:3]) / (self.aabb[3:] - self.aabb[:3])
        inside = ((u >= 0) & (u < 1)).all(-1)
        ijk = (u.clamp(0, 1 - 1e-6) * r).long()
        return inside & self.binaries[ijk[:, 0], ijk[:, 1], ijk[:, 2]]

    @torch.no_grad()
    def sample(
        self,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        step_size: float,
        stratified: bool = False,
        max_samples: int = 1 << 24,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """March rays through the box with a fixed step, keeping samples in occupied cells.

        Args:
            origins, dirs: ``[R, 3]`` rays (unit directions).
            step_size: marching step (world units).
            stratified: jitter the sample offsets per ray (training).
            max_samples: cap on candidate samples held at once (memory bound).

        Returns:
            ``(ray_ids [M] int64, t_starts [M], t_ends [M])`` sorted by ray then distance.
        """
        n_rays = origins.shape[0]
        t_near, t_far = ray_aabb(origins, dirs, self.aabb)
        span = (t_far - t_near).clamp_min(0.0)
        n_steps = int(torch.ceil(span.max() / step_size).item()) if n_rays > 0 else 0
        empty = origins.new_zeros(0)
        if n_steps == 0:
            return torch.zeros(0, dtype=torch.long, device=origins.device), empty, empty
        rays_per_chunk = max(1, max_samples // n_steps)
        ids, starts = [], []
        for r0 in range(0, n_rays, rays_per_chunk):
            sl = slice(r0, min(n_rays, r0 + rays_per_chunk))
            k = torch.arange(n_steps, device=origins.device, dtype=torch.float32)
            jitter = torch.rand(sl.stop - sl.start, 1, device=origins.device) if stratified else 0.0
            ts = t_near[sl, None] + (k[None, :] + jitter) * step_size  # [r, S] interval starts
            mid = ts + 0.5 * step_size
            keep = mid < t_far[sl, None]
            pts = origins[sl, None, :] + dirs[sl, None, :] * mid[..., None]
            keep &= self.occupied(pts.view(-1, 3)).view_as(keep)
            rid, sid = torch.nonzero(keep, as_tuple=True)
            ids.append(rid + r0)
            starts.append(ts[rid, sid])
        ray_ids = torch.cat(ids)
        t_starts = torch.cat(starts)
        return ray_ids, t_starts, t_starts + step_size
