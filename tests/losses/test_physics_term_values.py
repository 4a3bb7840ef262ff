"""Values of the kinematic regularisers against closed-form answers (METHOD 2.4-2.7, 2.10).

The objective is assembled as in training (a SceneModel renders rays, the KinematicObjective warps the
dynamic samples and evaluates its terms), but both fields are analytic:

- the kinematic field is rigid motion about a centre ``c(t) = c0 + v0 t + g t^2/2 + j0 t^3/6`` with angular
  velocity ``omega``, optionally perturbed by a uniform velocity bias ``dv``, a symmetric strain rate ``S`` or
  factors on the acceleration / jerk outputs (:class:`AnalyticKinematics`). Unperturbed,
  ``v = c' + w x r``, ``a = c'' + w x (w x r)``, ``j = j0 + w x (w x (w x r))`` (``r = x - c``) is exactly
  kinematically consistent (``a = Dv/Dt``, ``j = Da/Dt``);
- the dynamic density is a linear ramp ``sigma0 + (R(t) k) . (x - c(t))`` carried rigidly along the same
  motion (``R(t)``: rotation by ``omega t``), so ``D sigma / Dt = 0`` (:class:`CarriedRamp`).

These fields are (piecewise) polynomial in x and t, so the objective's central differences are exact to
rounding and each term has a closed form that, for the cases used here, is the same at every physics point.
Units (KinConfig): residuals are per frame, an order-k quantity times ``dt^k``.
"""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kinfield.fields import FieldConfig
from kinfield.fields.analytic import rotate
from kinfield.losses.kinematic import REFERENCE_TRANSPORT_DENSITY, KinConfig, KinematicObjective
from kinfield.losses.priors import PriorConfig, PriorObjective
from kinfield.nn import HashGridConfig
from kinfield.render import OccupancyConfig, RenderConfig, SceneModel
from kinfield.render.renderer import Samples
from kinfield.render.space import SceneSpace

AABB = torch.tensor([-1.0, -1, -1, 1, 1, 1])
SMALL = HashGridConfig(n_levels=2, log2_hashmap_size=10, base_resolution=4, per_level_scale=1.5)
DT = 0.1  # frame spacing
CELL = 0.1  # finest cell of both fields: finite-difference step 0.3 * CELL (* jitter)

OMEGA = (0.6, -1.1, 0.8)
C0, V0, G, J0 = (0.05, -0.05, 0.0), (0.3, -0.2, 0.1), (0.2, 0.1, -0.5), (0.4, -0.6, 0.9)
RAMP_K = (0.5, -0.7, 0.4)


def _t(v):
    return torch.tensor(v, dtype=torch.float32)


def _cross(a, b):
    return torch.cross(a.expand_as(b), b, dim=-1)


_rotate = rotate  # Rodrigues: ``v [N, 3]`` rotated about ``omega [3]`` by ``|omega| t`` (``t [N]``)


class _Cell:
    def finest_cell(self, extent=None):
        return CELL


class AnalyticKinematics(nn.Module):
    """Rigid motion about ``c(t)`` (see the module docstring) in F_K's interface, with perturbations:
    ``v += dv + S r``, ``a *= a_factor``, ``j *= j_factor``. Every input is a parameter (for gradient checks)."""

    order = 3

    def __init__(self, c0=C0, v0=V0, g=G, j0=J0, omega=OMEGA, dv=(0.0, 0.0, 0.0), strain=None,
                 a_factor=1.0, j_factor=1.0):
        super().__init__()
        for name, val in (("c0", c0), ("v0", v0), ("g", g), ("j0", j0), ("omega", omega), ("dv", dv)):
            setattr(self, name, nn.Parameter(_t(val)))
        self.strain = nn.Parameter(torch.zeros(3, 3) if strain is None else _t(strain))
        self.a_factor, self.j_factor = a_factor, j_factor
        self.register_buffer("taylor_mask", torch.ones(3))
        self.extent = 2.0

    def set_active_orders(self, k):
        self.taylor_mask.copy_((torch.arange(3) < k).float())

    def finest_cell(self):
        return CELL

    def forward(self, x, t):
        tt = t[:, None]
        c = self.c0 + self.v0 * tt + self.g * tt**2 / 2 + self.j0 * tt**3 / 6
        dc = self.v0 + self.g * tt + self.j0 * tt**2 / 2
        ddc = self.g + self.j0 * tt
        r = x - c
        w1 = _cross(self.omega, r)
        w2 = _cross(self.omega, w1)
        w3 = _cross(self.omega, w2)
        v = dc + self.dv + w1 + r @ self.strain.T
        a = self.a_factor * (ddc + w2)
        j = self.j_factor * (self.j0.expand_as(x) + w3)
        return torch.stack([v, a, j], dim=1) * self.taylor_mask[None, :, None]


class CarriedRamp(nn.Module):
    """Dynamic field: density ``sigma0 + (R(t) k) . (x - c(t))`` (inside the box), carried by the rigid motion of
    :class:`AnalyticKinematics` with the same (plain, non-shared) constants; grey colour. ``k`` is a parameter."""

    def __init__(self, c0=C0, v0=V0, g=G, j0=J0, omega=OMEGA, k=RAMP_K, sigma0=4.0):
        super().__init__()
        for name, val in (("c0", c0), ("v0", v0), ("g", g), ("j0", j0), ("omega", omega)):
            self.register_buffer(name, _t(val))
        self.k = nn.Parameter(_t(k))
        self.sigma0 = sigma0
        self.encoding = _Cell()
        self.keyframe_points = None

    def density(self, x, t, keyframe_u=None, motion_grad=True):
        tt = t[:, None]
        c = self.c0 + self.v0 * tt + self.g * tt**2 / 2 + self.j0 * tt**3 / 6
        k = _rotate(self.k.expand_as(x), self.omega, t)
        return (self.sigma0 + (k * (x - c)).sum(-1)) * self.inside(x)

    def forward(self, x, t, d, keyframe_u=None):
        return self.density(x, t), torch.full_like(x, 0.5)

    def inside(self, x):
        return ((x >= AABB[:3]) & (x <= AABB[3:])).all(-1).to(x.dtype)


def make_model(kin, **ramp):
    torch.manual_seed(0)
    fcfg = FieldConfig(grid=SMALL, geo_features=7, density_hidden=8, color_hidden=8, color_layers=1, sh_degree=1)
    model = SceneModel(AABB, fcfg, fcfg, RenderConfig(step_size=0.1, prune_transmittance=0.0,
                                                      occupancy=OccupancyConfig(resolution=8)), use_static=False)
    model.dynamic = CarriedRamp(**ramp)
    model.kinematic = kin
    return model


def step_context(model, n_rays=48, step=10**6):
    g = torch.Generator().manual_seed(1)
    origins = torch.tensor([0.0, 0.0, 3.0]).expand(n_rays, 3).contiguous()
    dirs = torch.cat([torch.rand(n_rays, 2, generator=g) * 0.4 - 0.2, -torch.ones(n_rays, 1)], dim=1)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    times = 0.3 + 0.4 * torch.rand(n_rays, generator=g)  # hops of <= 1 frame stay well inside [0, 1]
    bg = torch.ones(3)
    render = model.render_rays(origins, dirs, times, bg, stratified=False)
    batch = {"origins": origins, "dirs": dirs, "times": times}
    return {"batch": batch, "target": render["rgb"].detach(), "render": render, "render_background": bg,
            "model": model, "step": step}


def physics(model, shared=False, **cfg):
    """The physics residuals of one step (``KinematicObjective.physics``), with the objective's points."""
    c = KinConfig(dyn_weight_threshold=1e-4, physics_sigma_threshold=0.0, hop_max_start=2.0, hop_max_end=2.0,
                  **cfg)
    obj = KinematicObjective(c, model, DT)
    ctx = step_context(model)
    torch.manual_seed(2)
    if shared:
        with model.shared_kinematics():
            res = obj.physics(ctx)
    else:
        res = obj.physics(ctx)
    w = ctx["kin_warp_inter"]
    assert int((w["sigma"] > 0).sum()) > 100  # many physics points
    return res


def _f(x):
    return float(x.detach())


def _kin_grads(kin):
    return {n: p.grad for n, p in kin.named_parameters()}


def _zero_or_none(g):
    return g is None or float(g.abs().max()) == 0.0


# --------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("shared", [False, True])
def test_consistent_rigid_motion_with_acceleration_has_zero_integrity_rigidity_and_transport(shared):
    """Rigid rotation about a centre with cubic trajectory, all orders active, v/a/j exactly consistent and the
    density carried along v: integrity = 0, rigidity = 0 (div v = 0, E = 0), transport = 0 (to rounding), while
    higher_order = mean(|a|^2 dt^4 + |j|^2 dt^6) > 0. (Rigidity from grad a instead of grad v would give
    div = -2|w|^2 != 0.)"""
    model = make_model(AnalyticKinematics())
    res = physics(model, shared=shared)
    w2 = float(_t(OMEGA).square().sum())
    assert _f(res["integrity"]) < 1e-12
    assert _f(res["transport"]) < 1e-9
    # the wrong gradient would give (div dt)^2 = (2 |w|^2 dt)^2 ~ 0.1
    assert _f(res["rigidity"]) < 1e-8 < 1e-3 * (2 * w2 * DT) ** 2
    assert _f(res["higher_order"]) > 1e-5


@pytest.mark.parametrize("factors,want", [
    ((1.3, 1.0), "a"),  # a = 1.3 Dv/Dt: r_1 = 0.3 a_true, r_2 = j - 1.3 j_true = -0.3 j0
    ((1.0, 1.5), "j"),  # j = 1.5 Da/Dt: r_2 = 0.5 j0
])
def test_integrity_of_a_perturbed_order_is_the_closed_form_in_per_frame_units(factors, want):
    """Translation with uniform, time-varying acceleration (w = 0): v = c'(t), a = f_a c''(t), j = f_j j0.
    Residuals r_1 = (f_a - 1) c'' per unit time^2 and r_2 = (f_j - f_a) j0 per unit time^3, in per-frame units
    times dt^2 and dt^3: integrity = mean_points ((f_a - 1)^2 |c''(t)|^2 dt^4 + (f_j - f_a)^2 |j0|^2 dt^6) / 3.
    With f_a = 1 the term is constant over the points: (f_j - 1)^2 |j0|^2 dt^6 / 3."""
    fa, fj = factors
    kin = AnalyticKinematics(omega=(0.0, 0.0, 0.0), a_factor=fa, j_factor=fj)
    model = make_model(kin, omega=(0.0, 0.0, 0.0))
    obj = KinematicObjective(KinConfig(dyn_weight_threshold=1e-4, physics_sigma_threshold=0.0, fd_jitter=False),
                             model, DT)
    ctx = step_context(model)
    torch.manual_seed(2)
    res = obj.physics(ctx)
    # the physics points' times: warped points with density (the ramp is positive in the whole box) whose
    # probes, +-0.3 CELL along each axis (no jitter), stay inside the box
    w = ctx["kin_warp_inter"]
    x = w["x"].detach()
    keep = (w["sigma"].detach() > 0) & (x.abs() <= 1.0 - 0.3 * CELL).all(-1)
    assert 100 < int(keep.sum()) <= KinConfig().max_physics_points
    t = w["t"].detach()[keep].double()
    j0 = torch.tensor(J0, dtype=torch.float64)
    ddc = torch.tensor(G, dtype=torch.float64) + j0 * t[:, None]
    want_val = (((fa - 1) ** 2 * (ddc**2).sum(-1) * DT**4 + (fj - fa) ** 2 * (j0**2).sum() * DT**6) / 3).mean()
    assert math.isclose(_f(res["integrity"]), float(want_val), rel_tol=1e-3)
    # higher_order: mean(|a|^2 dt^4 + |j|^2 dt^6)
    want_hi = (fa**2 * (ddc**2).sum(-1) * DT**4 + fj**2 * (j0**2).sum() * DT**6).mean()
    assert math.isclose(_f(res["higher_order"]), float(want_hi), rel_tol=1e-4)


def test_integrity_and_higher_order_of_uniform_acceleration_are_constants():
    """v = v0 + g t uniform in space, a = 1.2 g, no jerk (j0 = 0, w = 0): r_1 = 0.2 g, r_2 = 0 at every point, so
    integrity = 0.04 |g|^2 dt^4 / 3 and higher_order = 1.44 |g|^2 dt^4 exactly (per-frame units: a dt^2)."""
    kin = AnalyticKinematics(omega=(0.0, 0.0, 0.0), j0=(0.0, 0.0, 0.0), a_factor=1.2)
    res = physics(make_model(kin, omega=(0.0, 0.0, 0.0), j0=(0.0, 0.0, 0.0)))
    g2 = sum(v * v for v in G)
    assert math.isclose(_f(res["integrity"]), 0.04 * g2 * DT**4 / 3, rel_tol=1e-3)
    assert math.isclose(_f(res["higher_order"]), 1.44 * g2 * DT**4, rel_tol=1e-4)


@pytest.mark.parametrize("active", [1, 2])
def test_orders_locked_by_the_curriculum_have_no_integrity_residual_and_no_gradient(active):
    """Taylor mask [1,0,0]: the velocity varies in time (Dv/Dt = c'' != 0) but acceleration is locked, so the
    order-1 residual is masked: integrity = 0 exactly (also higher_order) and no gradient reaches F_K; unmasked it
    would be mean |c''(t)|^2 dt^4 / 3. Mask [1,1,0] with a = Dv/Dt:
    only the locked jerk residual (-Da/Dt = -j0 - ...) would be non-zero, so integrity = 0 (to rounding); unmasked it
    would be |j0|^2 dt^6 / 3 (w = 0)."""
    kin = AnalyticKinematics(omega=(0.0, 0.0, 0.0))
    kin.set_active_orders(active)
    res = physics(make_model(kin, omega=(0.0, 0.0, 0.0)))
    j2 = sum(v * v for v in J0)
    if active == 1:
        assert _f(res["integrity"]) == 0.0
        assert _f(res["higher_order"]) == 0.0
    else:
        assert _f(res["integrity"]) < 1e-3 * j2 * DT**6 / 3
        return
    res["integrity"].backward()
    for name, g in _kin_grads(kin).items():
        assert _zero_or_none(g), name


def test_transport_is_the_closed_form_and_trains_the_density_but_not_the_velocity():
    """Density ramp carried by c'(t), kinematic velocity c'(t) + dv (w = 0): d sigma/dt + v . grad sigma = k . dv
    at every point, so transport = (dt k.dv / 400)^2 (the reference's density units, REFERENCE_TRANSPORT_DENSITY).
    Its gradient reaches the density (d/dk = 2 (dt k.dv) dt * s dv / 400^2 with the derivative gradient scale s on
    d sigma/dt and grad sigma) and never F_K's parameters (METHOD 2.6: v detached)."""
    dv = (0.3, 0.2, -0.4)
    kin = AnalyticKinematics(omega=(0.0, 0.0, 0.0), dv=dv)
    model = make_model(kin, omega=(0.0, 0.0, 0.0))
    res = physics(model)
    k, d = torch.tensor(RAMP_K, dtype=torch.float64), torch.tensor(dv, dtype=torch.float64)
    kd = float((k * d).sum())
    unit = REFERENCE_TRANSPORT_DENSITY
    assert unit == 1.0 / 400.0  # sigma = 25 sigma_d, read as sigma_d / 16 (METHOD 1.4, 2.6)
    assert math.isclose(_f(res["transport"]), (DT * kd * unit) ** 2, rel_tol=1e-3)
    res["transport"].backward()
    for name, g in _kin_grads(kin).items():
        assert _zero_or_none(g), name
    scale = KinConfig().derivative_grad_scale
    torch.testing.assert_close(model.dynamic.k.grad.double(), 2 * DT * kd * DT * scale * d * unit**2, rtol=1e-3,
                               atol=1e-15)


@pytest.mark.parametrize("form", ["invariants", "strain"])
def test_rigidity_of_rotation_plus_strain_is_the_closed_form_of_the_velocity_gradient(form):
    """v = c' + w x r + S r with S symmetric: grad v = [w]x + S, strain rate E = S. invariants: (tr S dt)^2 +
    (i2 dt^2)^2 with i2 = ((tr S)^2 - tr S^2)/2; strain: |S|_F^2 dt^2 (constant over the points)."""
    s = torch.tensor([[0.5, 0.1, 0.0], [0.1, -0.2, 0.2], [0.0, 0.2, 0.3]], dtype=torch.float64)
    kin = AnalyticKinematics(strain=s.tolist())
    res = physics(make_model(kin), rigidity_form=form)
    tr = float(s.trace())
    if form == "invariants":
        i2 = 0.5 * (tr**2 - float((s @ s).trace()))
        want = (tr * DT) ** 2 + (i2 * DT * DT) ** 2
    else:
        want = float((s * s).sum()) * DT * DT
    assert math.isclose(_f(res["rigidity"]), want, rel_tol=1e-3)


@pytest.mark.parametrize("shared", [False, True])
def test_cycle_loss_vanishes_for_exact_taylor_motion_and_is_g_dt2_with_velocity_only(shared):
    """Hops of one frame (tau = +-dt). Translation with c(t) cubic and all orders: the Taylor displacement is exact,
    d_b(x + d_f, t + tau; -tau) = -d_f, cycle = 0. Velocity only (mask [1,0,0], v = v0 + g t, j0 = 0):
    d_f + d_b = tau (v(t) - v(t + tau)) = -g tau^2, so cycle = |g| dt^2 at every sample."""
    cfg = KinConfig(dyn_weight_threshold=1e-4, hop_max_start=2.0, hop_max_end=2.0)
    for active, j0, want in ((3, J0, 0.0), (1, (0.0, 0.0, 0.0), math.sqrt(sum(v * v for v in G)) * DT**2)):
        kin = AnalyticKinematics(omega=(0.0, 0.0, 0.0), j0=j0)
        kin.set_active_orders(active)
        model = make_model(kin, omega=(0.0, 0.0, 0.0), j0=j0)
        obj = KinematicObjective(cfg, model, DT)
        ctx = step_context(model)
        torch.manual_seed(3)
        if shared:
            with model.shared_kinematics():
                value = _f(obj.cycle_loss(ctx))
        else:
            value = _f(obj.cycle_loss(ctx))
        assert obj._selection(ctx)["idx"].numel() > 100
        assert torch.equal(ctx["kin_warp_hop"]["tau"].abs(), torch.full_like(ctx["kin_warp_hop"]["tau"], DT))
        assert abs(value - want) < 1e-6 + 1e-4 * want, (active, value, want)


# --------------------------------------------------------------------------------------------------- flow prior
FX, FY, CX, CY = 40.0, 44.0, 16.0, 12.0
CAM_X = (0.0, 0.2, 0.4)  # camera centres of frames 0, 1, 2 (OpenGL, identity rotation, looking down -z)


def _hand_project(p, cam_x):
    """Pixel (x right, y down, centres at +0.5) of world points ``p [N, 3]`` in a camera at (cam_x, 0, 0)."""
    x, y, z = p[:, 0] - cam_x, p[:, 1], -p[:, 2]
    return torch.stack([FX * x / z + CX, -FY * y / z + CY], dim=-1)


def test_flow_prior_moves_dynamic_samples_by_the_kinematic_field_and_projects_them():
    """One fully opaque dynamic sample per ray at world point p, constant velocity v, frame spacing dt: the point
    seen in frame f +- 1 is p +- v dt, so the expected flow is proj_{f+-1}(p +- v dt) - pixel (projection written
    out here), the flow loss against those flows is 0, and against the static-point flow it is the mean L1 of the
    pixel shift of the motion."""
    dt = 0.5
    v = torch.tensor([0.3, -0.2, 0.5])
    kin = AnalyticKinematics(c0=(0, 0, 0), v0=v.tolist(), g=(0, 0, 0), j0=(0, 0, 0), omega=(0, 0, 0))
    poses = torch.eye(4).repeat(3, 1, 1)
    poses[:, 0, 3] = torch.tensor(CAM_X)
    intr = torch.tensor([FX, FY, CX, CY]).expand(3, 4)
    frame = torch.tensor([1, 1, 1, 0, 2])
    rows, cols = torch.tensor([3, 7, 12, 20, 5]), torch.tensor([4, 9, 30, 2, 17])
    n = frame.shape[0]
    # the ray through each pixel centre, by hand, and the point 3 units along it
    cam = torch.tensor(CAM_X)[frame]
    d = torch.stack([(cols + 0.5 - CX) / FX, -(rows + 0.5 - CY) / FY, -torch.ones(n)], -1)
    d = d / d.norm(dim=-1, keepdim=True)
    o = torch.stack([cam, torch.zeros(n), torch.zeros(n)], -1)
    depth = 3.0
    p = o + depth * d
    ids, one, zero = torch.arange(n), torch.ones(n), torch.zeros(n)
    t0 = torch.full((n,), depth)
    s = Samples(ids, t0, t0 + 0.01, p, frame.float() * dt, d, zero, torch.zeros(n, 3), one, torch.zeros(n, 3),
                zero, one, n)  # static weight 0, dynamic weight 1
    own = torch.stack([cols + 0.5, rows + 0.5], -1).float()
    torch.testing.assert_close(_hand_project(p, cam), own, atol=1e-4, rtol=0)
    model = SimpleNamespace(space=SceneSpace(), kinematic=kin)
    split = SimpleNamespace(poses=poses, intrinsics=intr, num_frames=3, extras={"flow_fwd": None, "flow_bwd": None})
    obj = PriorObjective(PriorConfig(), model, split, frame_dt=dt)
    batch = {"origins": o, "dirs": d, "frame": frame, "rows": rows, "cols": cols}
    ctx = {"batch": batch, "render": {"samples": s, "rgb": torch.zeros(n, 3, requires_grad=True), "depth": t0}}
    true, static = {}, {}
    for kind, sign in (("fwd", 1), ("bwd", -1)):
        other = (frame + sign).clamp(0, 2)
        torch.testing.assert_close(obj.expected_points(ctx, float(sign), n), p + sign * v * dt, atol=1e-5, rtol=0)
        true[kind] = _hand_project(p + sign * v * dt, torch.tensor(CAM_X)[other]) - own
        static[kind] = _hand_project(p, torch.tensor(CAM_X)[other]) - own
    mask = {"fwd": (frame < 2).float(), "bwd": (frame > 0).float()}
    batch.update({"flow_fwd": true["fwd"], "flow_fwd_mask": mask["fwd"], "flow_bwd": true["bwd"],
                  "flow_bwd_mask": mask["bwd"]})
    assert float(obj.flow_loss(ctx).detach()) < 1e-4
    batch.update({"flow_fwd": static["fwd"], "flow_bwd": static["bwd"]})
    want = sum(float((mask[k][:, None] * (true[k] - static[k]).abs()).mean()) for k in ("fwd", "bwd"))
    assert want > 0.5  # the motion shifts the pixels
    assert math.isclose(float(obj.flow_loss(ctx).detach()), want, rel_tol=1e-4)


# --------------------------------------------------------------------------------------------------- the objective's glue
def test_the_integrity_clamp_is_converted_to_each_orders_units(monkeypatch):
    """--kin_integrity_clamp is in the reference's time units; t in [0, 1] makes its accelerations 4x and jerks 8x
    larger, so the bounds passed on are 64 * 4 and 64 * 8."""
    import kinfield.losses.kinematic as km

    seen = []

    def spy(*args):
        seen.append(args[-1])
        return km_integrity(*args)

    km_integrity = km.integrity_residuals
    monkeypatch.setattr(km, "integrity_residuals", spy)
    physics(make_model(AnalyticKinematics()), integrity_clamp=64.0)
    assert seen == [[256.0, 512.0]]
    seen.clear()
    physics(make_model(AnalyticKinematics()), integrity_clamp=0.0)  # 0: no clamp
    assert seen == [None]


def test_physics_points_are_only_taken_where_the_warped_density_passes_the_threshold():
    """The ramp's density is below 6 in the whole box: a threshold of 10 leaves no physics point (every residual 0);
    one of 0 takes them all."""
    model = make_model(AnalyticKinematics(a_factor=1.3, strain=[[0.5, 0, 0], [0, 0, 0], [0, 0, 0]]))
    for threshold, any_point in ((10.0, False), (0.0, True)):
        obj = KinematicObjective(KinConfig(dyn_weight_threshold=1e-4, physics_sigma_threshold=threshold), model, DT)
        torch.manual_seed(2)
        res = obj.physics(step_context(model))
        assert all((_f(res[k]) > 0) == any_point for k in ("integrity", "rigidity", "higher_order")), (threshold, res)


class Blob(CarriedRamp):
    """Dynamic density ``4 exp(-|x|^2)`` (``constant``: 4) inside the box, still."""

    def __init__(self, constant=False):
        super().__init__()
        self.constant = constant

    def density(self, x, t, keyframe_u=None, motion_grad=True):
        sigma = torch.full_like(x[:, 0], 4.0) if self.constant else 4.0 * torch.exp(-(x * x).sum(-1))
        return sigma * self.inside(x)


@pytest.mark.parametrize("constant", [False, True])
def test_the_normal_target_is_the_outward_density_gradient_direction_and_skips_flat_density(constant):
    """Density 4 exp(-|x|^2): -grad sigma / |grad sigma| = x / |x|, so a regressor predicting x / |x| has a normal
    loss near 0 (the prediction is read within one probe step of the point) and the inward -x / |x| one of about
    4 mean(w_d). Where the density is flat (grad sigma = 0) there is no target: the loss is 0 whatever is predicted."""
    model = make_model(AnalyticKinematics())
    model.dynamic = Blob(constant)
    model.normal_net = nn.Identity()  # (predict_normals is replaced below)
    losses = {}
    for sign in (1.0, -1.0):
        model.predict_normals = lambda x, t, scale, sign=sign: sign * torch.nn.functional.normalize(x, dim=-1)
        losses[sign] = _f(physics(model)["normal"])
    if constant:
        assert losses[1.0] == 0.0 and losses[-1.0] == 0.0
    else:
        assert losses[-1.0] > 1e-3 and losses[1.0] < 0.02 * losses[-1.0], losses
