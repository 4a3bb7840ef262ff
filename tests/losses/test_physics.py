"""Physics residuals against fields whose answers are known in closed form."""
import math

import torch

from kinfield.losses.physics import (
    central_differences,
    density_flow_residual,
    integrity_residuals,
    material_derivative,
    rigidity_terms,
    strain_rate_sq,
    transport_residual,
)

torch.manual_seed(0)
OMEGA = torch.tensor([0.3, -1.1, 0.7])
CENTRE = torch.tensor([0.1, 0.2, -0.3])


def _cross(a, b):
    return torch.cross(a.expand_as(b), b, dim=-1)


def rotation_kinematics(x, t):
    """Rigid rotation about CENTRE: v = w x r, a = w x (w x r), j = w x (w x (w x r)); [M, 9]."""
    r = x - CENTRE
    v = _cross(OMEGA, r)
    a = _cross(OMEGA, v)
    j = _cross(OMEGA, a)
    return torch.cat([v, a, j], dim=-1)


def points(n=64):
    return torch.rand(n, 3) * 2 - 1, torch.rand(n) * 0.8 + 0.1


def kin_derivs(fn, x, t, eps=1e-2):
    d = central_differences(fn, x, t, eps, eps)
    n = x.shape[0]
    return d["value"].view(n, 3, 3), d["dt"].view(n, 3, 3), d["grad"].view(n, 3, 3, 3)


def test_rigid_rotation_has_zero_divergence_and_strain_invariant():
    x, t = points()
    _, _, grad = kin_derivs(rotation_kinematics, x, t)
    div, i2 = rigidity_terms(grad[:, 0])
    assert div.abs().max() < 1e-5 and i2.abs().max() < 1e-5
    assert strain_rate_sq(grad[:, 0]).max() < 1e-8
    # ...and the velocity gradient is the cross-product matrix [w]_x
    wx = torch.tensor([[0, -OMEGA[2], OMEGA[1]], [OMEGA[2], 0, -OMEGA[0]], [-OMEGA[1], OMEGA[0], 0]])
    torch.testing.assert_close(grad[:, 0], wx.expand(x.shape[0], 3, 3), atol=1e-4, rtol=0)


def test_shear_and_expansion_are_not_rigid():
    def expand(x, t):
        return torch.cat([0.5 * x, torch.zeros(x.shape[0], 6)], dim=-1)

    x, t = points(8)
    _, _, grad = kin_derivs(expand, x, t)
    div, i2 = rigidity_terms(grad[:, 0])
    torch.testing.assert_close(div, torch.full((8,), 1.5), atol=1e-4, rtol=0)
    torch.testing.assert_close(i2, torch.full((8,), 0.75), atol=1e-4, rtol=0)  # 3 * 0.5^2
    torch.testing.assert_close(strain_rate_sq(grad[:, 0]), torch.full((8,), 0.75), atol=1e-4, rtol=0)
    # a simple shear v = (s y, 0, 0): E has two entries s/2, |E|^2 = s^2 / 2, while div = 0 and i2 = -s^2/4
    g = torch.zeros(1, 3, 3)
    g[0, 0, 1] = 0.2
    div, i2 = rigidity_terms(g)
    torch.testing.assert_close(strain_rate_sq(g), torch.tensor([0.02]))
    torch.testing.assert_close(div, torch.tensor([0.0]))
    torch.testing.assert_close(i2, torch.tensor([-0.01]))


def test_rotation_kinematics_satisfy_integrity():
    """Centripetal acceleration and its jerk are the material derivatives of a rigid rotation."""
    x, t = points()
    q, dq_dt, grad = kin_derivs(rotation_kinematics, x, t)
    res = integrity_residuals(q, dq_dt, grad)
    assert res.shape == (64, 2, 3)
    assert res.abs().max() < 1e-4


def test_uniform_acceleration_has_constant_a_and_zero_jerk():
    v0, a0 = torch.tensor([0.4, -0.2, 1.0]), torch.tensor([0.0, 0.0, -3.0])

    def projectile(x, t):
        n = x.shape[0]
        v = v0 + a0 * t[:, None]
        return torch.cat([v, a0.expand(n, 3), torch.zeros(n, 3)], dim=-1)

    x, t = points()
    q, dq_dt, grad = kin_derivs(projectile, x, t)
    assert integrity_residuals(q, dq_dt, grad).abs().max() < 1e-4
    # a wrong acceleration is caught, with the exact size of the error
    wrong = q.clone()
    wrong[:, 1] = 0.0
    torch.testing.assert_close(integrity_residuals(wrong, dq_dt, grad)[:, 0], -a0.expand(64, 3), atol=1e-4, rtol=0)


def test_integrity_scales_the_whole_advected_side_and_clamps_it():
    """METHOD 2.5 / 2.16: H~ = dL/dt + (grad L) v passes through the gradient scale as a whole, so the velocity
    advecting it gets the scaled gradient too, while the predicted side H keeps its full gradient; H~ is then
    clamped per order."""
    torch.manual_seed(0)
    base = (torch.randn(5, 3, 3), torch.randn(5, 3, 3), torch.randn(5, 3, 3, 3))
    grads = {}
    for scale in (1.0, 0.1):
        q, dq_dt, grad_q = (b.clone().requires_grad_(True) for b in base)
        res = integrity_residuals(q, dq_dt, grad_q, grad_scale=scale)
        torch.testing.assert_close(res, integrity_residuals(*base))  # the forward pass is unchanged
        (res**2).sum().backward()
        grads[scale] = (q.grad[:, 0], q.grad[:, 1:], dq_dt.grad, grad_q.grad)
    v1, h1, dt1, g1 = grads[1.0]
    v01, h01, dt01, g01 = grads[0.1]
    assert v1.abs().min() > 0
    torch.testing.assert_close(v01, 0.1 * v1)  # the advecting velocity: scaled
    torch.testing.assert_close(dt01, 0.1 * dt1)
    torch.testing.assert_close(g01, 0.1 * g1)
    torch.testing.assert_close(h01, h1)  # H itself: full gradient
    # the clamp: an advected acceleration of 1000 and jerk of -1000 are bounded at 256 and -512
    q, grad_q = torch.zeros(1, 3, 3), torch.zeros(1, 3, 3, 3)
    dq_dt = torch.tensor([[[1000.0] * 3, [-1000.0] * 3, [0.0] * 3]])
    res = integrity_residuals(q, dq_dt, grad_q, bound=[256.0, 512.0])
    torch.testing.assert_close(res, torch.tensor([[[-256.0] * 3, [512.0] * 3]]))


def test_advected_density_has_zero_transport_residual():
    v0 = torch.tensor([0.5, -0.3, 0.2])

    def density(x, t):
        c = torch.tensor([0.1, 0.0, -0.1]) + v0 * t[:, None]
        return torch.exp(-((x - c) ** 2).sum(-1, keepdim=True) / 0.3)

    x, t = points()
    d = central_differences(density, x, t, 1e-3, 1e-3)
    r = transport_residual(d["dt"][:, 0], d["grad"][:, 0], v0.expand(64, 3))
    assert r.abs().max() < 1e-3
    # the residual is not zero for a different velocity
    r_bad = transport_residual(d["dt"][:, 0], d["grad"][:, 0], -v0.expand(64, 3))
    assert r_bad.abs().max() > 0.1


def test_density_flow_is_the_displacement_error_along_the_density_gradient():
    """A blob of density 5 exp(-|x - c(t)|^2 / 0.3) moving at v0: the normal-flow error is 0 at the true
    displacement per frame, and |e|^2 / 3 for an error e (isotropic blob, points all around it)."""
    v0, dt = torch.tensor([0.5, -0.3, 0.2]), 0.05

    def density(x, t):
        c = v0 * t[:, None]
        return 5.0 * torch.exp(-((x - c) ** 2).sum(-1, keepdim=True) / 0.3)

    # points on shells around the blob's centre at t, in +-directions (symmetric -> isotropic sums)
    dirs = torch.nn.functional.normalize(torch.randn(2000, 3), dim=-1)
    dirs = torch.cat([dirs, -dirs])
    t = torch.full((4000,), 0.5)
    x = v0 * 0.5 + dirs * torch.rand(2000).repeat(2)[:, None] * 0.8
    d = central_differences(density, x, t, 1e-3, 1e-3)
    valid = torch.ones(4000, dtype=torch.bool)

    def flow(disp):
        return density_flow_residual(d["value"][:, 0], d["dt"][:, 0], d["grad"][:, 0], disp, dt, valid)

    assert flow((v0 * dt).expand(4000, 3)) < 1e-8
    e = torch.tensor([0.01, 0.02, -0.015])
    assert abs(float(flow((v0 * dt + e).expand(4000, 3))) / float((e**2).sum() / 3) - 1.0) < 0.1
    still = torch.zeros(4000, 3, requires_grad=True)
    loss = flow(still)
    assert abs(float(loss.detach()) / float(((v0 * dt) ** 2).sum() / 3) - 1.0) < 0.1
    loss.backward()  # the gradient reaches the displacement (F_K), pointing towards the true motion
    assert (still.grad.sum(0) @ v0) < 0
    # no valid point: zero, with a gradient path
    none = density_flow_residual(d["value"][:, 0], d["dt"][:, 0], d["grad"][:, 0], still, dt, valid & False)
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_finite_difference_material_derivative_matches_analytic():
    def field(x, t):
        X, Y, Z = x.unbind(-1)
        return torch.stack([torch.sin(X) * torch.cos(t), Y * Y + t, X * Z * torch.exp(-t)], dim=-1)

    x, t = points(32)
    v = torch.randn(32, 3)
    d = central_differences(field, x, t, 1e-3, 1e-3)
    got = material_derivative(d["dt"], d["grad"], v)
    X, Y, Z = x.unbind(-1)
    dt = torch.stack([-torch.sin(X) * torch.sin(t), torch.ones_like(t), -X * Z * torch.exp(-t)], dim=-1)
    grad = torch.zeros(32, 3, 3)
    grad[:, 0, 0] = torch.cos(X) * torch.cos(t)
    grad[:, 1, 1] = 2 * Y
    grad[:, 2, 0] = Z * torch.exp(-t)
    grad[:, 2, 2] = X * torch.exp(-t)
    want = dt + torch.einsum("ncj,nj->nc", grad, v)
    torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-3)


def test_probes_outside_the_box_are_invalid_and_time_is_clamped():
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    x = torch.tensor([[0.0, 0, 0], [0.995, 0, 0]])
    t = torch.tensor([0.0, 1.0])
    d = central_differences(lambda p, s: (p[:, :1] + 2 * s[:, None]), x, t, 0.01, 0.01, aabb)
    assert d["valid"].tolist() == [True, False]
    # one-sided differences at t = 0 and t = 1 still give the right derivative
    torch.testing.assert_close(d["dt"][:, 0], torch.tensor([2.0, 2.0]))


def test_gradients_flow_through_field_values_not_probe_positions():
    w = torch.tensor(2.0, requires_grad=True)
    x = torch.rand(4, 3, requires_grad=True)
    d = central_differences(lambda p, s: w * p.sum(-1, keepdim=True) ** 2, x, torch.rand(4), 0.01, 0.01)
    d["grad"].sum().backward()
    assert x.grad is None and w.grad is not None and math.isfinite(float(w.grad))
