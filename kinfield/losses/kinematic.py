"""Kinematic objectives: warped photometric losses, cycle consistency and physics regularisers.

One :class:`KinematicObjective` per trainer. Each step it draws time hops for the batch, warps the
reference rays' dynamic samples with the kinematic field's Taylor displacement (reusing the
reference samples, METHOD 8.4), renders them against the detached static field, and evaluates the
physics residuals at points along the intermediate warps. Each quantity is computed once per step
and cached in the step context; the terms it returns (:meth:`terms`) read from that cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch

from .._constants import constant
from ..fields import taylor_displacement
from ..nn import scale_grad
from ..render import composite_blended, composite_outputs
from ..render.composite import accumulate, dynamic_probability
from .base import Schedule, Term
from .photometric import charbonnier
from .physics import central_differences, integrity_residuals, rigidity_terms, strain_rate_sq, transport_residual


# the terms computed from the physics residuals at points along the intermediate warp (KinematicObjective.physics)
PHYSICS_TERMS = ("integrity", "transport", "rigidity", "normal", "higher_order")
# The transport residual in the reference's density units (METHOD 1.4, 2.6): its field's raw density sigma_d renders
# as sigma_d * 25 (the distance scale) where kinfield's density is the physical one (so sigma = 25 sigma_d), and its
# transport term reads sigma_d / 16: kinfield's sigma / 400. With it the reference's transport weights apply as they
# are (without it the same weight counted 400^2 = 160,000 times as much).
REFERENCE_TRANSPORT_DENSITY = 1.0 / 400.0


@dataclass
class KinConfig:
    """Kinematic part of training (weights as METHOD section 4; 0 disables a term)."""

    enabled: bool = field(default=True, metadata={
        "help": "train the kinematic field F_K and its terms (false: the dynamic field alone, without keyframe "
                "advection either: the one switch for ablations)"})
    start: int = field(default=0, metadata={
        "help": "step from which the warped photometric, cycle, consistency and static-motion terms are on (the "
                "physics terms not before it either), and the dynamic-ray map of --train_dynamic_ray_fraction"})
    ramp: int = field(default=0, metadata={
        "help": "the warped photometric, cycle and consistency weights ramp linearly from 0 at their start to full "
                "weight over this many steps (0 = full at once)"})
    unlock_acceleration: int = field(default=500, metadata={
        "help": "step from which F_K's acceleration is used (Taylor order 2; masked to 0 before; METHOD 1.3)"})
    unlock_jerk: int = field(default=1500, metadata={
        "help": "step from which F_K's jerk is used (Taylor order 3; masked to 0 before; METHOD 1.3)"})
    # (switched on with F_K, the gate shut the demo's spinning top off within 250 steps (gate 0.02), before F_K had
    # learned the spin; the floor's zero motion taught it faster)
    gate_start: int = field(default=0, metadata={
        "help": "step from which F_K's motion gate (--kinematic_motion_gate) multiplies the kinematics (a factor 1 "
                "before)"})
    hop_max_start: float = field(default=2.0, metadata={
        "help": "H_max of the warps' time hops at step 0: each warp ray hops floor(1 + U (H_max - 1)) frames (U "
                "uniform in [0, 1)) forwards or back, so 2 gives 1-frame hops only, 3 1 or 2 frames (METHOD 2.2)"})
    hop_max_end: float = field(default=3.0, metadata={
        "help": "H_max of the time hops from step --kin_hop_ramp_steps on (linear from --kin_hop_max_start)"})
    hop_ramp_steps: int = field(default=2000, metadata={
        "help": "steps (from step 0) over which H_max goes from --kin_hop_max_start to --kin_hop_max_end"})
    dyn_weight_threshold: float = field(default=1e-4, metadata={
        "help": "the warps (and the flow prior) move the samples whose (blended) dynamic render weight w_d exceeds "
                "this; the others have no dynamic density in the warped renders"})
    max_warp_rays: int = field(default=1024, metadata={
        "help": "rays warped per step: the first this many of the batch (the physics points come from their samples)"})
    flowgrad_scale: float = field(default=2.0, metadata={
        "help": "backward-pass scale of the gradient at the warped sample positions, hence of what the warped terms "
                "teach F_K (METHOD 2.2)"})
    # (while F_K is still near zero motion, warps pull the dynamic field towards a time-constant (ghosted) copy of the
    # scene, which then no longer shows the motion F_K has to learn; demo scene, 7 min, photometric terms only:
    # trajectory error 0.322 with -1 and start=250, 0.360 with 0 and start=0)
    warp_field_start: int = field(default=0, metadata={
        "help": "step from which the warped renders train the dynamic field too (before it, and always when "
                "negative, they train F_K alone)"})
    keyframe_frames: float = field(default=0.0, metadata={  # (SceneModel.set_keyframe_advection)
        "help": "keyframe advection of the dynamic field (with F_K): keyframes this many training frames apart, "
                "F_DY(x, t) read at the two keyframe times around t, at the points F_K carries x to, and blended (0 = "
                "off: the dynamic field is read at every time directly)"})
    # (half the dynamic-grid reads, and a misaligned F_K shows as a shifted image rather than a cross-fade)
    keyframe_sample: bool = field(default=True, metadata={
        "help": "with keyframe advection, each training ray reads one of its two keyframes (the later one with "
                "probability w, its blend weight) instead of a blend of both; renders for evaluation always blend"})
    photo_weight: float = field(default=0.5, metadata={
        "help": "warped photometric loss: dynamic samples moved by F_K over a hop of h frames, rendered at t + h "
                "and compared with the reference pixel (METHOD 2.2)"})
    photo_inter_weight: float = field(default=0.5, metadata={
        "help": "warped photometric loss at intermediate times t + U h, U uniform in [0, 1) (METHOD 2.3)"})
    cycle_weight: float = field(default=1e-2, metadata={
        "help": "cycle consistency: F_K's displacements over a hop and back from its end cancel (METHOD 2.4)"})
    static_motion_weight: float = field(default=1e-4, metadata={
        "help": "penalty on F_K's displacement per frame where the static field dominates (METHOD 2.15)"})
    consistency_weight: float = field(default=0.0, metadata={
        "help": "3-D consistency of the hop warp: the dynamic field at each visible dynamic sample's warped point and "
                "time has the sample's own opacity and colour (a dense, per-sample form of the warped photometric "
                "loss)"})
    consistency_density_weight: float = field(default=1.0, metadata={
        "help": "weight of the opacity part of the consistency term, relative to its colour part"})
    # Units of the physics terms: each residual is in per-frame units (an order-k quantity times Delta^k, Delta the
    # frame spacing of kinfield's [0, 1] time), so its square does not depend on how time is parametrised. The
    # reference (time in [-1, 1]) multiplies each squared residual by Delta^2 alone: its divergence and transport
    # terms equal these (transport read in its density units, REFERENCE_TRANSPORT_DENSITY), but its acceleration
    # integrity, i2 rigidity and acceleration penalty are these / Delta_ref^2 (x133 at 24 frames) and its jerk
    # integrity and jerk penalty these / Delta_ref^4 (x17,700), so the same weight counts those terms that much less.
    integrity_weight: float = field(default=0.1, metadata={
        "help": "kinematic integrity: F_K's acceleration and jerk against the material derivatives of its velocity "
                "and acceleration (METHOD 2.5)"})
    transport_weight: float = field(default=1e-5, metadata={
        "help": "density transport: the dynamic density moves with F_K's velocity (v detached; METHOD 2.6)"})
    transport_decay_milestones: Tuple[int, ...] = field(default=(), metadata={
        "help": "steps, counted from the transport term's start, at each of which its weight is multiplied by 0.1 "
                "(none = no decay; METHOD 2.6)"})
    rigidity_weight: float = field(default=1e-2, metadata={
        "help": "rigidity of F_K's velocity field, in the form of --kin_rigidity_form (METHOD 2.7)"})
    rigidity_form: str = field(default="invariants", metadata={
        "help": "'invariants': div^2 + i2^2 (METHOD 2.7; i2 is quadratic in the strain rate, so a small shear costs "
                "almost nothing); 'strain': |E|_F^2, the squared strain rate itself (also zero exactly for rigid "
                "motion)"})
    normal_weight: float = field(default=0.05, metadata={
        "help": "normal regulariser: normals regressed from the dynamic field's geometry features against the "
                "density's -grad sigma (METHOD 2.8); 0 also leaves out the regressor"})
    higher_order_weight: float = field(default=1e-5, metadata={
        "help": "penalty on the size of F_K's acceleration and jerk (per-frame units; METHOD 2.9)"})
    physics_start: int = field(default=200, metadata={
        "help": "step from which the physics terms (integrity, transport, rigidity, normal, higher order) are on "
                "(not before --kin_start)"})
    normal_start: int = field(default=500, metadata={
        "help": "step from which the normal term is on (not before --kin_physics_start)"})
    max_physics_points: int = field(default=2048, metadata={
        "help": "physics points per step at most: intermediate-warped samples above --kin_physics_sigma_threshold, "
                "a random subset beyond this (METHOD 2.11; --kin_physics_volume_points come on top)"})
    # The warped samples lie on visible surfaces; the volume points put rigidity and the other residuals inside
    # objects and on their unseen sides too (demo scene, 256 of them: trajectory error 0.068 as without,
    # bench/RESULTS.md "Motion").
    physics_volume_points: int = field(default=0, metadata={
        "help": "extra physics points inside the dynamic content: copies of the kept points moved by a random "
                "offset of up to --kin_physics_volume_radius at the same time, kept where the dynamic density passes "
                "--kin_physics_sigma_threshold (0 = off)"})
    physics_volume_radius: float = field(default=0.1, metadata={
        "help": "largest offset of the extra physics points, a fraction of the scene box's largest side"})
    physics_sigma_threshold: float = field(default=1.0, metadata={
        "help": "dynamic density (per field unit of length) a warped sample or extra point needs to be a physics "
                "point"})
    fd_cell_fraction: float = field(default=0.3, metadata={
        "help": "spatial finite-difference step of the physics terms, a fraction of a finest-level grid cell (the "
                "smaller of F_K's and the dynamic field's; METHOD 8.2)"})
    fd_time_frames: float = field(default=0.05, metadata={
        "help": "time step of the physics terms' finite differences, in training frames"})
    fd_jitter: bool = field(default=True, metadata={
        "help": "multiply the finite-difference steps (space, time) by random factors in [0.5, 1.5), drawn once "
                "per training step (METHOD 3)"})
    derivative_grad_scale: float = field(default=0.1, metadata={
        "help": "backward-pass scale of the derivative side of the integrity and transport terms (the advected "
                "acceleration / jerk and the density's derivatives; METHOD 2.16)"})
    # Bound on the advected acceleration / jerk H~ of the integrity term, in the reference's units (time in
    # [-1, 1]; METHOD 2.5: 64): kinfield's time runs over [0, 1], so the bound is 64 * 4 on the acceleration
    # and 64 * 8 on the jerk (world units per unit of time squared / cubed). 0: no bound.
    integrity_clamp: float = field(default=64.0, metadata={
        "help": "bound on the integrity term's advected acceleration / jerk in the reference's units (time in [-1, "
                "1]; x4 / x8 in kinfield's [0, 1] time); 0 = no bound"})
    # Gradient scale of the density side of the normal loss. The reference lets it reach the density
    # grids; on hash grids that destabilised geometry (standup 1/8: train PSNR 28.1 -> 24.2 within 50
    # steps of the term starting; 29.4 with the term off), so by default the density side is off.
    normal_density_grad_scale: float = field(default=0.0, metadata={
        "help": "backward-pass scale of the normal loss into the density (through -grad sigma; 0 = none)"})
    # Gradient scale of the normal loss into the dynamic field's geometry features. The reference's regressor
    # reads appearance features, separate from its density; here the geometry features come out of the density
    # MLP, so the gradient reaches the density trunk and grid. At full scale it is 2.5x (grid) and 4x (density
    # MLP) the photometric gradient there (demo scene, step 1000), at 0.1 0.25x / 0.4x, at 0.03 0.08x / 0.12x.
    # Demo scene, mean trajectory error over seeds 0-4: 0.048 at 0.1, 0.046 at 0.03 (photometric-only 0.063);
    # seed 0: 0.050-0.052 at 1, 0.043 with the term off (bench/RESULTS.md "Motion"). The regressor always learns at full
    # scale; the term still shapes the features, an order of magnitude below the images.
    normal_feature_grad_scale: float = field(default=0.03, metadata={
        "help": "backward-pass scale of the normal loss into the dynamic field's geometry features (the regressor "
                "itself always learns at full scale)"})


class KinematicObjective:
    """Computes and caches the kinematic quantities of one training step.

    Args:
        cfg: weights and schedules.
        model: the :class:`~kinfield.render.SceneModel` with ``kinematic`` (and ``normal_net``) attached.
        frame_dt: training frame spacing Delta (dataset time units).
    """

    def __init__(self, cfg: KinConfig, model, frame_dt: float):
        if cfg.rigidity_form not in ("invariants", "strain"):
            raise ValueError(f"--kin_rigidity_form must be invariants or strain, got {cfg.rigidity_form!r}")
        self.cfg = cfg
        self.model = model
        self.dt = float(frame_dt)

    # ------------------------------------------------------------------ schedules
    def active_orders(self, step: int) -> int:
        k = 1 + (step >= self.cfg.unlock_acceleration) + (step >= self.cfg.unlock_jerk)
        return min(k, self.model.kinematic.order)

    def hop_max(self, step: int) -> float:
        c = self.cfg
        f = min(1.0, step / max(1, c.hop_ramp_steps))
        return c.hop_max_start + f * (c.hop_max_end - c.hop_max_start)

    def draw_hops(self, times: torch.Tensor, step: int, gen=None) -> torch.Tensor:
        """Signed integer hops ``h [R]`` (in frames), ``|h| = floor(1 + U (H_max - 1))``; flipped to stay in
        [0, 1], and shortened to the last frame when neither direction has ``|h|`` frames (short sequences)."""
        u = torch.rand(times.shape, device=times.device)
        mag = torch.floor(1.0 + u * (self.hop_max(step) - 1.0))
        sign = torch.where(torch.rand(times.shape, device=times.device) < 0.5, -1.0, 1.0)
        h = mag * sign
        out = (times + h * self.dt > 1.0) | (times + h * self.dt < 0.0)
        h = torch.where(out, -h, h)
        fwd = torch.floor((1.0 - times) / self.dt + 1e-4)  # whole frames left after / before each time
        bwd = torch.floor(times / self.dt + 1e-4)
        h = torch.minimum(torch.maximum(h, -bwd), fwd)
        other = torch.where(fwd > 0, torch.minimum(mag, fwd), -torch.minimum(mag, bwd))
        return torch.where(h == 0, other, h)

    # ------------------------------------------------------------------ warping
    def _selection(self, ctx) -> Dict[str, torch.Tensor]:
        """Dynamic samples of the (first ``max_warp_rays``) reference rays and their ray mask."""
        if "kin_sel" in ctx:
            return ctx["kin_sel"]
        s = ctx["render"]["samples"]
        n_rays = min(s.n_rays, self.cfg.max_warp_rays)
        on_warp_rays = s.ray_ids < n_rays
        sel = (s.w_d.detach() > self.cfg.dyn_weight_threshold) & on_warp_rays
        idx = torch.nonzero(sel)[:, 0]
        # samples are sorted by ray: the warp rays' samples are the first n_samples (one count, not a mask)
        n_samples = s.ray_ids.shape[0] if n_rays == s.n_rays else int(on_warp_rays.sum())
        times = ctx["batch"]["times"][:n_rays]
        hops = self.draw_hops(times, ctx["step"])
        frac = torch.rand(n_rays, device=times.device)
        if "dynamic_probability" not in ctx:  # the trainer fills it when it keeps a dynamic-ray map
            ctx["dynamic_probability"] = dynamic_probability(s)
        mask = ctx["dynamic_probability"][:n_rays]
        ctx["kin_sel"] = {"idx": idx, "n_rays": n_rays, "n_samples": n_samples, "hops": hops, "frac": frac,
                          "ray_mask": mask}
        return ctx["kin_sel"]

    def _kinematics_at_samples(self, ctx) -> torch.Tensor:
        if "kin_q" not in ctx:
            s = ctx["render"]["samples"]
            idx = self._selection(ctx)["idx"]
            q = self.model.kinematic_q(s.positions, s.times, reuse_only=True)  # the render's (keyframe advection)
            ctx["kin_q"] = q[idx] if q is not None else self.model.kinematic(s.positions[idx], s.times[idx])  # [Ms,K,3]
        return ctx["kin_q"]

    def ray_motion(self, ctx):
        """Displacement per frame ``[R']`` the kinematic field renders on this step's warp rays (the first
        ``R'`` of the batch): the dynamic-weighted sum of ``|v| Delta`` along each ray (field units, detached);
        ``None`` when the step evaluated no kinematics."""
        if "kin_q" not in ctx:
            return None
        s, sel = ctx["render"]["samples"], ctx["kin_sel"]
        idx = sel["idx"]
        speed = ctx["kin_q"][:, 0].detach().norm(dim=-1) * self.dt
        return accumulate(s.w_d.detach()[idx] * speed, s.ray_ids[idx], sel["n_rays"])

    # the terms that read each warp (a warp no active term reads is not computed)
    WARP_READERS = {"hop": ("warp_photo", "cycle", "consistency"), "inter": ("warp_photo_inter",) + PHYSICS_TERMS}

    def warp(self, ctx, kind: str) -> Dict[str, torch.Tensor]:
        """Warped render of the reference rays: ``kind`` = ``"hop"`` (t + h Delta) or ``"inter"`` (t + U h Delta).

        The first request renders every warp some active term of this step reads (``ctx["active_terms"]``, set by
        :func:`~kinfield.losses.total_loss`) in one query of the dynamic field and one compositing pass."""
        key = f"kin_warp_{kind}"
        if key not in ctx:
            active = ctx.get("active_terms", ())
            kinds = [k for k in ("hop", "inter") if k == kind or (f"kin_warp_{k}" not in ctx and any(
                name in active for name in self.WARP_READERS[k]))]
            self._render_warps(ctx, kinds)
        return ctx[key]

    def _render_warps(self, ctx, kinds: List[str]) -> None:
        """Render the warps ``kinds`` (in this order) into ``ctx["kin_warp_<kind>"]``: per warp, the composited
        ``rgb``, ``depth``, ``opacity`` ``[R']`` and, per warped sample, ``x``, ``t``, ``sigma``, ``rgb_samples``,
        ``tau``, the reference kinematics ``q`` and ``query`` (the points and times the field was read at,
        every warp's; the warp's are rows ``offset ...`` of them)."""
        s = ctx["render"]["samples"]
        sel = self._selection(ctx)
        idx, n_rays, m = sel["idx"], sel["n_rays"], sel["n_samples"]
        rid = s.ray_ids[idx]
        q = self._kinematics_at_samples(ctx)
        per_kind = []
        for kind in kinds:
            tau_ray = sel["hops"] * self.dt * (sel["frac"] if kind == "inter" else 1.0)  # [R']
            tau = tau_ray[rid]
            x_w = scale_grad(self.model.space.move(s.positions[idx], taylor_displacement(q, tau)),
                             self.cfg.flowgrad_scale)
            t_w = (s.times[idx] + tau).clamp(0.0, 1.0)
            # with keyframe advection each warped ray reads one keyframe, as the training render does
            u = self.model.keyframe_draws(n_rays, tau_ray.device)
            per_kind.append((x_w, t_w, tau, u[rid] if u is not None else None))
        n_w, k = idx.shape[0], len(kinds)

        def rows(parts):  # the warps' rows one after the other (no copy for one warp)
            return parts[0] if k == 1 else torch.cat(parts)

        xs, ts = rows([p[0] for p in per_kind]), rows([p[1] for p in per_kind])
        us = rows([p[3] for p in per_kind]) if per_kind[0][3] is not None else None
        sigma_w, rgb_w = self._dynamic_for_warps(ctx)(xs, ts, rows([s.dirs[idx]] * k), us)
        # composite along the reference rays (first n_rays of them: their first m samples; warp j's copy of ray r
        # is ray j R' + r) with the static field detached
        at = rows([idx + j * m for j in range(k)])
        sigma_d = s.sigma_d.new_zeros(k * m).index_put((at,), sigma_w)
        rgb_d = s.rgb_d.new_zeros(k * m, 3).index_put((at,), rgb_w)
        ids = rows([s.ray_ids[:m] + j * n_rays for j in range(k)])
        t0, t1 = rows([s.t_starts[:m]] * k), rows([s.t_ends[:m]] * k)
        w_s, w_d, _ = composite_blended(rows([s.sigma_s.detach()[:m]] * k), sigma_d, t0, t1, ids, k * n_rays)
        bg = ctx["render_background"]
        bg = rows([bg[:n_rays]] * k) if bg.dim() == 2 else bg
        out = composite_outputs(w_s, w_d, rows([s.rgb_s.detach()[:m]] * k), rgb_d, 0.5 * (t0 + t1), ids, k * n_rays, bg)
        for j, (kind, (x_w, t_w, tau, _)) in enumerate(zip(kinds, per_kind)):
            rays, samples = slice(j * n_rays, (j + 1) * n_rays), slice(j * n_w, (j + 1) * n_w)
            ctx[f"kin_warp_{kind}"] = {**{name: v[rays] for name, v in out.items()}, "x": x_w, "t": t_w,
                                       "sigma": sigma_w[samples], "rgb_samples": rgb_w[samples], "tau": tau, "q": q,
                                       "query": (xs, ts), "offset": j * n_w}

    def _dynamic_for_warps(self, ctx):
        """The dynamic field as warped renders see it: with frozen parameters before ``warp_field_start``
        (gradients still reach the warped positions, hence F_K)."""
        dyn = self.model.dynamic
        if 0 <= self.cfg.warp_field_start <= ctx["step"]:
            return dyn
        frozen = {n: p.detach() for n, p in dyn.named_parameters()}
        return lambda *args: torch.func.functional_call(dyn, frozen, args)

    def photo_loss(self, ctx, kind: str) -> torch.Tensor:
        sel = self._selection(ctx)
        if sel["idx"].numel() == 0:
            return self._zero(ctx)
        out = self.warp(ctx, kind)
        target = ctx["target"][: sel["n_rays"]]
        err = charbonnier(out["rgb"], target).mean(-1)  # [R']
        return (sel["ray_mask"] * err).mean()

    def cycle_loss(self, ctx) -> torch.Tensor:
        """``|d_f + d_b|``: the backward displacement at the hop target cancels the forward one (METHOD 2.4)."""
        sel = self._selection(ctx)
        if sel["idx"].numel() == 0:
            return self._zero(ctx)
        w = self.warp(ctx, "hop")
        d_f = taylor_displacement(w["q"], w["tau"])
        q_b = self.model.kinematic_q(*w["query"], reuse_only=True)  # the warps' keyframe advection read it there
        n = w["x"].shape[0]
        q_b = q_b[w["offset"]:w["offset"] + n] if q_b is not None else self.model.kinematic(w["x"], w["t"])
        d_b = taylor_displacement(q_b, -w["tau"])
        return (d_f + d_b).norm(dim=-1).mean()

    def consistency_loss(self, ctx) -> torch.Tensor:
        """Opacity and colour of the dynamic field at each hop-warped sample against the reference sample's
        (detached), weighted by the sample's dynamic render weight and summed along its ray (mean over rays)."""
        sel = self._selection(ctx)
        idx = sel["idx"]
        if idx.numel() == 0:
            return self._zero(ctx)
        s = ctx["render"]["samples"]
        w = self.warp(ctx, "hop")
        delta = (s.t_ends - s.t_starts)[idx]
        alpha_ref = 1.0 - torch.exp(-s.sigma_d.detach()[idx] * delta)
        alpha_w = 1.0 - torch.exp(-w["sigma"] * delta)
        err = charbonnier(w["rgb_samples"], s.rgb_d.detach()[idx]).mean(-1) \
            + self.cfg.consistency_density_weight * charbonnier(alpha_w[:, None], alpha_ref[:, None])[:, 0]
        return (s.w_d.detach()[idx] * err).sum() / sel["n_rays"]

    def static_motion_loss(self, ctx) -> torch.Tensor:
        """Small penalty on motion predicted where the static field dominates (METHOD 2.15)."""
        s = ctx["render"]["samples"]
        idx = self._selection(ctx)["idx"]
        if idx.numel() == 0:
            return self._zero(ctx)
        q = self._kinematics_at_samples(ctx)
        static_share = (s.sigma_s / (s.sigma_d + s.sigma_s).clamp_min(1e-10)).detach()[idx]
        return (static_share * (q[:, 0] * self.dt).abs().sum(-1)).mean()

    # ------------------------------------------------------------------ physics
    def physics(self, ctx) -> Dict[str, torch.Tensor]:
        """Residuals at points along the intermediate warps (METHOD 2.11), each ``[P]`` per point."""
        if "kin_phys" in ctx:
            return ctx["kin_phys"]
        c = self.cfg
        zero = self._zero(ctx)
        res = {k: zero for k in PHYSICS_TERMS}
        ctx["kin_phys"] = res
        ctx["physics_points"] = 0  # (logged: terms of 0 points read 0, as converged ones do)
        if self._selection(ctx)["idx"].numel() == 0:
            ctx["physics_points_why"] = (f"no sample of the warp rays has a dynamic render weight above "
                                         f"--kin_dyn_weight_threshold {c.dyn_weight_threshold:g}")
            return res
        w = self.warp(ctx, "inter")
        keep = (w["sigma"].detach() > c.physics_sigma_threshold) & self.model.dynamic.inside(w["x"].detach()).bool()
        pts = torch.nonzero(keep)[:, 0]
        if pts.numel() > c.max_physics_points:
            pts = pts[torch.randperm(pts.numel(), device=pts.device)[: c.max_physics_points]]
        ctx["physics_points"] = int(pts.numel())
        if pts.numel() == 0:
            ctx["physics_points_why"] = (f"no warped sample inside the dynamic field's box has a dynamic density "
                                         f"above --kin_physics_sigma_threshold {c.physics_sigma_threshold:g}")
            return res
        # derivatives once, in world space (METHOD 3, 8.3): probes in world, mapped to field space to query
        space = self.model.space
        xf, t = w["x"].detach()[pts], w["t"].detach()[pts]
        # the normal term's per-point weight: the reference sample's dynamic render weight (METHOD 2.8)
        weight_pts = ctx["render"]["samples"].w_d.detach()[self._selection(ctx)["idx"][pts]]
        if c.physics_volume_points > 0:
            xf, t, weight_pts = self._add_volume_points(xf, t, weight_pts)
        x = space.to_world(xf)
        kin = self.model.kinematic
        k_orders = kin.order
        cell = min(kin.finest_cell(), self.model.dynamic_finest_cell())  # field units
        jit = (lambda n: torch.rand(n, device=x.device) + 0.5) if c.fd_jitter else (lambda n: torch.ones(n, device=x.device))
        eps_x = space.world_step(x, c.fd_cell_fraction * cell) * jit(1)
        eps_t = c.fd_time_frames * self.dt * jit(1)

        def fn(px, pt):
            pf = space.to_field(px)
            q = self.model.kinematic_q(pf, pt).reshape(px.shape[0], -1)  # (as the density's advection)
            # (v is detached in the transport term, and with keyframe advection F_K would reach it through the
            # density's keyframe points: it does not, so transport shapes the density alone, METHOD 2.6 / 2.16)
            sigma = space.density_to_world(self.model.dynamic.density(pf, pt, motion_grad=False), px)[:, None]
            return torch.cat([q, sigma], dim=-1)

        d = central_differences(fn, x, t, eps_x, eps_t,
                                inside=lambda p: self.model.dynamic.inside(space.to_field(p)))
        valid = d["valid"]
        mean_w = _mean_weights(valid, x.dtype)  # each residual's mean over the valid points: one dot product
        n, split = x.shape[0], [3 * k_orders, 1]  # channels: the kinematics, then the density
        q = d["value"].split(split, dim=1)[0].view(n, k_orders, 3)
        dq_dt, sigma_dt = d["dt"].split(split, dim=1)
        dq_dt = dq_dt.view(n, k_orders, 3)
        grad_q, sigma_grad_raw = d["grad"].split(split, dim=1)
        grad_q, sigma_grad_raw = grad_q.view(n, k_orders, 3, 3), sigma_grad_raw.squeeze(1)  # [N, K, 3, 3], [N, 3]
        mask = kin.taylor_mask
        dt = self.dt
        # residuals in per-frame units: order-k quantities times dt^k
        if k_orders > 1:
            # (the clamp in kinfield's time units: t in [0, 1] makes accelerations 4x, jerks 8x the reference's)
            bound = [c.integrity_clamp * 2.0 ** (i + 2) for i in range(k_orders - 1)] if c.integrity_clamp > 0 else None
            per_frame = constant(tuple(dt ** (i + 2) for i in range(k_orders - 1)), x.device, x.dtype)
            # both sides times the higher order's Taylor mask
            r = integrity_residuals(q, dq_dt, grad_q, c.derivative_grad_scale, bound) * (per_frame[:, None] * mask[1:, None])
            res["integrity"] = torch.dot((r**2).mean(-1).sum(-1), mean_w)
            hi = q[:, 1:] * per_frame[None, :, None]
            res["higher_order"] = torch.dot((hi**2).sum(-1).sum(-1), mean_w)
        sigma_dt = scale_grad(sigma_dt.squeeze(1), c.derivative_grad_scale)
        sigma_grad = scale_grad(sigma_grad_raw, c.derivative_grad_scale)
        v = q[:, 0]
        r_t = transport_residual(sigma_dt, sigma_grad, v.detach()) * (dt * REFERENCE_TRANSPORT_DENSITY)
        res["transport"] = torch.dot(r_t**2, mean_w)
        grad_v = grad_q[:, 0]  # velocity gradient, unscaled
        if c.rigidity_form == "strain":
            res["rigidity"] = torch.dot(strain_rate_sq(grad_v) * dt * dt, mean_w)
        else:
            div, i2 = rigidity_terms(grad_v)
            res["rigidity"] = torch.dot((div * dt) ** 2 + (i2 * dt * dt) ** 2, mean_w)
        if getattr(self.model, "normal_net", None) is not None:
            gnorm = sigma_grad.detach().norm(dim=-1, keepdim=True)
            n_grad = -scale_grad(sigma_grad_raw, c.normal_density_grad_scale) / gnorm.clamp_min(1e-8)
            # the regressor reads the features within one probe step of the point (METHOD 1.3, 2.8: +-eps per axis)
            n_pred = self.model.predict_normals(space.to_field(x + (torch.rand_like(x) * 2.0 - 1.0) * eps_x[:, None]),
                                                t, c.normal_feature_grad_scale)
            weight = weight_pts * (gnorm[:, 0] > 1e-6).float()
            res["normal"] = torch.dot(weight * ((n_pred - n_grad) ** 2).sum(-1), mean_w)
        return res

    @torch.no_grad()
    def _add_volume_points(self, xf: torch.Tensor, t: torch.Tensor, weight: torch.Tensor):
        """Append up to ``physics_volume_points`` points near ``xf [P, 3]`` (field space) at the same times
        ``t [P]``: uniform offsets in a ball, kept inside the box where the dynamic density ``> threshold``.
        Returns the longer ``xf [P', 3]``, ``t [P']`` and per-point ``weight [P']`` (a new point has its source's)."""
        c = self.cfg
        dyn = self.model.dynamic
        src = torch.randint(xf.shape[0], (c.physics_volume_points,), device=xf.device)
        direction = torch.nn.functional.normalize(torch.randn(src.shape[0], 3, device=xf.device), dim=-1)
        radius = c.physics_volume_radius * self.model.kinematic.extent \
            * torch.rand(src.shape[0], 1, device=xf.device) ** (1 / 3)
        xv, tv, wv = xf[src] + direction * radius, t[src], weight[src]
        inside = dyn.inside(xv).bool()
        xv, tv, wv = xv[inside], tv[inside], wv[inside]
        keep = dyn.density(xv, tv) > c.physics_sigma_threshold
        return torch.cat([xf, xv[keep]]), torch.cat([t, tv[keep]]), torch.cat([weight, wv[keep]])

    def _zero(self, ctx) -> torch.Tensor:
        return ctx["render"]["rgb"].sum() * 0.0

    # ------------------------------------------------------------------ terms
    def terms(self) -> List[Term]:
        c = self.cfg
        s0, sp = c.start, max(c.start, c.physics_start)

        def phys(name):
            return lambda ctx: self.physics(ctx)[name]

        transport_schedule = Schedule("step", milestones=tuple(c.transport_decay_milestones), rate=0.1) \
            if c.transport_decay_milestones else Schedule()
        ramp = Schedule("linear", ramp=c.ramp)
        return [
            Term("warp_photo", lambda ctx: self.photo_loss(ctx, "hop"), c.photo_weight, s0, schedule=ramp),
            Term("warp_photo_inter", lambda ctx: self.photo_loss(ctx, "inter"), c.photo_inter_weight, s0,
                 schedule=ramp),
            Term("cycle", self.cycle_loss, c.cycle_weight, s0, schedule=ramp),
            Term("consistency", self.consistency_loss, c.consistency_weight, s0, schedule=ramp),
            Term("static_motion", self.static_motion_loss, c.static_motion_weight, s0),
            Term("integrity", phys("integrity"), c.integrity_weight, sp),
            Term("transport", phys("transport"), c.transport_weight, sp, schedule=transport_schedule),
            Term("rigidity", phys("rigidity"), c.rigidity_weight, sp),
            Term("normal", phys("normal"), c.normal_weight, max(sp, c.normal_start)),
            Term("higher_order", phys("higher_order"), c.higher_order_weight, sp),
        ]


def _mean_weights(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[P]`` weights whose dot product with values ``[P]`` is their mean over the ``valid [P]`` points (all zero,
    so the mean is 0 with a gradient path, when none is valid)."""
    v = valid.to(dtype)
    return v / v.sum().clamp_min(1.0)
