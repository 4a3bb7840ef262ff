"""Losses that use a capture's priors: depth, SfM depth, optical flow, motion masks (METHOD 2.10-2.15),
and the prior-free dynamic sparsity and distortion (:func:`dynamic_sparsity_loss`, :func:`distortion_loss`, every
scene).

Each term reads what the ray batch carries (``SceneSplit.extras``, see :mod:`kinfield.data.nsff`) and
returns zero, with a gradient path, when the scene has no such prior. Defaults follow the
reference's configs; the flow and depth terms share its step decay (x0.2 at each milestone).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch

from ..fields import taylor_displacement
from ..ops import exclusive_segment_cumsum
from ..render.composite import accumulate
from .base import Schedule, Term


@dataclass
class PriorConfig:
    """Prior-based terms (0 disables a term; a term is inert when the scene lacks its prior)."""

    depth_weight: float = field(default=0.005, metadata={
        "help": "median-normalised depth loss against the capture's monocular disparity (METHOD 2.12); decays with "
                "--prior_decay_milestones"})
    sparse_depth_weight: float = field(default=0.01, metadata={
        "help": "relative error |z_sfm / z - 1| of the rendered depth at pixels with an SfM depth; decays with "
                "--prior_decay_milestones"})
    flow_weight: float = field(default=0.04, metadata={
        "help": "L1 loss of the rendered against the precomputed 2-D optical flow to the next / previous frame "
                "(METHOD 2.10); decays with --prior_decay_milestones"})
    flow_max_rays: int = field(default=1024, metadata={
        "help": "the flow loss uses the first this many rays of each batch"})
    flow_clamp_px: float = field(default=400.0, metadata={
        "help": "rendered flow clamped to +-this many pixels per axis (METHOD 2.10)"})
    decay_milestones: Tuple[int, ...] = field(default=(200, 10000, 17500, 25000, 35000, 65000), metadata={
        "help": "steps, counted from the end of static pre-training, at each of which the depth, SfM-depth and flow "
                "weights are multiplied by --prior_decay_rate (none = no decay; METHOD 2.10)"})
    decay_rate: float = field(default=0.2, metadata={
        "help": "factor of the depth, SfM-depth and flow weights at each of --prior_decay_milestones"})
    static_pretrain_steps: int = field(default=0, metadata={
        "help": "with motion masks: the first this many steps train the static field alone on static pixels; the "
                "other terms start after them (METHOD 1.1; 0 = none)"})
    static_masked_weight: float = field(default=0.5, metadata={
        "help": "photometric loss of the static-only render on the pixels the motion masks mark static "
                "(METHOD 2.15)"})
    dynamic_masked_weight: float = field(default=0.5, metadata={
        "help": "photometric loss of the dynamic-only render on the pixels the motion masks mark moving "
                "(METHOD 2.15)"})
    masked_start: int = field(default=0, metadata={
        "help": "step from which the two masked terms are on (not before static pre-training ends)"})
    entropy_weight: float = field(default=1e-3, metadata={
        "help": "skewed binary entropy of each sample's dynamic share sigma_d / (sigma_d + sigma_s) (METHOD 2.14; "
                "any scene, no prior needed; only with a static field)"})
    entropy_skew: float = field(default=2.0, metadata={
        "help": "the entropy is that of share^skew (above 1: a bias towards static)"})
    entropy_start: int = field(default=5000, metadata={
        "help": "step from which the entropy term is on (not before static pre-training ends)"})
    dynamic_sparsity_weight: float = field(default=0.0, metadata={
        "help": "dynamic sparsity: mean dynamic opacity of the rendered rays (any scene, no prior needed), so "
                "content the static field can hold leaves the dynamic field"})
    dynamic_sparsity_start: int = field(default=0, metadata={
        "help": "step from which dynamic sparsity is on (not before static pre-training ends)"})
    distortion_weight: float = field(default=0.0, metadata={
        "help": "mip-NeRF 360 distortion of the blended weights along each ray, any scene (METHOD 2.13; the "
                "reference's forward-facing configs: 0.05, Balloon1 0.01, from step 1000)"})
    distortion_start: int = field(default=1000, metadata={
        "help": "step from which the distortion term is on (not before static pre-training ends)"})


def median_normalize(x: torch.Tensor) -> torch.Tensor:
    """``(x - med) / mean|x - med|`` of a ``[K]`` vector (METHOD 2.12)."""
    med = x.median()
    return (x - med) / (x - med).abs().mean().clamp_min(1e-8)


def project(points: torch.Tensor, c2w: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates ``[R, 2]`` (x right, y down, pixel centres at +0.5) of world ``points [R, 3]``
    in OpenGL cameras ``c2w [R, 4, 4]`` with ``intrinsics [R, 4]``."""
    cam = ((points - c2w[:, :3, 3])[:, None, :] @ c2w[:, :3, :3])[:, 0]  # R^T (p - c)
    z = (-cam[:, 2]).clamp_min(1e-6)
    fx, fy, cx, cy = intrinsics.unbind(-1)
    return torch.stack([fx * cam[:, 0] / z + cx, -fy * cam[:, 1] / z + cy], dim=-1)


def dynamic_sparsity_loss(samples) -> torch.Tensor:
    """Mean over rays of the dynamic opacity ``sum_k w^d_k`` of a render's packed ``samples`` (scalar).

    Unsupervised decomposition prior: content that does not change over time costs nothing in the static
    field and this much in the dynamic one, so it moves to the static field; moving content, which the static
    field cannot render, stays dynamic as long as the weight is far below its photometric cost."""
    s = samples
    if s.ray_ids.numel() == 0:
        return s.w_d.sum() * 0.0
    return accumulate(s.w_d, s.ray_ids, s.n_rays).mean()


def dynamic_entropy_loss(samples, skew: float) -> torch.Tensor:
    """Skewed binary entropy of each sample's dynamic share (METHOD 2.14), mean over a render's packed ``samples``
    (scalar): ``p = (sigma_d / (sigma_d + sigma_s))^skew`` clamped to ``[1e-6, 1 - 1e-6]``, ``-(p ln p + (1 - p)
    ln(1 - p))``. Needs no prior; meaningful only with a static field (without one every share is 1)."""
    s = samples
    if s.ray_ids.numel() == 0:
        return s.w_d.sum() * 0.0
    share = s.sigma_d / (s.sigma_d + s.sigma_s).clamp_min(1e-10)
    p = share.pow(skew).clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log()).mean()


def distortion_loss(samples, ndc: bool, extent: float) -> torch.Tensor:
    """Mean over rays of the mip-NeRF 360 distortion of the blended weights ``w = w_s + w_d`` (METHOD 2.13):
    ``sum_ij w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (s1_i - s0_i)`` with each sample's interval ``[s0, s1]`` and
    midpoint ``m`` in normalised units: in NDC (``ndc``), ``s = (z + 1) / 2``, 0 at the near plane and 1 at
    infinity, as the reference; otherwise field distance over the box's longest side ``extent``.

    The double sum in one pass over the packed samples (sorted by ray and t): ``2 sum_i w_i (m_i W_i - S_i)``
    with ``W_i, S_i`` the sums of ``w`` and ``w m`` over the ray's earlier samples."""
    s = samples
    if s.ray_ids.numel() == 0:
        return s.w_d.sum() * 0.0
    w = s.w_s + s.w_d
    scale = s.dirs[:, 2].abs().detach() * 0.5 if ndc else 1.0 / extent  # ds / dt (unit field directions)
    s0, s1 = s.t_starts * scale, s.t_ends * scale
    m = 0.5 * (s0 + s1)
    before_w = exclusive_segment_cumsum(w, s.ray_ids, s.n_rays)
    before_wm = exclusive_segment_cumsum(w * m, s.ray_ids, s.n_rays)
    per_sample = 2.0 * w * (m * before_w - before_wm) + w * w * (s1 - s0) / 3.0
    return per_sample.sum() / s.n_rays


class PriorObjective:
    """Prior terms for one training split.

    Args:
        cfg: weights and schedules.
        model: the :class:`~kinfield.render.SceneModel`.
        split: the training :class:`~kinfield.data.SceneSplit` (poses of neighbouring frames for flow).
        frame_dt: training frame spacing (dataset time).
    """

    def __init__(self, cfg: PriorConfig, model, split, frame_dt: float, dyn_weight_threshold: float = 1e-4):
        self.cfg = cfg
        self.model = model
        self.split = split
        self.dt = float(frame_dt)
        self.thresh = dyn_weight_threshold
        self.has = set(split.extras)

    @property
    def pretrain_steps(self) -> int:
        """Steps of static pre-training (only with motion masks): the other photometric terms start after."""
        return self.cfg.static_pretrain_steps if "motion_mask" in self.has else 0

    @property
    def needs_decomposition(self) -> bool:
        c = self.cfg
        return "motion_mask" in self.has and (c.static_masked_weight > 0 or c.dynamic_masked_weight > 0
                                              or c.static_pretrain_steps > 0)

    def _zero(self, ctx) -> torch.Tensor:
        return ctx["render"]["rgb"].sum() * 0.0

    # ------------------------------------------------------------------ depth
    def depth_loss(self, ctx) -> torch.Tensor:
        """Median-normalised depth vs negated disparity, per frame of the batch (METHOD 2.12)."""
        b = ctx["batch"]
        if "disp" not in b:
            return self._zero(ctx)
        depth, frame = ctx["render"]["depth"], b["frame"]
        losses = []
        for f in torch.unique(frame):  # a handful of frames per batch: no per-sample loop
            m = frame == f
            if int(m.sum()) < 8:
                continue
            losses.append(((median_normalize(depth[m]) - median_normalize(-b["disp"][m])) ** 2).mean())
        return torch.stack(losses).mean() if losses else self._zero(ctx)

    def sparse_depth_loss(self, ctx) -> torch.Tensor:
        """Relative error of the rendered depth (along each camera's axis) at pixels with an SfM depth:
        ``weight * |z_sfm / z - 1|`` over the batch's rays that hit such a pixel."""
        b = ctx["batch"]
        if "sparse_depth" not in b:
            return self._zero(ctx)
        hit = torch.nonzero(b["sparse_depth"] > 0)[:, 0]
        if hit.numel() == 0:
            return self._zero(ctx)
        space = self.model.space
        o, d = space.rays(b["origins"][hit], b["dirs"][hit])
        p = space.to_world(o + d * ctx["render"]["depth"][hit, None])
        c2w = self.split.poses.to(p.device)[b["frame"][hit]]
        z = -((p - c2w[:, :3, 3])[:, None, :] @ c2w[:, :3, :3])[:, 0, 2]
        rel = (b["sparse_depth"][hit] / z.clamp_min(1e-6) - 1.0).abs()
        return (b["sparse_depth_weight"][hit] * rel).mean()

    # ------------------------------------------------------------------ flow
    def expected_points(self, ctx, sign: float, n_rays: int) -> torch.Tensor:
        """World point each of the first ``n_rays`` rays sees, with dynamic samples moved by ``sign`` frames
        through the kinematic field (METHOD 2.10): ``[n_rays, 3]``. The samples are averaged in field
        coordinates (NDC in a forward-facing scene, as the reference) and the average is then taken to world
        space: averaged in world space, the far samples of a ray not yet opaque (tens of units deep near NDC
        z = 1) would drag the point far back."""
        s = ctx["render"]["samples"]
        space = self.model.space
        keep = s.ray_ids < n_rays
        ids = s.ray_ids[keep]
        x = s.positions[keep]
        moved = x
        if self.model.kinematic is not None:
            dyn = torch.nonzero(s.w_d[keep].detach() > self.thresh)[:, 0]
            if dyn.numel():
                tau = torch.full((dyn.numel(),), sign * self.dt, device=x.device)
                d = taylor_displacement(self.model.kinematic(x[dyn], s.times[keep][dyn]), tau)
                moved = x.index_copy(0, dyn, space.move(x[dyn], d))
        w_s, w_d = s.w_s[keep], s.w_d[keep]
        p = accumulate(w_d[:, None] * moved + w_s[:, None] * x, ids, n_rays)
        rest = (1.0 - accumulate(w_s + w_d, ids, n_rays)).clamp_min(0.0)
        # the remaining weight sits at the end of the ray
        t_last = torch.zeros(n_rays, dtype=x.dtype, device=x.device).scatter_reduce(
            0, ids, s.t_ends[keep].detach(), "amax", include_self=True)
        o, d = space.rays(ctx["batch"]["origins"][:n_rays], ctx["batch"]["dirs"][:n_rays])
        return space.to_world(p + rest[:, None] * (o + d * t_last[:, None]))

    def flow_loss(self, ctx) -> torch.Tensor:
        """L1 between rendered and precomputed 2-D flow to the next / previous frame (METHOD 2.10)."""
        b = ctx["batch"]
        if "flow_fwd" not in b and "flow_bwd" not in b:
            return self._zero(ctx)
        n = min(self.cfg.flow_max_rays, b["frame"].shape[0])
        frame = b["frame"][:n]
        own = torch.stack([b["cols"][:n].float() + 0.5, b["rows"][:n].float() + 0.5], dim=-1)
        poses, intr = self.split.poses.to(own.device), self.split.intrinsics.to(own.device)
        total, n_frames = self._zero(ctx), self.split.num_frames
        # a ray without samples sees nothing to move (its expected point would be the ray's origin): no flow target
        ids = ctx["render"]["samples"].ray_ids
        hit = own.new_zeros(n).index_fill_(0, ids[ids < n], 1.0)
        for kind, sign in (("fwd", 1.0), ("bwd", -1.0)):
            if f"flow_{kind}" not in b:
                continue
            other = (frame + int(sign)).clamp(0, n_frames - 1)
            mask = b[f"flow_{kind}_mask"][:n] * ((frame + int(sign) >= 0) & (frame + int(sign) < n_frames)).float() * hit
            if float(mask.sum()) == 0:
                continue
            pts = self.expected_points(ctx, sign, n)
            pred = project(pts, poses[other], intr[other]) - own
            pred = torch.nan_to_num(pred).clamp(-self.cfg.flow_clamp_px, self.cfg.flow_clamp_px)
            total = total + (mask[:, None] * (pred - b[f"flow_{kind}"][:n]).abs()).mean()
        return total

    # ------------------------------------------------------------------ masks
    def masked_loss(self, ctx, part: str) -> torch.Tensor:
        """Static-only render on static pixels / dynamic-only render on moving pixels (METHOD 2.15)."""
        b, r = ctx["batch"], ctx["render"]
        if "motion_mask" not in b or f"rgb_{part}" not in r:
            return self._zero(ctx)
        m = b["motion_mask"] if part == "dynamic" else 1.0 - b["motion_mask"]
        err = ((r[f"rgb_{part}"] - ctx["target"]) ** 2).mean(-1)
        return (m * err).sum() / m.sum().clamp_min(1.0)

    def terms(self) -> List[Term]:
        c = self.cfg
        decay = Schedule("step", milestones=tuple(c.decay_milestones), rate=c.decay_rate)
        pre = self.pretrain_steps
        out = [
            Term("depth_prior", self.depth_loss, c.depth_weight if "disp" in self.has else 0.0, pre, schedule=decay),
            Term("sparse_depth_prior", self.sparse_depth_loss,
                 c.sparse_depth_weight if "sparse_depth" in self.has else 0.0, pre, schedule=decay),
            Term("flow_prior", self.flow_loss,
                 c.flow_weight if {"flow_fwd", "flow_bwd"} & self.has else 0.0, pre, schedule=decay),
            Term("static_masked", lambda ctx: self.masked_loss(ctx, "static"),
                 c.static_masked_weight if "motion_mask" in self.has else 0.0, max(pre, c.masked_start)),
            Term("dynamic_masked", lambda ctx: self.masked_loss(ctx, "dynamic"),
                 c.dynamic_masked_weight if "motion_mask" in self.has else 0.0, max(pre, c.masked_start)),
        ]
        if pre > 0:  # static pre-training: the static field alone on static pixels
            out.append(Term("static_pretrain", lambda ctx: self.masked_loss(ctx, "static"), 1.0, 0, end=pre))
        return out


def prior_summary(split) -> Dict[str, bool]:
    """Which priors a split carries (for the training log)."""
    return {k: k in split.extras for k in ("disp", "flow_fwd", "flow_bwd", "motion_mask", "sparse_depth")}
