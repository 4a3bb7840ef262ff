"""Rendered values against closed forms: the static-only / dynamic-only renders of the decomposition
(kinfield.render.SceneModel.render_rays with ``decompose``), the image-plane kinematics of the
velocity / acceleration / jerk videos (kinfield.render.video.image_plane_kinematics, colorize_vectors) and
the NDC density / finite-difference-step conversions (kinfield.render.space.SceneSpace)."""
from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
from torch import nn

from kinfield.fields import FieldConfig
from kinfield.nn import HashGridConfig
from kinfield.render import OccupancyConfig, RenderConfig, SceneModel
from kinfield.render.space import SceneSpace
from kinfield.render.video import colorize_vectors, image_plane_kinematics

F64 = torch.float64


def small_model(aabb, step, ndc=None) -> SceneModel:
    """A SceneModel with tiny learned fields (replaced by analytic ones in the tests) and an all-occupied grid."""
    small = FieldConfig(grid=HashGridConfig(n_levels=2, log2_hashmap_size=10))
    cfg = RenderConfig(step_size=step, occupancy=OccupancyConfig(resolution=8, backend="torch"))
    return SceneModel(torch.tensor(aabb, dtype=torch.float32), small, small, cfg, ndc=ndc)


class Slab(nn.Module):
    """Constant density ``sigma`` and colour ``rgb`` for ``z_lo <= z <= z_hi`` and ``x < x_max``; a static
    (``x, None, d``) or dynamic (``x, t, d, u``) field."""

    def __init__(self, sigma, rgb, z_lo, z_hi, x_max=math.inf):
        super().__init__()
        self.sigma, self.rgb = float(sigma), torch.tensor(rgb, dtype=torch.float32)
        self.z_lo, self.z_hi, self.x_max = z_lo, z_hi, x_max
        self.keyframe_points = None

    def density(self, x, t=None, keyframe_u=None, motion_grad=True):
        inside = (x[:, 2] >= self.z_lo) & (x[:, 2] <= self.z_hi) & (x[:, 0] < self.x_max)
        return inside.to(x.dtype) * self.sigma

    def forward(self, x, t=None, d=None, keyframe_u=None):
        return self.density(x), self.rgb.to(x.dtype).expand(x.shape[0], 3)


# ------------------------------------------------------------------------------------ (a) decomposition
def test_static_and_dynamic_only_renders_use_each_fields_own_transmittance():
    """A dynamic slab (density b, length L_d, colour c_d) in front of a static slab (a, L_s, c_s), on a
    background g. Each field rendered alone is that slab alone:
        rgb_static  = c_s (1 - e^{-a L_s}) + e^{-a L_s} g      (NOT attenuated by e^{-b L_d})
        rgb_dynamic = c_d (1 - e^{-b L_d}) + e^{-b L_d} g
    and the blend is c_d (1 - e^{-b L_d}) + e^{-b L_d} [c_s (1 - e^{-a L_s}) + e^{-a L_s} g]; the dynamic share
    is (1 - e^{-b L_d}) / (1 - e^{-b L_d - a L_s}). The slab ends lie on sample boundaries (entry at z = 1,
    step 0.05), so the discrete sums equal these closed forms. A second ray (x = 0.7) misses the dynamic slab."""
    a, b, step = 3.0, 4.0, 0.05
    c_s, c_d, g = (0.9, 0.2, 0.1), (0.1, 0.3, 0.95), (0.4, 0.5, 0.6)
    model = small_model([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], step)
    model.static = Slab(a, c_s, -0.6, 0.0)  # z in [-0.6, 0]: L_s = 0.6, ray distance 3.0 .. 3.6
    model.dynamic = Slab(b, c_d, 0.5, 0.8, x_max=0.4)  # z in [0.5, 0.8]: L_d = 0.3
    origins = torch.tensor([[0.1, 0.2, 3.0], [0.7, -0.3, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    with torch.no_grad():
        out = model.render_rays(origins, dirs, torch.tensor([0.3, 0.3]), torch.tensor(g), decompose=True)
    cs, cd, bg = (torch.tensor(v, dtype=F64) for v in (c_s, c_d, g))
    Ts, Td = math.exp(-a * 0.6), math.exp(-b * 0.3)
    static_alone = cs * (1 - Ts) + Ts * bg
    dynamic_alone = cd * (1 - Td) + Td * bg
    tol = dict(rtol=0, atol=2e-5)
    for r in range(2):
        torch.testing.assert_close(out["rgb_static"][r].double(), static_alone, **tol)
    torch.testing.assert_close(out["rgb_dynamic"][0].double(), dynamic_alone, **tol)
    torch.testing.assert_close(out["rgb_dynamic"][1].double(), bg, **tol)
    torch.testing.assert_close(out["rgb"][0].double(), cd * (1 - Td) + Td * static_alone, **tol)
    torch.testing.assert_close(out["rgb"][1].double(), static_alone, **tol)
    # depths: each slab's own discrete expected distance (alpha per step, geometric transmittance)
    def slab_depth(sigma, t0, n):
        al = 1 - math.exp(-sigma * step)
        w = [al * (1 - al) ** k for k in range(n)]
        return sum(wk * (t0 + step * (k + 0.5)) for k, wk in enumerate(w)) / sum(w)

    assert float(out["depth_static"][0]) == pytest.approx(slab_depth(a, 3.0, 12), abs=1e-4)
    assert float(out["depth_static"][1]) == pytest.approx(slab_depth(a, 3.0, 12), abs=1e-4)
    assert float(out["depth_dynamic"][0]) == pytest.approx(slab_depth(b, 2.2, 6), abs=1e-4)
    assert float(out["dynamic_share"][0]) == pytest.approx((1 - Td) / (1 - Td * Ts), abs=1e-5)
    assert float(out["dynamic_share"][1]) == pytest.approx(0.0, abs=1e-7)


# ---------------------------------------------------------------------------------- (b) kinematics video
def _rotation(axis, angle) -> torch.Tensor:
    """Rodrigues' formula: rotation by ``angle`` about unit ``axis``."""
    k = torch.tensor(axis, dtype=F64)
    k = k / k.norm()
    K = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=F64)
    return torch.eye(3, dtype=F64) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


class UniformKinematics(nn.Module):
    """The same velocity / acceleration / jerk vector at every point and time."""

    order = 3

    def __init__(self, v, a, j):
        super().__init__()
        self.q = {"velocity": v, "acceleration": a, "jerk": j}

    def kinematics(self, x, t):
        return {k: v.to(x.dtype).expand(x.shape[0], 3) for k, v in self.q.items()}


def test_image_plane_kinematics_project_on_the_camera_axes_and_hue_gives_the_direction():
    """With c2w rotation R (columns: camera right, up, back in world), a world vector s R e_x has camera-plane
    components (s, 0) (pointing right: hue 0, red), u R e_y has (0, u) (up: hue 1/4, rgb (0.5, 1, 0)) and
    R (1, 1, 5) has (1, 1) (the back component is dropped; hue 1/8, rgb (1, 0.75, 0)). R is a generic rotation
    (R != R^T), so the world -> camera map must be R^T k. Pixels with opacity < 0.5 are NaN (black)."""
    R = _rotation((0.3, -0.8, 0.5), 1.1)
    assert float((R - R.T).abs().max()) > 0.5
    c2w = torch.eye(4)
    c2w[:3, :3], c2w[:3, 3] = R.float(), torch.tensor([0.2, -0.1, 0.5])
    s, u = 0.7, 1.9
    v = (s * R[:, 0]).float()
    acc = (u * R[:, 1]).float()
    jerk = (R @ torch.tensor([1.0, 1.0, 5.0], dtype=F64)).float()
    model = small_model([-3.0, -3.0, -3.0, 3.0, 3.0, 3.0], 0.05)
    model.kinematic = UniformKinematics(v, acc, jerk)
    H, W = 5, 7
    intr = torch.tensor([9.0, 9.0, 3.5, 2.5])
    opacity = torch.ones(H, W)
    opacity[1, 2] = 0.2
    render_out = {"depth": torch.full((H, W), 1.3), "opacity": opacity}
    expect = {"velocity": (s, 0.0, 0.0), "acceleration": (0.0, u, 0.25), "jerk": (1.0, 1.0, 0.125)}
    for name, (ex, ey, hue) in expect.items():
        vec = image_plane_kinematics(model, c2w, intr, H, W, 0.4, render_out, name)
        assert vec.shape == (H, W, 2)
        assert np.isnan(vec[1, 2]).all()
        valid = ~np.isnan(vec[..., 0])
        assert valid.sum() == H * W - 1
        np.testing.assert_allclose(vec[valid][:, 0], ex, atol=1e-5)
        np.testing.assert_allclose(vec[valid][:, 1], ey, atol=1e-5)
        img = colorize_vectors([vec])[0]
        assert img.dtype == np.uint8 and img.shape == (H, W, 3)
        want = np.round(np.array(colorsys.hsv_to_rgb(hue, 1.0, 1.0)) * 255)  # uniform field: value 1 everywhere
        assert np.abs(img[valid].astype(int) - want).max() <= 1, (name, img[valid][0], want)
        assert (img[1, 2] == 0).all()


# ---------------------------------------------------------------------------------------- (c) NDC space
FOCAL, WIDTH, HEIGHT = 50.0, 64.0, 48.0


def ndc_map(p: torch.Tensor, near: float) -> torch.Tensor:
    """World -> NDC for one point ``[3]``, written out from METHOD 1.5: (a_x x/z, a_y y/z, 1 + 2 near / z),
    a_x = -2 f / W, a_y = -2 f / H."""
    ax, ay = -2.0 * FOCAL / WIDTH, -2.0 * FOCAL / HEIGHT
    return torch.stack([ax * p[0] / p[2], ay * p[1] / p[2], 1.0 + 2.0 * near / p[2]])


def _world_points(n=40, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 3, generator=g, dtype=F64) - 0.5) * 2.0
    x[:, 2] = -1.2 - 5.0 * torch.rand(n, generator=g, dtype=F64)
    return x


@pytest.mark.parametrize("near", [1.0, 0.6])
def test_ndc_density_to_world_is_times_abs_det_of_the_ndc_jacobian(near):
    """A field density in NDC becomes a world density times |det d ndc / d world|: the Jacobian taken by
    autograd of the hand-written NDC map, cross-checked with its closed form 2 near |a_x a_y| / z^4."""
    space = SceneSpace((FOCAL, WIDTH, HEIGHT, near))
    x = _world_points()
    sigma = torch.linspace(0.5, 7.0, x.shape[0], dtype=F64)
    dets = torch.stack([torch.linalg.det(torch.autograd.functional.jacobian(lambda p: ndc_map(p, near), xi)).abs()
                        for xi in x])
    ax, ay = 2.0 * FOCAL / WIDTH, 2.0 * FOCAL / HEIGHT
    torch.testing.assert_close(dets, 2.0 * near * ax * ay / x[:, 2] ** 4, rtol=1e-10, atol=0)
    assert float((dets - 1).abs().min()) > 0.05  # the conversion is not the identity here
    # (rtol: the space keeps its parameters in float32)
    torch.testing.assert_close(space.density_to_world(sigma, x), sigma * dets, rtol=1e-6, atol=0)
    world = SceneSpace()
    assert torch.equal(world.density_to_world(sigma, x), sigma)


@pytest.mark.parametrize("near", [1.0, 0.6])
def test_world_step_spans_the_field_step_by_finite_differences(near):
    """world_step h(x) is the largest world step along every world axis whose NDC displacement (central finite
    differences of the hand-written NDC map) stays within ``field_step``, reached on the most stretched axis:
    max_i |ndc(x + h e_i) - ndc(x - h e_i)| / 2 = field_step. Over a batch, h is clamped at its 95th percentile
    (linear interpolation); in world space h = field_step."""
    space = SceneSpace((FOCAL, WIDTH, HEIGHT, near))
    x = _world_points()
    fs, eps = 2e-3, 1e-6

    def stretch(xi, h):  # NDC displacement per axis for world steps +-h
        rows = []
        for i in range(3):
            e = torch.zeros(3, dtype=F64)
            e[i] = h
            rows.append(float((ndc_map(xi + e, near) - ndc_map(xi - e, near)).norm()) / 2)
        return rows

    h_expected = np.array([fs / (max(stretch(xi, eps)) / eps) for xi in x])
    for i, xi in enumerate(x):
        h = space.world_step(xi[None], fs)  # one point: no clamp
        assert h.shape == (1,)
        assert float(h[0]) == pytest.approx(h_expected[i], rel=1e-5)
        assert max(stretch(xi, float(h[0]))) == pytest.approx(fs, rel=1e-3)
    batch = space.world_step(x, fs).numpy()
    np.testing.assert_allclose(batch, np.minimum(h_expected, np.quantile(h_expected, 0.95)), rtol=1e-5)
    assert (batch < h_expected * (1 - 1e-3)).sum() >= 1  # the clamp binds on the top 5%
    world = SceneSpace().world_step(x, fs)
    torch.testing.assert_close(world, torch.full((x.shape[0],), fs, dtype=F64))
