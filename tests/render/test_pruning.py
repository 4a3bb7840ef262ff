"""Early stop of a training render (SceneModel.render_rays with prune_transmittance): the densities of one read
at every marched sample decide which samples go on, and the result is the render of the kept samples alone."""
from __future__ import annotations

import torch
from torch import nn

from kinfield.fields import FieldConfig
from kinfield.nn import HashGridConfig
from kinfield.render import RenderConfig, SceneModel
from kinfield.render.composite import composite_blended
from kinfield.render.renderer import composite_outputs

AABB = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
GRID = HashGridConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4, per_level_scale=1.5)


def opaque_model(use_static=True) -> SceneModel:
    """Dense enough that most rays are opaque within the box (the early stop drops their far samples)."""
    torch.manual_seed(0)
    cfg = FieldConfig(grid=GRID, density_hidden=16, color_hidden=16, color_layers=1, sh_degree=2, geo_features=7,
                      density_bias=2.0)
    return SceneModel(AABB, cfg, cfg, RenderConfig(step_size=0.05, prune_transmittance=1e-2), use_static=use_static)


def rays(n=96):
    g = torch.Generator().manual_seed(1)
    origins = torch.tensor([0.0, 0.0, -3.0]) + 0.3 * torch.randn(n, 3, generator=g)
    dirs = nn.functional.normalize(torch.tensor([0.0, 0.0, 1.0]) + 0.2 * torch.randn(n, 3, generator=g), dim=-1)
    return origins, dirs, torch.rand(n, generator=g)


def reference_render(model: SceneModel, origins, dirs, times, bg):
    """The kept samples found by a separate gradient-free pass, then rendered by a second read (the definition)."""
    o, d = model.space.rays(origins, dirs)
    ray_ids, t0, t1 = model.occupancy.sample(o, d, model.render_cfg.step_size, False)
    mid = 0.5 * (t0 + t1)
    x = o[ray_ids] + d[ray_ids] * mid[:, None]
    with torch.no_grad():
        keep = model.visible_samples(model.union_density(x, times[ray_ids]), t0, t1, ray_ids, o.shape[0])
    ray_ids, t0, t1, mid, x = ray_ids[keep], t0[keep], t1[keep], mid[keep], x[keep]
    sigma_s, rgb_s, sigma_d, rgb_d = model.query(x, times[ray_ids], d[ray_ids])
    w_s, w_d, _ = composite_blended(sigma_s, sigma_d, t0, t1, ray_ids, o.shape[0])
    return composite_outputs(w_s, w_d, rgb_s, rgb_d, mid, ray_ids, o.shape[0], bg), keep.numel()


def grads_of(model, out):
    model.zero_grad()
    (out["rgb"].square().sum() + 0.1 * out["depth"].sum()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_a_pruned_training_render_is_the_render_of_the_kept_samples_in_values_and_gradients():
    for use_static in (True, False):
        model = opaque_model(use_static)
        origins, dirs, times = rays()
        bg = torch.ones(3)
        out = model.render_rays(origins, dirs, times, bg)
        ref, kept = reference_render(model, origins, dirs, times, bg)
        o, d = model.space.rays(origins, dirs)
        marched = model.occupancy.sample(o, d, model.render_cfg.step_size, False)[0].numel()
        assert int(out["n_samples"]) == kept < 0.7 * marched  # the early stop drops a good part of the samples
        for k in ("rgb", "depth", "opacity"):
            torch.testing.assert_close(out[k], ref[k], rtol=1e-5, atol=1e-6)
        g_new, g_ref = grads_of(model, out), grads_of(model, ref)
        assert g_new.keys() == g_ref.keys() and len(g_new) > 0
        for n in g_ref:
            torch.testing.assert_close(g_new[n], g_ref[n], rtol=1e-4, atol=1e-6 * float(g_ref[n].abs().max()), msg=n)


def test_without_a_gradient_nothing_is_pruned():
    model = opaque_model()
    origins, dirs, times = rays()
    with torch.no_grad():
        out = model.render_rays(origins, dirs, times, torch.ones(3))
    o, d = model.space.rays(origins, dirs)
    assert int(out["n_samples"]) == model.occupancy.sample(o, d, model.render_cfg.step_size, False)[0].numel()


class CountingMotion(nn.Module):
    """F_K stand-in: a learnable velocity and acceleration everywhere, counting its reads."""

    def __init__(self):
        super().__init__()
        self.q = nn.Parameter(torch.tensor([[0.3, -0.1, 0.2], [0.0, 0.0, -0.5]]))
        self.reads = []

    def forward(self, x, t):
        self.reads.append(x.shape[0])
        return self.q[None] * (1.0 + x[:, :1, None])  # varies with x, so a wrong row shows


def test_the_kept_samples_share_the_kinematics_read_at_every_marched_sample():
    model = opaque_model(use_static=False)
    model.kinematic = CountingMotion()
    model.set_keyframe_advection(0.25)
    origins, dirs, times = rays()
    u = model.keyframe_draws(origins.shape[0])
    with model.shared_kinematics():
        out = model.render_rays(origins, dirs, times, torch.ones(3), keyframe_u=u)
        s = out["samples"]
        q = model.kinematic_q(s.positions, s.times, reuse_only=True)
        assert model.kinematic.reads == [model.kinematic.reads[0]] and model.kinematic.reads[0] > s.positions.shape[0]
        assert q is not None and q.requires_grad
        torch.testing.assert_close(q, model.kinematic(s.positions, s.times))
