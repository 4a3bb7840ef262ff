"""Occupancy-grid ray marching (nerfacc ``OccupancyGridEstimator`` semantics, pure PyTorch).

The grid holds the union over time of the static and dynamic densities (METHOD 8.4): each update
evaluates ``occ_fn`` (static density + dynamic density at random times) at jittered cell centres,
keeps an exponential-moving maximum, and marks cells above ``min(mean, threshold)`` occupied.
Samples are packed: ``ray_ids [M]`` (sorted), ``t_starts [M]``, ``t_ends [M]``.

Marching has two implementations with one semantics: PyTorch (any device) and, on CUDA when nerfacc
imports, ``nerfacc.traverse_grids`` over this grid's own binaries. Both start at the box entry plus the
per-ray jitter, step by ``step_size``, and keep an interval when its midpoint lies before the box exit in
an occupied cell.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from .. import _external
from ..geometry import ray_aabb

_BACKENDS = ("auto", "torch", "nerfacc")


@dataclass
class OccupancyConfig:
    resolution: int = field(default=64, metadata={"help": "occupancy-grid cells per axis of the scene box"})
    update_every: int = field(default=16, metadata={
        "help": "refresh the occupancy grid every this many training steps (from step 0)"})
    warmup_steps: int = field(default=256, metadata={
        "help": "updates before this step read every cell; later ones a random quarter of the cells and up to as "
                "many occupied ones"})
    ema_decay: float = field(default=0.95, metadata={
        "help": "an update multiplies each cell it reads by this, then takes the max with the new readings"})
    threshold: float = field(default=0.01, metadata={
        "help": "a cell is occupied when its value (density x --render_step_size) exceeds this or the mean over "
                "all cells, whichever is lower"})
    backend: str = field(default="auto", metadata={
        "help": "occupancy-grid marching: auto (nerfacc on CUDA when it imports and builds), torch, nerfacc"})


def merge_readings(occs: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor, decay: float) -> torch.Tensor:
    """New cell values after an update: each cell read this time (``idx [K]``, repeats allowed) becomes the max of
    its decayed value and all its readings (``vals [K]``); cells not read keep theirs (nerfacc's rule: a cell that a
    moving object fills only at some times is not faded between its readings). ``occs [C]``; returns ``[C]``."""
    out = occs.clone()
    out[idx] = occs[idx] * decay  # (a repeated index writes the same value)
    vals = torch.nan_to_num(vals.to(occs.dtype), nan=0.0)  # (a NaN reading would spread through the mean threshold)
    return out.scatter_reduce_(0, idx, vals, "amax")  # every reading counts, in any order


class OccupancyGrid(nn.Module):
    """Binary occupancy over a world box, used to skip empty space while marching.

    Args:
        aabb: ``[6]`` world box.
        cfg: resolution and update schedule.
    """

    def __init__(self, aabb: torch.Tensor, cfg: OccupancyConfig):
        super().__init__()
        if cfg.backend not in _BACKENDS:
            raise ValueError(f"occupancy backend must be one of {', '.join(_BACKENDS)}, not {cfg.backend!r}")
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
        self.occs.copy_(merge_readings(self.occs, idx, vals, self.cfg.ema_decay))
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

    def marching_backend(self, origins: torch.Tensor) -> str:
        """``"torch"`` or ``"nerfacc"`` for rays on ``origins``' device (raises when a forced nerfacc can't run)."""
        want = self.cfg.backend
        if want == "torch" or (want == "auto" and not origins.is_cuda):
            return "torch"
        if not origins.is_cuda:
            raise RuntimeError("occupancy backend 'nerfacc' needs CUDA rays; use --render_occupancy_backend auto on CPU")
        if _external.get("nerfacc", "occupancy-grid marching") is None:
            if want == "nerfacc":
                raise RuntimeError(f"occupancy backend 'nerfacc' is unusable: {_external.reason('nerfacc')} "
                                   f"(pip install nerfacc, or --render_occupancy_backend auto)")
            return "torch"
        return "nerfacc"

    @torch.no_grad()
    def sample(
        self,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        step_size: float,
        stratified: bool = False,
        max_samples: int = 1 << 24,
        jitter: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """March rays through the box with a fixed step, keeping samples in occupied cells.

        Args:
            origins, dirs: ``[R, 3]`` rays (unit directions).
            step_size: marching step (field units).
            stratified: jitter the sample offsets per ray (training).
            max_samples: cap on candidate samples held at once (memory bound of the PyTorch path).
            jitter: ``[R]`` offsets in [0, 1) of a step to use instead of drawing them (stratified only).

        Returns:
            ``(ray_ids [M] int64, t_starts [M], t_ends [M])`` sorted by ray then distance.
        """
        if not stratified:
            jitter = None
        elif jitter is None:
            jitter = torch.rand(origins.shape[0], device=origins.device)
        elif jitter.shape != origins.shape[:1]:
            raise ValueError(f"jitter must have shape [{origins.shape[0]}], got {list(jitter.shape)}")
        if self.marching_backend(origins) == "nerfacc":
            return self._sample_nerfacc(origins, dirs, step_size, jitter, max_samples)
        return self._sample_torch(origins, dirs, step_size, jitter, max_samples)

    def _march_plan(self, origins, dirs, step_size: float, max_samples: int):
        """Box entry and exit distances ``[R]``, the most steps any ray takes, and the rays per chunk that
        keep at most ``max_samples`` candidate samples at once: ``(t_near, t_far, n_steps, rays_per_chunk)``."""
        t_near, t_far = ray_aabb(origins, dirs, self.aabb)
        n_steps = int(torch.ceil((t_far - t_near).clamp_min(0.0).max() / step_size).item()) if origins.shape[0] else 0
        return t_near, t_far, n_steps, max(1, max_samples // max(1, n_steps))

    def _sample_torch(self, origins, dirs, step_size: float, jitter: Optional[torch.Tensor] = None,
                      max_samples: int = 1 << 24):
        """PyTorch marching (see :meth:`sample`)."""
        n_rays = origins.shape[0]
        t_near, t_far, n_steps, rays_per_chunk = self._march_plan(origins, dirs, step_size, max_samples)
        empty = origins.new_zeros(0)
        if n_steps == 0:
            return torch.zeros(0, dtype=torch.long, device=origins.device), empty, empty
        ids, starts = [], []
        for r0 in range(0, n_rays, rays_per_chunk):
            sl = slice(r0, min(n_rays, r0 + rays_per_chunk))
            k = torch.arange(n_steps, device=origins.device, dtype=torch.float32)
            jit = jitter[sl, None] if jitter is not None else 0.0
            ts = t_near[sl, None] + (k[None, :] + jit) * step_size  # [r, S] interval starts
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

    def _sample_nerfacc(self, origins, dirs, step_size: float, jitter: Optional[torch.Tensor] = None,
                        max_samples: int = 1 << 24):
        """nerfacc's ``traverse_grids`` over this grid's binaries, started where :meth:`_sample_torch` starts.

        With one grid, ``cone_angle=0`` and ``step_size > 0`` the kernel (nerfacc 0.5.x ``cuda/csrc/grid.cu``)
        starts ``t`` at the ray's near plane, advances it by ``t += step_size`` and writes the interval
        ``[t, t + step_size]`` when its midpoint lies in an occupied cell before ``min(box exit, far plane)``:
        the PyTorch sampler's rule, so near = box entry (+ jitter x step) and far = box exit give the same
        samples up to float rounding (the kernel accumulates ``t`` by repeated float32 additions).
        Rays go in chunks of at most ``max_samples // steps`` rays, as in the PyTorch path.
        """
        nerfacc = _external.get("nerfacc", "occupancy-grid marching")
        if nerfacc is None:
            raise RuntimeError(f"nerfacc is unusable: {_external.reason('nerfacc')}")
        if not origins.is_cuda:
            raise RuntimeError("nerfacc marching needs CUDA tensors; use the PyTorch sampler on CPU")
        n_rays = origins.shape[0]
        if n_rays == 0:  # nerfacc's launch configuration divides by min(512, n_rays)
            empty = origins.new_zeros(0, dtype=torch.float32)
            return torch.zeros(0, dtype=torch.long, device=origins.device), empty, empty
        origins, dirs = origins.float().contiguous(), dirs.float().contiguous()
        t_near, t_far, _, rays_per_chunk = self._march_plan(origins, dirs, step_size, max_samples)
        near = t_near + jitter.to(t_near.dtype) * step_size if jitter is not None else t_near
        binaries = self.binaries[None].contiguous()  # [1, r, r, r] bool, indexed [x, y, z] like ``occupied``
        aabbs = self.aabb[None].float().contiguous()  # [1, 6]
        ids, starts, ends = [], [], []
        for r0 in range(0, n_rays, rays_per_chunk):
            sl = slice(r0, min(n_rays, r0 + rays_per_chunk))
            intervals, samples, _ = nerfacc.traverse_grids(
                origins[sl], dirs[sl], binaries, aabbs,
                near_planes=near[sl].contiguous(), far_planes=t_far[sl].contiguous(),
                step_size=float(step_size), cone_angle=0.0)
            ray_ids, t_starts, t_ends = _unpack_traversal(intervals, samples)
            ids.append(ray_ids + r0)
            starts.append(t_starts)
            ends.append(t_ends)
        if len(ids) == 1:
            return ids[0], starts[0], ends[0]
        return torch.cat(ids), torch.cat(starts), torch.cat(ends)


def _unpack_traversal(intervals, samples) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``traverse_grids``' packed output to ``(ray_ids [M] int64, t_starts [M], t_ends [M])``.

    The kernel writes each run of back-to-back intervals as shared edges (``vals``): an edge is flagged
    ``is_left`` when an interval starts there and ``is_right`` when one ends there (both inside a run), so,
    as in nerfacc's ``OccGridEstimator.sampling``, the flagged edges in order are the starts and the ends;
    ``samples`` has one entry (the midpoint) per interval, with its ray index.
    """
    t_starts = intervals.vals[intervals.is_left]
    t_ends = intervals.vals[intervals.is_right]
    ray_ids = samples.ray_indices.long()
    if not (ray_ids.numel() == t_starts.numel() == t_ends.numel()):
        raise RuntimeError(f"nerfacc returned {ray_ids.numel()} samples but {t_starts.numel()} "
                           f"interval starts and {t_ends.numel()} ends")
    return ray_ids, t_starts, t_ends
