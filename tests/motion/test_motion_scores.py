"""Motion scores and track seeding against closed forms: kinfield.motion.score_against_ground_truth with exact
(per-order rescaled) kinematics of the synthetic scenes, world-space and forward-facing (NSFF, NDC), and
kinfield.motion.sample_dynamic_points on an analytic moving sphere."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

from kinfield.data import load_scene
from kinfield.data.synthetic import PRESETS, build_scene, write_nsff_scene, write_scene
from kinfield.fields import FieldConfig
from kinfield.fields.analytic import AnalyticSphere, ExactKinematics
from kinfield.motion import sample_dynamic_points, score_against_ground_truth
from kinfield.nn import HashGridConfig
from kinfield.render import OccupancyConfig, RenderConfig, SceneModel

ORDERS = ("velocity", "acceleration", "jerk")


def small_model(aabb, step=0.05, ndc=None) -> SceneModel:
    """A SceneModel with tiny learned fields (replaced or unused here) and an all-occupied grid."""
    small = FieldConfig(grid=HashGridConfig(n_levels=2, log2_hashmap_size=10))
    cfg = RenderConfig(step_size=step, occupancy=OccupancyConfig(resolution=8, backend="torch"))
    return SceneModel(torch.as_tensor(aabb, dtype=torch.float32), small, small, cfg, ndc=ndc)


class ExactField(nn.Module):
    """The exact kinematics of the generator's rigid spheres (ExactKinematics, in the generator's frame) seen in
    the training frame ``x_train = s M x_gen + m`` (and, with ``ndc``, read at NDC field points), order ``k``
    multiplied by ``factors[k]``: ``q_train = factors[k] s M q_gen(M^T (x_train - m) / s)``."""

    order = 3

    def __init__(self, spheres, frame_dt, factors=(1.0, 1.0, 1.0), s=1.0, M=None, m=None, ndc=None):
        super().__init__()
        self.exact = ExactKinematics(spheres, frame_dt=frame_dt)
        self.frame_dt = frame_dt
        self.factors = factors
        self.s = float(s)
        self.M = torch.eye(3, dtype=torch.float64) if M is None else torch.as_tensor(M, dtype=torch.float64)
        self.m = torch.zeros(3, dtype=torch.float64) if m is None else torch.as_tensor(m, dtype=torch.float64)
        self.ndc = ndc

    def _world(self, p):
        if self.ndc is None:
            return p
        f, w, h, near = self.ndc  # NDC -> world, written out: z = 2 near / (z_ndc - 1), x = z x_ndc / a_x, ...
        z = 2.0 * near / (p[:, 2] - 1.0)
        return torch.stack([z * p[:, 0] / (-2.0 * f / w), z * p[:, 1] / (-2.0 * f / h), z], dim=-1)

    def kinematics(self, x, t):
        xt = self._world(x.double())
        xg = (xt - self.m) @ self.M / self.s
        q = self.exact(xg, t.double())  # [N, 3 orders, 3]
        q = self.s * q @ self.M.T
        return {name: (self.factors[k] * q[:, k]).to(x.dtype) for k, name in enumerate(ORDERS)}


def _gt(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _mean_norm(a):
    return float(np.linalg.norm(a.astype(np.float64), axis=-1).mean())


# ------------------------------------------------------------------------------ (d) world-space scene
@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    return write_scene(PRESETS["tiny"], tmp_path_factory.mktemp("tiny") / "scene")


def test_exact_field_scores_zero_for_every_order_and_each_order_is_compared_with_its_own_truth(tiny_scene):
    """Exact kinematics: velocity, acceleration and jerk relative errors ~0. Order k rescaled by f_k
    (f = 1, 0.25, 0.75): rel_err_k = |1 - f_k| exactly, abs_err_k = |1 - f_k| mean|gt_k| (from motion_gt.npz),
    and the end-point error (velocity only) stays ~0."""
    gt = _gt(tiny_scene / "motion_gt.npz")
    spheres = build_scene(PRESETS["tiny"]).moving
    model = small_model([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5])
    model.kinematic = ExactField(spheres, frame_dt=0.2)
    exact = score_against_ground_truth(model, tiny_scene / "motion_gt.npz", substeps=8)
    for name in ORDERS:
        assert _mean_norm(gt[name]) > 0.1, name  # every order moves in this scene
        assert exact[f"{name}_rel_err"] < 1e-5, (name, exact[f"{name}_rel_err"])
    assert exact["epe_mean"] < 2e-3 * exact["epe_zero_motion"]
    factors = (1.0, 0.25, 0.75)
    model.kinematic = ExactField(spheres, frame_dt=0.2, factors=factors)
    mixed = score_against_ground_truth(model, tiny_scene / "motion_gt.npz", substeps=8)
    assert mixed["epe_mean"] < 2e-3 * mixed["epe_zero_motion"]
    for name, f in zip(ORDERS, factors):
        assert mixed[f"{name}_rel_err"] == pytest.approx(1.0 - f, abs=1e-5), name
        assert mixed[f"{name}_abs_err"] == pytest.approx((1.0 - f) * _mean_norm(gt[name]), rel=1e-4, abs=1e-6), name


# ------------------------------------------------------------------------------ (d) forward-facing scene
@pytest.fixture(scope="module")
def forward_scene(tmp_path_factory):
    return write_nsff_scene(PRESETS["forward_tiny"], tmp_path_factory.mktemp("fwd") / "scene", flow=False)


def _training_frame(root):
    """The similarity ``x_train = s M x_gen + m`` between the generator's frame and the frame the NSFF loader
    trains in, fitted from the camera poses alone: M = R_train R_gen^T (the same for every frame), s = spread of
    the training camera centres over that of the generator's, m = mean centre difference."""
    spec = PRESETS["forward_tiny"]
    gen_scene = build_scene(spec)
    gen = gen_scene.rig[gen_scene.rig_index["train"]]
    scene = load_scene(str(root), splits=("train",))
    tr = scene.split("train").poses.double().numpy()
    Ms = np.array([tr[i, :3, :3] @ gen[i, :3, :3].T for i in range(len(tr))])
    assert np.abs(Ms - Ms[0]).max() < 1e-5 and np.linalg.det(Ms[0]) == pytest.approx(1.0, abs=1e-5)
    cg, ct = gen[:, :3, 3], tr[:, :3, 3]
    s = np.linalg.norm(ct - ct.mean(0)) / np.linalg.norm(cg - cg.mean(0))
    m = ct.mean(0) - s * Ms[0] @ cg.mean(0)
    assert np.abs(s * cg @ Ms[0].T + m - ct).max() < 1e-4  # a similarity maps every camera centre
    assert abs(s - 1.0) > 0.2 and np.abs(Ms[0] - np.eye(3)).max() > 0.05  # the frames really differ
    return scene, gen_scene.moving, s, Ms[0], m


def test_forward_facing_scores_are_taken_in_the_training_frame_and_reported_in_gt_units(forward_scene):
    """On an NSFF scene (NDC model, rescaled / rotated training frame) the exact field, expressed in the training
    frame, scores epe ~0 and v/a/j relative errors ~0; the no-motion baseline is mean |p(t) - p(t_q)| of the GT
    file in its own units; at half speed (every order) abs_err_k = mean|gt_k| / 2 in GT units, rel_err_k = 1/2."""
    scene, spheres, s, M, m = _training_frame(forward_scene)
    gt = _gt(forward_scene / "motion_gt.npz")
    model = small_model(scene.aabb, ndc=scene.ndc)
    model.kinematic = ExactField(spheres, scene.frame_dt, s=s, M=M, m=m, ndc=scene.ndc)
    exact = score_against_ground_truth(model, forward_scene / "motion_gt.npz", substeps=8)
    baseline = float(np.linalg.norm(gt["positions"].astype(np.float64) - gt["query_points"][None], axis=-1).mean())
    assert baseline > 0.1
    assert exact["epe_zero_motion"] == pytest.approx(baseline, rel=1e-4)
    assert exact["epe_mean"] < 1e-4 * baseline, exact["epe_mean"]
    for name in ORDERS:
        assert exact[f"{name}_rel_err"] < 1e-4, (name, exact[f"{name}_rel_err"])
    assert exact["velocity_cosine"] == pytest.approx(1.0, abs=1e-5)
    model.kinematic = ExactField(spheres, scene.frame_dt, factors=(0.5, 0.5, 0.5), s=s, M=M, m=m, ndc=scene.ndc)
    half = score_against_ground_truth(model, forward_scene / "motion_gt.npz", substeps=8)
    for name in ORDERS:
        assert half[f"{name}_rel_err"] == pytest.approx(0.5, abs=1e-4), name
        assert half[f"{name}_abs_err"] == pytest.approx(0.5 * _mean_norm(gt[name]), rel=1e-4), name


# ------------------------------------------------------------------------------ (e) seeding the tracks
class Box(nn.Module):
    """A static block of constant density between corners ``lo`` and ``hi`` (static field signature)."""

    def __init__(self, lo, hi, sigma=200.0):
        super().__init__()
        self.lo, self.hi, self.sigma = torch.tensor(lo), torch.tensor(hi), float(sigma)

    def density(self, x):
        return ((x >= self.lo) & (x <= self.hi)).all(-1).to(x.dtype) * self.sigma

    def forward(self, x, t=None, d=None):
        return self.density(x), torch.full((x.shape[0], 3), 0.3, dtype=x.dtype)


def _look_at(eye, target, up=(0.0, 1.0, 0.0)):
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = (eye - target) / np.linalg.norm(eye - target)
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, np.cross(z, x), z, eye
    return torch.tensor(c2w, dtype=torch.float32)


def test_sampled_dynamic_points_lie_on_the_visible_side_of_the_moving_sphere():
    """Dynamic field: a sphere of radius r = 0.35 with centre c(t) = c0 + v0 t; static field: a block beside it.
    Every sampled point p lies on the sphere at the query time, | |p - c(t)| - r | < 0.015 (step 0.01, a sharp
    shell of width 0.002),
    on the hemisphere facing the camera, (p - c(t)) . (eye - p) > 0; none on the block or the sphere at t = 0;
    as many points as asked (the sphere covers more pixels: closed-form ray / sphere hits)."""
    t, r = 0.6, 0.35
    c0, v0 = np.array([-0.5, -0.1, 0.0]), np.array([0.5, 0.3, 0.0])
    ct = c0 + v0 * t
    model = small_model([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5], step=0.01)
    model.dynamic = AnalyticSphere(tuple(c0), tuple(v0), radius=r, edge=0.002, sigma_max=2000.0)
    model.static = Box((0.6, -1.4, -0.5), (1.4, 1.4, 0.5))
    eye = np.array([0.3, 0.4, 3.5])
    c2w = _look_at(eye, (0.2, 0.0, 0.0))
    H = W = 32
    f = 0.5 * W / 0.35
    intr = torch.tensor([f, f, W / 2, H / 2])
    # pixels whose ray passes within 0.9 r of the centre at time t (closed form), and those hitting the block
    cols, rows = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d_cam = np.stack([(cols - W / 2) / f, -(rows - H / 2) / f, -np.ones_like(cols)], -1).reshape(-1, 3)
    d = d_cam @ c2w[:3, :3].double().numpy().T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    oc = ct - eye
    miss = np.linalg.norm(oc - (d @ oc)[:, None] * d, axis=-1)
    assert (miss < 0.9 * r).sum() > 40
    inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
    t0, t1 = (model.static.lo.numpy() - eye) * inv, (model.static.hi.numpy() - eye) * inv
    assert (np.minimum(t0, t1).max(-1) < np.maximum(t0, t1).min(-1)).sum() > 40  # the block is in view too
    n = 30
    pts = sample_dynamic_points(model, c2w, intr, H, W, t, n, torch.ones(3), seed=1)
    assert pts.shape == (n, 3) and len(np.unique(pts, axis=0)) == n
    rad = np.linalg.norm(pts - ct, axis=-1)
    assert np.abs(rad - r).max() < 0.015, rad
    facing = ((pts - ct) * (eye - pts)).sum(-1)
    assert (facing > 0).all(), facing
    assert (np.abs(np.linalg.norm(pts - c0, axis=-1) - r) > 0.05).any()  # the sphere at t = 0 is elsewhere
    assert (pts[:, 0] < 0.6 - 0.1).all()  # nothing on the static block
    # the block alone (no dynamic content in view): nothing to seed from
    model.dynamic = AnalyticSphere((5.0, 5.0, 5.0), radius=r)
    with pytest.raises(RuntimeError, match="no visible dynamic content"):
        sample_dynamic_points(model, c2w, intr, H, W, t, n, torch.ones(3))
