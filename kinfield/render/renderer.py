"""Rendering rays through the static + dynamic fields: packed marching, blending, chunked images."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
from torch import nn

from ..fields import FieldConfig, RadianceField, taylor_displacement
from ..geometry import image_rays
from ..nn import scale_grad
from .composite import accumulate, composite_blended
from .occupancy import OccupancyConfig, OccupancyGrid
from .space import SceneSpace


@dataclass
class RenderConfig:
    """Ray marching and compositing options."""

    step_size: float = field(default=0.01, metadata={
        "help": "ray-marching step, in field units (world, or NDC in a forward-facing scene); the occupancy updates "
                "read density x this"})
    chunk: int = field(default=4096, metadata={
        "help": "rays per chunk when rendering whole images (validation, evaluation, the tools): bounds memory, not "
                "the result"})
    prune_transmittance: float = field(default=1e-3, metadata={
        "help": "training renders drop the samples whose transmittance (density-only pre-pass) is at or below this "
                "(early ray termination; this and --render_prune_alpha both 0: no pre-pass)"})
    prune_alpha: float = field(default=0.0, metadata={
        "help": "training renders also drop the samples whose alpha (density-only pre-pass) is at or below this"})
    occupancy: OccupancyConfig = field(default_factory=OccupancyConfig)


@dataclass
class Samples:
    """Packed samples of a batch of rays and what the fields returned there.

    ``M`` samples, ``R`` rays. Warped renders (kinematic losses) reuse ``ray_ids``, ``t_starts``,
    ``t_ends`` and move ``positions``; they never re-run the occupancy estimator.
    """

    ray_ids: torch.Tensor  # [M] int64
    t_starts: torch.Tensor  # [M]
    t_ends: torch.Tensor  # [M]
    positions: torch.Tensor  # [M, 3] field coordinates (world, or NDC: see SceneModel.space)
    times: torch.Tensor  # [M]
    dirs: torch.Tensor  # [M, 3]
    sigma_s: torch.Tensor  # [M]
    rgb_s: torch.Tensor  # [M, 3]
    sigma_d: torch.Tensor  # [M]
    rgb_d: torch.Tensor  # [M, 3]
    w_s: torch.Tensor  # [M]
    w_d: torch.Tensor  # [M]
    n_rays: int


class SceneModel(nn.Module):
    """The learned scene: static field F_ST, dynamic field F_DY and the occupancy grid.

    The kinematic field (``kinematic``) is attached by the kinematic part of the trainer. ``aabb`` is
    in field coordinates: world, or NDC when ``ndc = (focal, width, height, near)`` is given (``space``
    maps between them; rays passed in are always world rays).
    """

    def __init__(self, aabb: torch.Tensor, static_cfg: FieldConfig, dynamic_cfg: FieldConfig, render_cfg: RenderConfig,
                 use_static: bool = True, ndc=None):
        super().__init__()
        self.render_cfg = render_cfg
        self.space = SceneSpace(ndc)
        self.static = RadianceField(aabb, static_cfg, n_dims=3) if use_static else None
        self.dynamic = RadianceField(aabb, dynamic_cfg, n_dims=4)
        self.occupancy = OccupancyGrid(aabb, render_cfg.occupancy)
        self.extent = float((self.aabb[3:] - self.aabb[:3]).max())  # the box's longest side (field units)
        self.kinematic: Optional[nn.Module] = None
        self.normal_net: Optional[nn.Module] = None
        self.keyframe_spacing, self.keyframe_sample = 0.0, True  # see set_keyframe_advection
        self._kin_memo: Optional[Dict] = None  # see shared_kinematics

    def set_keyframe_advection(self, spacing: float, sample: bool = True) -> None:
        """Read the dynamic field only at keyframe times ``0, spacing, 2 spacing, ...`` (and 1), carried there
        by the kinematic field: F_DY(x, t) blends the grid at ``(x + d(x, t, t0 - t), t0)`` and
        ``(x + d(x, t, t1 - t), t1)`` with weights ``1 - w`` and ``w``, ``w = (t - t0) / (t1 - t0)``, where
        ``t0 <= t <= t1`` are the keyframes around ``t`` and ``d`` is F_K's Taylor displacement. The grid then
        moves content between keyframes instead of fading it, and the photometric loss of every frame
        trains F_K directly. ``spacing <= 0`` switches it off. ``sample``: training renders and warps read
        one keyframe per ray (:meth:`keyframe_draws`) instead of blending both."""
        self.keyframe_sample = bool(sample)
        if spacing <= 0:
            self.dynamic.keyframe_points = None
            return
        if self.kinematic is None:
            raise ValueError("keyframe advection needs the kinematic field (--kin_enabled true)")
        self.keyframe_spacing = float(spacing)
        self.dynamic.keyframe_points = self._keyframe_points

    def keyframe_draws(self, n_rays: int, device=None) -> Optional[torch.Tensor]:
        """Per-ray uniforms ``[n_rays]`` that make a training render or warp read one keyframe per ray, or
        ``None`` where every read blends (no keyframe advection, or ``sample=False``)."""
        if self.dynamic.keyframe_points is None or not self.keyframe_sample:
            return None
        return torch.rand(n_rays, device=self.aabb.device if device is None else device)

    def _keyframe_points(self, x: torch.Tensor, t: torch.Tensor, u: Optional[torch.Tensor] = None):
        """Field points ``x [N, 3]`` at times ``t [N]`` to their keyframe reads: ``points [2N, 3]``,
        ``times [2N]`` (earlier keyframe first) and the later keyframe's weight ``w [N]``; with uniforms
        ``u [N]``, one read each (``[N, 3]``, ``[N]``): the later keyframe where ``u < w``."""
        spacing = self.keyframe_spacing
        t = t.to(x.dtype)
        t0 = (torch.floor(t / spacing + 1e-6) * spacing).clamp(0.0, 1.0)
        t1 = (t0 + spacing).clamp(max=1.0)
        # (t1 - t0 vanishes only at t0 = t1 = 1, where t - t0 <= 0: the weight is 0 there, and either keyframe is t)
        w = ((t - t0) / (t1 - t0).clamp_min(1e-8)).clamp(0.0, 1.0)
        q = self.kinematic_q(x, t)
        if u is not None:
            tk = torch.where(u.to(t.dtype) < w, t1, t0)
            return self.space.move(x, taylor_displacement(q, tk - t)), tk, w
        d = taylor_displacement(q, torch.stack([t0 - t, t1 - t], dim=1))  # [N, 2, 3] from one read of F_K
        return self.space.move(x.repeat(2, 1), d.transpose(0, 1).reshape(-1, 3)), torch.cat([t0, t1]), w

    @contextlib.contextmanager
    def shared_kinematics(self):
        """Within the block, :meth:`kinematic_q` evaluates F_K once per set of points: a training step reads it at
        the render's samples for the keyframe advection and again for the warps, at each hop-warped sample for the
        advection and the cycle loss, and at the physics probes for the residuals and the density's advection.
        The same values either way; the gradients of the shared evaluation are summed by autograd."""
        self._kin_memo = {}
        try:
            yield
        finally:
            self._kin_memo = None

    def kinematic_q(self, x: torch.Tensor, t: torch.Tensor, reuse_only: bool = False) -> Optional[torch.Tensor]:
        """F_K's kinematics ``[N, K, 3]`` at field points ``x [N, 3]``, times ``t [N]``; inside
        :meth:`shared_kinematics`, an earlier evaluation at the same tensors (``x`` itself, ``t`` or a view of the
        same memory) is returned instead (one made without gradient only where none is needed now).
        ``reuse_only``: ``None`` rather than a new evaluation when there is none."""
        memo = self._kin_memo
        key = None
        if memo is not None:  # the memo holds x and t, so neither id nor address is reused while it lives
            key = (id(x), x._version, t.data_ptr(), tuple(t.shape), t._version)
            hit = memo.get(key)
            if hit is not None and (hit[3] or not torch.is_grad_enabled()):
                return hit[2]
        if reuse_only:
            return None
        q = self.kinematic(x, t)
        if key is not None:
            memo[key] = (x, t, q, torch.is_grad_enabled())
        return q

    def dynamic_finest_cell(self) -> float:
        """Field-space size of a cell of the dynamic field's finest grid level."""
        return self.dynamic.encoding.finest_cell(self.extent)

    def kinematics_at(self, x: torch.Tensor, t: torch.Tensor) -> Dict[str, torch.Tensor]:
        """World velocity/acceleration/jerk (``[N, 3]`` each) at world points ``x [N, 3]``, times ``t [N]``."""
        return self.kinematic.kinematics(self.space.to_field(x), t)

    def surface_points(self, c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int,
                       depth: torch.Tensor) -> torch.Tensor:
        """World points ``[H*W, 3]`` at a rendered ``depth [H, W]`` (field-space distance along each pixel's ray)."""
        dev = self.aabb.device
        origins, dirs = self.space.rays(*image_rays(c2w.to(dev), intrinsics.to(dev), height, width))
        return self.space.to_world(origins + dirs * depth.reshape(-1, 1).to(dev))

    def predict_normals(self, x: torch.Tensor, t: torch.Tensor, feature_grad_scale: float = 1.0) -> torch.Tensor:
        """Unit normals ``[N, 3]`` regressed from the dynamic field's geometry features (METHOD 1.3) at points
        ``x [N, 3]``, times ``t [N]``; the features' gradient is scaled by ``feature_grad_scale``. With keyframe
        advection the features are read at the keyframe points without gradient into F_K: the normal
        regulariser trains the regressor and the features (METHOD 2.8), not the motion."""
        _, geo = self.dynamic._features(x, t, motion_grad=False)
        n = self.normal_net(scale_grad(geo, feature_grad_scale))
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    @property
    def aabb(self) -> torch.Tensor:
        return self.occupancy.aabb

    def union_density(self, x: torch.Tensor, t: Optional[torch.Tensor] = None,
                      keyframe_u: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Static plus dynamic density ``[N]`` at times ``t [N]`` (default: one random time per point, as the
        occupancy updates use to cover the union over time); ``keyframe_u [N]``: see ``RadianceField.forward``."""
        if t is None:
            t = torch.rand(x.shape[0], device=x.device)
        sigma = self.dynamic.density(x, t, keyframe_u)
        if self.static is not None:
            sigma = sigma + self.static.density(x)
        return sigma

    def update_occupancy(self, step: int) -> bool:
        """Refresh the occupancy grid on its schedule from the union density at random times (with keyframe
        advection each point reads one of its two keyframes, as a training ray does: half the grid reads)."""
        step_size = self.render_cfg.step_size
        return self.occupancy.update(
            step, lambda x: self.union_density(x, None, self.keyframe_draws(x.shape[0], x.device)) * step_size)

    @torch.no_grad()
    def prune_samples(self, origins, dirs, times, ray_ids, t_starts, t_ends, keyframe_u=None):
        """Drop samples hidden behind opaque content or nearly empty (nerfacc's early stop, done as a
        density-only pre-pass): keeps ``T > prune_transmittance`` and ``alpha > prune_alpha``.
        ``keyframe_u [R]``: the render's per-ray keyframe draws (so the pre-pass sees the same densities)."""
        if ray_ids.numel() == 0:
            return ray_ids, t_starts, t_ends
        mid = 0.5 * (t_starts + t_ends)
        x = origins[ray_ids] + dirs[ray_ids] * mid[:, None]
        u = keyframe_u[ray_ids] if keyframe_u is not None else None
        sigma = self.union_density(x, times[ray_ids], u)
        w, _, trans = composite_blended(sigma, torch.zeros_like(sigma), t_starts, t_ends, ray_ids, origins.shape[0])
        alpha = w / trans.clamp_min(1e-10)
        keep = torch.nonzero((trans > self.render_cfg.prune_transmittance) & (alpha > self.render_cfg.prune_alpha))[:, 0]
        return ray_ids[keep], t_starts[keep], t_ends[keep]  # (indices: one host sync on a GPU, not one per mask)

    def query(self, x: torch.Tensor, t: torch.Tensor, d: torch.Tensor, keyframe_u: Optional[torch.Tensor] = None):
        """Both fields at packed points: ``(sigma_s, rgb_s, sigma_d, rgb_d)`` (``[M]``, ``[M, 3]``);
        ``keyframe_u [M]``: see :meth:`RadianceField.forward`."""
        sigma_d, rgb_d = self.dynamic(x, t, d, keyframe_u)
        if self.static is not None:
            sigma_s, rgb_s = self.static(x, None, d)
        else:
            sigma_s, rgb_s = torch.zeros_like(sigma_d), torch.zeros_like(rgb_d)
        return sigma_s, rgb_s, sigma_d, rgb_d

    def render_rays(
        self,
        origins: torch.Tensor,
        dirs: torch.Tensor,
        times: torch.Tensor,
        background: torch.Tensor,
        stratified: bool = False,
        decompose: bool = False,
        keyframe_u: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """Render a batch of rays.

        Args:
            origins, dirs: ``[R, 3]`` world rays (unit directions; mapped to field space here).
            times: ``[R]`` normalised times.
            background: ``[3]`` or ``[R, 3]`` colour behind the scene.
            stratified: jitter sample positions (training).
            decompose: also return static-only / dynamic-only renders (each field with its own
                transmittance) and the dynamic share of the blended weights.
            keyframe_u: ``[R]`` uniforms: with keyframe advection, each ray reads one keyframe (the
                later one where ``u < w``) instead of blending two (training; see ``set_keyframe_advection``).

        Returns:
            dict with ``rgb [R, 3]``, ``depth [R]``, ``opacity [R]``, ``n_samples`` and ``samples``
            (:class:`Samples`); with ``decompose`` also ``rgb_static``, ``rgb_dynamic``,
            ``depth_static``, ``depth_dynamic``, ``dynamic_share`` ``[R]``.
        """
        n_rays = origins.shape[0]
        origins, dirs = self.space.rays(origins, dirs)
        ray_ids, t_starts, t_ends = self.occupancy.sample(origins, dirs, self.render_cfg.step_size, stratified)
        if torch.is_grad_enabled() and (self.render_cfg.prune_transmittance > 0 or self.render_cfg.prune_alpha > 0):
            ray_ids, t_starts, t_ends = self.prune_samples(origins, dirs, times, ray_ids, t_starts, t_ends, keyframe_u)
        mid = 0.5 * (t_starts + t_ends)
        x = origins[ray_ids] + dirs[ray_ids] * mid[:, None]
        t = times[ray_ids]
        d = dirs[ray_ids]
        u = keyframe_u[ray_ids] if keyframe_u is not None else None
        sigma_s, rgb_s, sigma_d, rgb_d = self.query(x, t, d, u)
        w_s, w_d, _ = composite_blended(sigma_s, sigma_d, t_starts, t_ends, ray_ids, n_rays)
        out = composite_outputs(w_s, w_d, rgb_s, rgb_d, mid, ray_ids, n_rays, background)
        out["n_samples"] = torch.tensor(int(ray_ids.numel()))
        out["samples"] = Samples(ray_ids, t_starts, t_ends, x, t, d, sigma_s, rgb_s, sigma_d, rgb_d, w_s, w_d, n_rays)
        if decompose:
            zero = torch.zeros_like(sigma_s)
            for name, sig, rgb in (("static", sigma_s, rgb_s), ("dynamic", sigma_d, rgb_d)):
                w, _, _ = composite_blended(sig, zero, t_starts, t_ends, ray_ids, n_rays)
                part = composite_outputs(w, zero, rgb, rgb, mid, ray_ids, n_rays, background)
                out[f"rgb_{name}"], out[f"depth_{name}"] = part["rgb"], part["depth"]
            out["dynamic_share"] = accumulate(w_d, ray_ids, n_rays) / out["opacity"].clamp_min(1e-6)
        return out

    @torch.no_grad()
    def render_image(self, c2w, intrinsics, height: int, width: int, time: float, background, decompose=False,
                     chunk: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """Render one image in chunks of rays (bounded memory at any size).

        Args:
            c2w: ``[4, 4]``; intrinsics: ``[4]``; time: normalised time; background: ``[3]``.

        Returns:
            dict of ``[H, W, 3]`` colours and ``[H, W]`` depth/opacity maps (and the decomposition).
        """
        dev = self.aabb.device
        origins, dirs = image_rays(c2w.to(dev), intrinsics.to(dev), height, width)
        chunk = chunk or self.render_cfg.chunk
        bg = torch.as_tensor(background, dtype=torch.float32, device=dev)
        parts = []
        for i in range(0, origins.shape[0], chunk):
            o, d = origins[i : i + chunk], dirs[i : i + chunk]
            t = torch.full((o.shape[0],), float(time), device=dev)
            res = self.render_rays(o, d, t, bg, stratified=False, decompose=decompose)
            parts.append({k: v for k, v in res.items() if isinstance(v, torch.Tensor) and v.dim() > 0})
        out = {}
        for k in parts[0]:
            v = torch.cat([p[k] for p in parts], dim=0)
            out[k] = v.view(height, width, *v.shape[1:])
        return out


def composite_outputs(w_s, w_d, rgb_s, rgb_d, mid, ray_ids, n_rays, background) -> Dict[str, torch.Tensor]:
    """Accumulate blended colour, expected depth and opacity from per-field weights.

    Returns:
        dict with ``rgb [R, 3]`` (composited on ``background``), ``depth [R]`` (expected distance of
        the visible content, 0 where the ray is empty), ``opacity [R]``.
    """
    w = w_s + w_d
    rgb = accumulate(w_s[:, None] * rgb_s + w_d[:, None] * rgb_d, ray_ids, n_rays)
    opacity = accumulate(w, ray_ids, n_rays)
    depth = accumulate(w * mid, ray_ids, n_rays) / opacity.clamp_min(1e-6)
    bg = background if background.dim() == 2 else background[None, :]
    rgb = rgb + (1.0 - opacity[:, None]) * bg
    return {"rgb": rgb, "depth": depth, "opacity": opacity}
