"""The kinematic field and the kinematic objective on a tiny model."""
import dataclasses
import math

import pytest
import torch

from kinfield.fields import FieldConfig, KinematicConfig, KinematicField, taylor_displacement
from kinfield.losses.kinematic import KinConfig, KinematicObjective
from kinfield.nn import HashGridConfig, MLP
from kinfield.render import OccupancyConfig, RenderConfig, SceneModel

AABB = torch.tensor([-1.0, -1, -1, 1, 1, 1])
SMALL = HashGridConfig(n_levels=3, log2_hashmap_size=12, base_resolution=4, per_level_scale=1.5)


def make_model(time_scale=1.0, seed=0):
    torch.manual_seed(seed)
    fcfg = FieldConfig(grid=SMALL, geo_features=7, density_hidden=16, color_hidden=16, color_layers=1, sh_degree=2,
                       density_bias=1.0, time_scale=time_scale)
    model = SceneModel(AABB, fcfg, fcfg, RenderConfig(step_size=0.1, prune_transmittance=0.0,
                                                      occupancy=OccupancyConfig(resolution=8)))
    for p in model.parameters():  # visible, textured fields
        if p.dim() == 1 and p.numel() > 100:
            p.data.uniform_(-1, 1)
    model.kinematic = KinematicField(AABB, 0.05, KinematicConfig(grid=SMALL, hidden=16, n_hidden=1))
    model.normal_net = MLP(7, 3, 8, 1)
    return model


def step_context(model, n_rays=32, step=1000):
    g = torch.Generator().manual_seed(1)
    origins = torch.tensor([0.0, 0.0, 3.0]).expand(n_rays, 3).contiguous()
    dirs = torch.cat([torch.rand(n_rays, 2, generator=g) * 0.4 - 0.2, -torch.ones(n_rays, 1)], dim=1)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    times = torch.rand(n_rays, generator=g)
    bg = torch.ones(3)
    render = model.render_rays(origins, dirs, times, bg, stratified=False)
    batch = {"origins": origins, "dirs": dirs, "times": times}
    return {"batch": batch, "target": render["rgb"].detach(), "render": render, "render_background": bg,
            "model": model, "step": step}


def test_kinematic_field_starts_still_and_taylor_displacement_is_the_polynomial():
    kin = KinematicField(AABB, 0.1, KinematicConfig(grid=SMALL))
    x, t = torch.rand(5, 3) * 2 - 1, torch.rand(5)
    assert kin(x, t).abs().max() == 0  # zero-initialised output layer
    q = torch.randn(5, 3, 3)
    tau = torch.tensor([0.1, -0.2, 0.0, 0.3, 1.0])
    want = q[:, 0] * tau[:, None] + q[:, 1] * tau[:, None] ** 2 / 2 + q[:, 2] * tau[:, None] ** 3 / 6
    torch.testing.assert_close(taylor_displacement(q, tau), want)
    # several offsets per point from one read; a scalar offset for every point; no points at all
    two = taylor_displacement(q, torch.stack([tau, -tau], dim=1))
    assert two.shape == (5, 2, 3)
    torch.testing.assert_close(two[:, 0], want)
    torch.testing.assert_close(two[:, 1], taylor_displacement(q, -tau))
    torch.testing.assert_close(taylor_displacement(q, torch.tensor(0.3)), taylor_displacement(q, torch.full((5,), 0.3)))
    assert taylor_displacement(q[:0], tau[:0]).shape == (0, 3)
    assert taylor_displacement(q[:0], torch.zeros(0, 2)).shape == (0, 2, 3)
    assert taylor_displacement(q[:, :1], tau).shape == (5, 3)  # velocity only


def test_taylor_mask_switches_orders_off():
    kin = KinematicField(AABB, 0.1, KinematicConfig(grid=SMALL))
    torch.nn.init.normal_(kin.mlp.net[-1].weight)
    x, t = torch.rand(4, 3), torch.rand(4)
    kin.set_active_orders(1)
    q = kin(x, t)
    assert q[:, 1:].abs().max() == 0 and q[:, 0].abs().max() > 0
    kin.set_active_orders(3)
    assert kin(x, t)[:, 2].abs().max() > 0
    # order scaling: an O(1) raw output moves a point by motion_scale * extent in one frame
    assert math.isclose(float(kin.order_scales[0]) * 0.1, 0.02 * 2.0, rel_tol=1e-6)


def test_hops_stay_inside_the_time_range_and_ramp():
    obj = KinematicObjective(KinConfig(hop_max_start=2.0, hop_max_end=3.0, hop_ramp_steps=100), make_model(), 0.05)
    times = torch.cat([torch.zeros(500), torch.ones(500), torch.rand(1000)])
    for step in (0, 50, 100):
        h = obj.draw_hops(times, step)
        tt = times + h * 0.05
        assert ((tt >= 0) & (tt <= 1)).all()
        assert set(h.abs().unique().tolist()) <= ({1.0} if step == 0 else {1.0, 2.0})
    assert obj.active_orders(0) == 1 and obj.active_orders(10**6) == 3


def test_long_hops_on_a_short_sequence_end_on_a_frame_inside_it():
    """Hops of up to 10 frames on 6 frames (dt = 0.2): never zero, never outside [0, 1], always whole frames."""
    obj = KinematicObjective(KinConfig(hop_max_start=11.0, hop_max_end=11.0), make_model(), 0.2)
    times = torch.linspace(0, 1, 6).repeat(400)
    h = obj.draw_hops(times, 0)
    tt = times + h * 0.2
    assert (h != 0).all() and ((tt >= -1e-6) & (tt <= 1 + 1e-6)).all()
    assert torch.allclose(tt * 5, torch.round(tt * 5), atol=1e-4)
    assert h.abs().max() == 5  # from t = 0 or 1 the whole sequence is reachable


def test_warp_without_motion_and_time_dependence_reproduces_the_reference():
    model = make_model(time_scale=0.0)  # dynamic field independent of time, zero motion
    ctx = step_context(model)
    obj = KinematicObjective(KinConfig(dyn_weight_threshold=0.0), model, 0.05)
    for kind in ("hop", "inter"):
        out = obj.warp(ctx, kind)
        torch.testing.assert_close(out["rgb"], ctx["render"]["rgb"], atol=1e-5, rtol=0)
    assert float(obj.photo_loss(ctx, "hop").detach()) < 1e-3


@pytest.mark.parametrize("volume_limit", [0, 1 << 22])
def test_warps_rendered_together_equal_warps_rendered_one_by_one(volume_limit, monkeypatch):
    """When active terms read both warps, the first request renders both in one field query and one compositing
    pass: the same colours, samples and gradients as one warp at a time (with the gather path only, to float
    rounding; with the default strategy choice, which depends on the number of points, within the volume path's
    rounding), and a warp no active term reads is not rendered."""
    from kinfield.ops import _torch as twins

    encode = twins.hash_grid_encode
    monkeypatch.setattr(twins, "hash_grid_encode", lambda *a: encode(*a[:7], volume_limit))
    results = []
    for active in ({"warp_photo", "warp_photo_inter"}, None):
        model = make_model()
        torch.nn.init.normal_(model.kinematic.mlp.net[-1].weight, std=0.3, generator=torch.Generator().manual_seed(4))
        ctx = step_context(model)
        if active is not None:
            ctx["active_terms"] = active
        obj = KinematicObjective(KinConfig(dyn_weight_threshold=0.0), model, 0.05)
        torch.manual_seed(5)
        hop = obj.warp(ctx, "hop")
        assert ("kin_warp_inter" in ctx) == (active is not None)
        inter = obj.warp(ctx, "inter")
        (hop["rgb"].square().sum() + inter["rgb"].sum() + hop["sigma"].sum()).backward()
        results.append((hop, inter, model.kinematic.encoding.params.grad, model.dynamic.encoding.params.grad))
    (h0, i0, gk0, gd0), (h1, i1, gk1, gd1) = results
    tol = 1e-6 if volume_limit == 0 else 1e-4
    for a, b in ((h0, h1), (i0, i1)):
        for name in ("rgb", "depth", "opacity", "sigma", "rgb_samples", "x", "t"):
            torch.testing.assert_close(a[name], b[name], rtol=tol, atol=tol)
    for a, b in ((gk0, gk1), (gd0, gd1)):
        assert b.abs().max() > 0 and (a - b).abs().max() <= tol * b.abs().max()
    model = make_model()
    ctx = {**step_context(model), "active_terms": {"warp_photo"}}
    obj = KinematicObjective(KinConfig(dyn_weight_threshold=0.0), model, 0.05)
    obj.warp(ctx, "hop")
    assert "kin_warp_inter" not in ctx
    names = {term.name for term in obj.terms()}  # every reader named is a term of the objective
    assert all(set(readers) <= names for readers in obj.WARP_READERS.values())


@pytest.mark.parametrize("rigidity_form", ["invariants", "strain"])
def test_kinematic_terms_are_finite_and_reach_the_kinematic_field(rigidity_form):
    model = make_model()
    torch.nn.init.normal_(model.kinematic.mlp.net[-1].weight, std=0.1)
    ctx = step_context(model)
    cfg = KinConfig(dyn_weight_threshold=0.0, physics_sigma_threshold=0.0, max_physics_points=64,
                    rigidity_form=rigidity_form)
    obj = KinematicObjective(cfg, model, 0.05)
    model.kinematic.set_active_orders(3)
    total = 0.0
    for term in obj.terms():
        value = term.fn(ctx)
        assert torch.isfinite(value), term.name
        total = total + value
    total.backward()
    g = model.kinematic.encoding.params.grad
    assert g is not None and g.abs().sum() > 0
    assert model.normal_net.net[0].weight.grad.abs().sum() > 0


def test_normal_feature_grad_scale_scales_only_the_feature_side_of_the_normal_loss():
    """``normal_feature_grad_scale``: the normal loss's gradient into the dynamic field is scaled by it (the
    geometry features come out of the density MLP), the regressor's is not."""
    grads = {}
    for scale in (1.0, 0.1):
        model = make_model()
        ctx = step_context(model)
        cfg = KinConfig(dyn_weight_threshold=0.0, physics_sigma_threshold=0.0, max_physics_points=64,
                        normal_feature_grad_scale=scale)
        torch.manual_seed(3)
        KinematicObjective(cfg, model, 0.05).physics(ctx)["normal"].backward()
        grads[scale] = (model.dynamic.encoding.params.grad.clone(), model.normal_net.net[0].weight.grad.clone())
    assert grads[1.0][0].abs().sum() > 0
    torch.testing.assert_close(grads[0.1][0], 0.1 * grads[1.0][0], rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(grads[0.1][1], grads[1.0][1])


def test_normal_loss_weighs_each_point_by_its_reference_samples_dynamic_render_weight():
    """METHOD 2.8: the per-point weight of the normal loss is the detached dynamic render weight of the reference
    sample the point was warped from (occluded samples, weight ~0, do not count), not the point's own opacity."""
    model = make_model()
    base = step_context(model)
    samples = base["render"]["samples"]
    cfg = KinConfig(dyn_weight_threshold=0.0, physics_sigma_threshold=0.0, max_physics_points=64)
    values = {}
    for factor in (1.0, 3.0):  # (both fields' weights scaled: the dynamic probability that picks samples is unchanged)
        scaled = dataclasses.replace(samples, w_d=samples.w_d * factor, w_s=samples.w_s * factor)
        ctx = {**base, "render": {**base["render"], "samples": scaled}}
        torch.manual_seed(3)
        values[factor] = KinematicObjective(cfg, model, 0.05).physics(ctx)["normal"].detach()
    assert values[1.0] > 0
    torch.testing.assert_close(values[3.0], 3.0 * values[1.0])


def test_volume_physics_points_lie_near_the_warped_ones_where_the_dynamic_field_is_dense():
    """``physics_volume_points``: extra points within the radius of a kept point, at its time, inside the box
    and above the density threshold; the physics residuals stay finite with them."""
    model = make_model()
    cfg = KinConfig(dyn_weight_threshold=0.0, physics_sigma_threshold=0.5, max_physics_points=64,
                    physics_volume_points=400, physics_volume_radius=0.2)
    obj = KinematicObjective(cfg, model, 0.05)
    torch.manual_seed(0)
    xf, t = torch.rand(16, 3) * 1.6 - 0.8, torch.rand(16)
    weight = torch.arange(16.0) + 1.0  # one distinct weight per source point
    x2, t2, w2 = obj._add_volume_points(xf, t, weight)
    assert torch.equal(x2[:16], xf) and torch.equal(t2[:16], t) and torch.equal(w2[:16], weight)
    new_x, new_t, new_w = x2[16:], t2[16:], w2[16:]
    assert 0 < new_x.shape[0] < 400  # some offsets land in dense places, not all
    with torch.no_grad():
        assert bool((model.dynamic.density(new_x, new_t) > 0.5).all()) and bool(model.dynamic.inside(new_x).bool().all())
    # each new point is within the radius (0.2 of the box's side 2) of its source point, at its time, with its weight
    src = new_w.long() - 1
    assert bool(((new_x - xf[src]).norm(dim=-1) <= 0.4 + 1e-5).all()) and torch.equal(new_t, t[src])
    ctx = step_context(model)
    model.kinematic.set_active_orders(3)
    for name, value in obj.physics(ctx).items():
        assert torch.isfinite(value), name


def test_unknown_rigidity_form_is_a_clear_error():
    with pytest.raises(ValueError, match="--kin_rigidity_form must be invariants or strain, got 'shear'"):
        KinematicObjective(KinConfig(rigidity_form="shear"), make_model(), 0.05)


def test_empty_dynamic_set_gives_zero_losses():
    model = make_model()
    ctx = step_context(model)
    obj = KinematicObjective(KinConfig(dyn_weight_threshold=10.0), model, 0.05)  # nothing selected
    for term in obj.terms():
        assert float(term.fn(ctx).detach()) == 0.0, term.name


def test_kinematic_head_learns_a_spatially_varying_velocity_with_the_training_optimiser():
    """Regression: with ReLU units and weight decay the head died (one constant velocity everywhere on the
    demo scene). Fit v(x) = (x, -y, 0) in frame units with the trainer's Adam settings: the field must vary."""
    torch.manual_seed(0)
    aabb = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    field = KinematicField(aabb, 0.05, KinematicConfig(order=1))
    assert isinstance(field.mlp.net[1], torch.nn.SiLU)
    opt = torch.optim.Adam(field.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-15)
    x = torch.rand(512, 3) * 1.6 - 0.8
    t = torch.rand(512)
    target = torch.stack([x[:, 0], -x[:, 1], torch.zeros(512)], -1) * field.order_scales[0]
    for _ in range(150):
        loss = ((field(x, t)[:, 0] - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    v = field(x, t)[:, 0].detach()
    rel = float((v - target).norm() / target.norm())
    assert rel < 0.3, rel
    assert float(v[:, 0].std()) > 0.3 * float(target[:, 0].std())


def test_saved_runs_without_the_activation_option_rebuild_relu_heads(tmp_path):
    import yaml

    from kinfield.config import Config, save_config, to_flat_dict
    from kinfield.train.checkpoint import save_checkpoint
    from kinfield.train.run import load_run
    from kinfield.train.trainer import build_model

    cfg = Config()
    old = dataclasses.replace(cfg, kinematic=dataclasses.replace(cfg.kinematic, activation="relu"))
    model = build_model(old, torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]), 0.1)
    flat = to_flat_dict(old)
    del flat["kinematic_activation"]  # a run saved before the option existed
    save_checkpoint(tmp_path, 1, {"model": model.state_dict(), "config": flat})
    save_config(cfg, tmp_path / "config.yaml")
    run = load_run(tmp_path, device="cpu")
    assert isinstance(run.model.kinematic.mlp.net[1], torch.nn.ReLU)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["kinematic_activation"] == "silu"


def test_kinematic_head_is_optimised_without_weight_decay():
    from types import SimpleNamespace

    from kinfield.config import Config
    from kinfield.train.trainer import Trainer, build_model

    cfg = Config()
    model = build_model(cfg, torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]), 0.1)
    opt = Trainer._make_optimizer(SimpleNamespace(model=model, cfg=cfg))
    kin_head = {id(p) for n, p in model.named_parameters() if n.startswith("kinematic.mlp")}
    groups = [g for g in opt.param_groups if kin_head & {id(p) for p in g["params"]}]
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0
    assert kin_head == {id(p) for p in groups[0]["params"]}
    assert cfg.train.weight_decay_net > 0 and any(g["weight_decay"] > 0 for g in opt.param_groups)


def test_warped_renders_train_the_dynamic_field_only_from_warp_field_start():
    model = make_model()
    torch.nn.init.normal_(model.kinematic.mlp.net[-1].weight, std=0.1)
    for start, step, trains_field in ((500, 100, False), (500, 500, True), (-1, 10**6, False)):
        obj = KinematicObjective(KinConfig(dyn_weight_threshold=0.0, warp_field_start=start), model, 0.05)
        model.zero_grad(set_to_none=True)
        ctx = step_context(model, step=step)
        obj.photo_loss(ctx, "hop").backward()
        assert model.kinematic.encoding.params.grad.abs().sum() > 0
        g = model.dynamic.encoding.params.grad
        assert (g is not None and g.abs().sum() > 0) == trains_field, step


def test_static_field_learning_rates_follow_lr_static_factor():
    from types import SimpleNamespace

    from kinfield.config import Config
    from kinfield.train.trainer import Trainer, build_model

    cfg = Config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr_static_factor=0.1))
    model = build_model(cfg, torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]), 0.1)
    opt = Trainer._make_optimizer(SimpleNamespace(model=model, cfg=cfg))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        base = cfg.train.lr_grid if name.endswith("encoding.params") else cfg.train.lr_net
        want = base * (0.1 if name.startswith("static.") else 1.0)
        assert lr_of[id(p)] == pytest.approx(want), name


def test_linear_skip_gives_the_grid_a_full_rank_gradient_from_the_start():
    """With the MLP's zero last layer alone, the grid gets no gradient at first; the random linear
    read-out reaches it in every direction of the velocity (and the field still starts nearly still)."""
    x, t = torch.tensor([[0.1, -0.2, 0.3]]), torch.tensor([0.4])
    grid4 = dataclasses.replace(SMALL, n_features_per_level=4)
    for skip, rank in ((False, 0), (True, 3)):
        torch.manual_seed(0)
        kin = KinematicField(AABB, 0.05, KinematicConfig(grid=grid4, hidden=16, n_hidden=1, linear_skip=skip))
        v = kin(x, t)[0, 0]
        assert float(v.detach().abs().max()) < 1e-3 * float(kin.order_scales[0])
        jac = torch.stack([torch.autograd.grad(v[i], kin.encoding.params, retain_graph=True)[0] for i in range(3)])
        assert int(torch.linalg.matrix_rank(jac)) == rank
    with pytest.raises(ValueError, match="linear_skip needs at least 9 grid features"):
        KinematicField(AABB, 0.05, KinematicConfig(grid=dataclasses.replace(SMALL, n_levels=2), linear_skip=True))


def test_motion_gate_scales_every_order_and_starts_at_its_initial_value():
    """With ``motion_gate`` the kinematics are the head's orders times sigmoid(sharpness * g), g one more head
    output: ``motion_gate_init`` at the start, 0 and 1 when g saturates, the same factor for v, a and j."""
    torch.manual_seed(0)
    cfg = KinematicConfig(grid=dataclasses.replace(SMALL, n_features_per_level=4), hidden=16, n_hidden=1,
                          linear_skip=True, motion_gate=True, motion_gate_init=0.8)
    kin = KinematicField(AABB, 0.05, cfg)
    x, t = torch.rand(64, 3) * 2 - 1, torch.rand(64)
    assert torch.allclose(kin.gate(x, t), torch.full((64,), 0.8), atol=1e-3)
    last = kin.mlp.net[-1]
    with torch.no_grad():
        last.weight.normal_()
    raw = kin._raw(x, t)
    ungated = raw[:, :9].reshape(-1, 3, 3) * kin.order_scales[None, :, None]
    torch.testing.assert_close(kin.gate(x, t), torch.sigmoid(cfg.motion_gate_sharpness * raw[:, -1]))
    torch.testing.assert_close(kin(x, t), ungated * kin.gate(x, t)[:, None, None])
    for bias, want in ((-100.0, 0.0), (100.0, 1.0)):
        with torch.no_grad():
            last.bias[-1] = bias
        torch.testing.assert_close(kin(x, t), ungated * want)
    with torch.no_grad():
        last.bias[-1] = -1.0
    kin.set_gate_active(False)  # before --kin_gate_start: a factor of 1, also after a checkpoint round trip
    torch.testing.assert_close(kin(x, t), ungated)
    again = KinematicField(AABB, 0.05, cfg)
    again.load_state_dict(kin.state_dict())
    assert again.gate(x, t).eq(1).all()
    kin.set_gate_active(True)
    assert kin.gate(x, t).lt(0.01).all()
    assert KinematicField(AABB, 0.05, dataclasses.replace(cfg, motion_gate=False)).gate(x, t).eq(1).all()
    for bad in (dict(motion_gate_init=1.0), dict(motion_gate_sharpness=0.0)):
        with pytest.raises(ValueError, match="motion_gate_init must be in"):
            KinematicField(AABB, 0.05, dataclasses.replace(cfg, **bad))
