"""End to end: with an exact dynamic field, the warped photometric losses teach F_K the true motion.

The dynamic field is an analytic textured sphere (translating along a parabola), the images are its
renders from random cameras (one per frame, D-NeRF style), and only the kinematic field learns, with
the shipped demo configuration and optimiser settings. This checks the whole warp path (Taylor
displacement, sign and time conventions, compositing, gradient flow, output scaling) against a known
answer; it fails if, e.g., the displacement's sign or time unit is wrong or the head cannot move.
"""
import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from kinfield.config import parse_args
from kinfield.data.synthetic import _random_cameras
from kinfield.fields.analytic import AnalyticSphere, rotate
from kinfield.geometry import pixel_rays
from kinfield.losses import total_loss
from kinfield.losses.kinematic import KinematicObjective
from kinfield.train.trainer import build_model

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
PHOTOMETRIC_ONLY = ["--kin_cycle_weight", "0", "--kin_integrity_weight", "0", "--kin_transport_weight", "0",
                    "--kin_rigidity_weight", "0", "--kin_normal_weight", "0", "--kin_higher_order_weight", "0",
                    "--kin_static_motion_weight", "0", "--kin_consistency_weight", "0"]


def test_analytic_sphere_velocity_is_the_time_derivative_of_its_material_points():
    sphere = AnalyticSphere((0.1, -0.2, 0.0), (1.0, 0.5, 2.0), (0.0, 0.0, -4.0), (0.0, 3.0, 1.0))
    e0 = torch.randn(6, 3) * 0.3  # body-frame offsets at t = 0
    t = torch.full((6,), 0.4)

    def point(tt):
        return sphere.center(tt) + rotate(e0, sphere.omega, tt)

    h = 1e-3
    fd = (point(t + h) - point(t - h)) / (2 * h)
    torch.testing.assert_close(sphere.velocity(point(t), t), fd, atol=1e-3, rtol=1e-3)
    # colour is carried with the material: the same body point has the same colour at two times
    d = torch.zeros(6, 3)
    torch.testing.assert_close(sphere(point(t), t, d)[1], sphere(point(t + 0.3), t + 0.3, d)[1], atol=1e-4, rtol=0)


def test_warped_photometric_losses_recover_the_velocity_of_an_exact_field():
    torch.manual_seed(0)
    frames, width, n_rays, steps = 40, 64, 512, 150
    cfg = parse_args(["--config", str(CONFIG), "--kin_start", "0"] + PHOTOMETRIC_ONLY)  # the warps from step 0
    dt = 1.0 / (frames - 1)
    model = build_model(cfg, torch.tensor([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]), dt)
    sphere = AnalyticSphere((-0.75, -0.45, -0.35), (1.5, 0.3, 2.6), (0.0, 0.0, -4.4),
                            encoding=model.dynamic.encoding)
    model.static, model.dynamic, model.normal_net = None, sphere, None
    for s in range(0, 256, 16):
        model.update_occupancy(s)
    for p in model.parameters():
        p.requires_grad_(False)
    kin = model.kinematic
    for p in kin.parameters():
        p.requires_grad_(True)
    nets = [p for n, p in kin.named_parameters() if not n.endswith("encoding.params")]
    opt = torch.optim.Adam([{"params": [kin.encoding.params], "lr": cfg.train.lr_grid},
                            {"params": nets, "lr": cfg.train.lr_net}], betas=(0.9, 0.99), eps=1e-15)
    objective = KinematicObjective(cfg.kin, model, dt)
    terms = objective.terms()
    cams = torch.tensor(_random_cameras(np.random.default_rng(0), frames, 4.0, (10.0, 75.0)), dtype=torch.float32)
    focal = 0.5 * width / math.tan(0.5 * 0.6911112070083618)
    intr = torch.tensor([focal, focal, width / 2, width / 2])
    bg = torch.ones(3)

    dirs = torch.nn.functional.normalize(torch.randn(256, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    te = torch.linspace(0.1, 0.9, 5).repeat_interleave(256)
    xe = sphere.center(te) + sphere.radius * dirs.repeat(5, 1)
    ve = sphere.velocity(xe, te)

    def rel_error():
        with torch.no_grad():
            return float((kin(xe, te)[:, 0] - ve).norm() / ve.norm())

    assert abs(rel_error() - 1.0) < 1e-3  # starts (almost) still: a zero last layer beside a small random read-out
    for step in range(steps):
        kin.set_active_orders(objective.active_orders(step))
        i = int(torch.randint(frames, (1,)))
        pix = torch.randint(width, (n_rays, 2))
        o, d = pixel_rays(cams[i], intr, pix[:, 0], pix[:, 1])
        t = torch.full((n_rays,), i * dt)
        with torch.no_grad():
            target = model.render_rays(o, d, t, bg)["rgb"]
        render = model.render_rays(o, d, t, bg, stratified=True)
        ctx = {"batch": {"origins": o, "dirs": d, "times": t}, "target": target, "render": render,
               "render_background": bg, "model": model, "step": step}
        loss, _ = total_loss(terms, ctx, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    err = rel_error()
    assert err < 0.4, err


class _ConstantVelocity(torch.nn.Module):
    """A kinematic field moving everything at ``scale * v`` (no acceleration, no jerk)."""

    order = 3

    def __init__(self, v, scale):
        super().__init__()
        self.v, self.scale = torch.tensor(v), scale
        self.register_buffer("taylor_mask", torch.ones(3))

    def forward(self, x, t):
        q = torch.zeros(x.shape[0], 3, 3)
        q[:, 0] = self.v * self.scale
        return q

    def displacement(self, x, t, tau):
        return self(x, t)[:, 0] * tau[:, None]


def test_consistency_term_vanishes_at_the_true_motion_of_an_exact_field():
    """The 3-D consistency of the hop warp: zero (up to the time clamp at the sequence's ends, which the
    hops avoid) when F_K carries each sample with the field's true velocity, and clearly positive without motion."""
    torch.manual_seed(0)
    frames, width = 40, 48
    cfg = parse_args(["--config", str(CONFIG), "--kin_start", "0", "--kin_hop_max_start", "6",
                      "--kin_hop_max_end", "6", "--kin_consistency_weight", "1"])
    dt = 1.0 / (frames - 1)
    model = build_model(cfg, torch.tensor([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]), dt)
    v0 = (1.5, 0.3, 1.0)
    sphere = AnalyticSphere((-0.75, -0.45, -0.35), v0, encoding=model.dynamic.encoding)
    model.static, model.dynamic, model.normal_net = None, sphere, None
    for s in range(0, 256, 16):
        model.update_occupancy(s)
    cam = torch.tensor(_random_cameras(np.random.default_rng(0), 1, 4.0, (10.0, 75.0))[0], dtype=torch.float32)
    focal = 0.5 * width / math.tan(0.5 * 0.6911112070083618)
    pix = torch.stack(torch.meshgrid(torch.arange(width), torch.arange(width), indexing="ij"), -1).reshape(-1, 2)
    o, d = pixel_rays(cam, torch.tensor([focal, focal, width / 2, width / 2]), pix[:, 0], pix[:, 1])
    t = torch.full((o.shape[0],), 0.5)
    bg = torch.ones(3)
    losses = {}
    for scale in (0.0, 1.0):
        model.kinematic = _ConstantVelocity(v0, scale)
        objective = KinematicObjective(dataclasses.replace(cfg.kin, max_warp_rays=o.shape[0]), model, dt)
        torch.manual_seed(1)  # same hops for both
        with torch.no_grad():
            render = model.render_rays(o, d, t, bg)
            ctx = {"batch": {"origins": o, "dirs": d, "times": t}, "target": render["rgb"], "render": render,
                   "render_background": bg, "model": model, "step": 10**6}
            assert objective._selection(ctx)["idx"].numel() > 100  # the sphere is in view
            losses[scale] = float(objective.consistency_loss(ctx))
    assert losses[1.0] < 0.02 * losses[0.0], losses
    assert losses[0.0] > 1e-3, losses
