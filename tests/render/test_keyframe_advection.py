"""Keyframe advection of the dynamic field by the kinematic field (SceneModel.set_keyframe_advection)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from kinfield.config import Config
from kinfield.fields import FieldConfig
from kinfield.fields.radiance import blend_keyframes
from kinfield.nn import HashGridConfig
from kinfield.render import RenderConfig, SceneModel
from kinfield.train.trainer import build_model

AABB = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
GRID = HashGridConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4, per_level_scale=1.5)


class ConstantMotion(nn.Module):
    """F_K stand-in: one learnable velocity and acceleration everywhere (``[N, 2, 3]``)."""

    def __init__(self, v, a):
        super().__init__()
        self.q = nn.Parameter(torch.tensor([v, a], dtype=torch.float32))

    def forward(self, x, t):
        return self.q[None].expand(x.shape[0], 2, 3)


def advected_model(spacing=0.25, v=(0.4, -0.2, 0.1), a=(0.0, 0.0, -1.0)) -> SceneModel:
    torch.manual_seed(0)
    cfg = FieldConfig(grid=GRID, density_hidden=16, color_hidden=16, color_layers=1, sh_degree=2, geo_features=7)
    model = SceneModel(AABB, cfg, cfg, RenderConfig())
    model.kinematic = ConstantMotion(v, a)
    model.set_keyframe_advection(spacing)
    return model


def moved(x, t, tk, q):
    tau = (tk - t)[:, None]
    return x + q[0] * tau + q[1] * tau**2 / 2


def test_keyframe_points_follow_the_taylor_displacement_to_the_keyframes_around_t():
    model = advected_model(spacing=0.25)
    x = torch.rand(5, 3) - 0.5
    t = torch.tensor([0.0, 0.1, 0.25, 0.9, 1.0])
    pts, times, w = model._keyframe_points(x, t)
    t0 = torch.tensor([0.0, 0.0, 0.25, 0.75, 1.0])
    t1 = torch.tensor([0.25, 0.25, 0.5, 1.0, 1.0])
    torch.testing.assert_close(times, torch.cat([t0, t1]))
    torch.testing.assert_close(w, torch.tensor([0.0, 0.4, 0.0, 0.6, 0.0]))
    q = model.kinematic.q.detach()
    torch.testing.assert_close(pts, torch.cat([moved(x, t, t0, q), moved(x, t, t1, q)]))
    # one read per point: the later keyframe where u < w
    u = torch.tensor([0.5, 0.3, 0.5, 0.7, 0.0])
    p1, t_one, _ = model._keyframe_points(x, t, u)
    tk = torch.tensor([0.0, 0.25, 0.25, 0.75, 1.0])
    torch.testing.assert_close(t_one, tk)
    torch.testing.assert_close(p1, moved(x, t, tk, q))


def test_a_spacing_that_does_not_divide_the_sequence_ends_on_time_one():
    model = advected_model(spacing=0.3)
    t = torch.tensor([0.95, 1.0])
    _, times, w = model._keyframe_points(torch.zeros(2, 3), t)
    torch.testing.assert_close(times, torch.tensor([0.9, 0.9, 1.0, 1.0]))
    torch.testing.assert_close(w, torch.tensor([0.5, 1.0]))


def test_advected_field_is_the_time_blend_of_the_grid_at_the_moved_points():
    model = advected_model()
    dyn = model.dynamic
    x, d = torch.rand(64, 3) - 0.5, nn.functional.normalize(torch.randn(64, 3), dim=-1)
    t = torch.rand(64)
    sigma, rgb = dyn(x, t, d)
    pts, times, w = model._keyframe_points(x, t)
    s2, g2 = dyn._grid_features(pts, times)
    s_ref = (1 - w) * s2[:64] + w * s2[64:]
    torch.testing.assert_close(sigma, s_ref)
    # at a keyframe time the field is the grid there, at the point itself
    tk = torch.full((64,), 0.5)
    s_adv, rgb_adv = dyn(x, tk, d)
    dyn.keyframe_points = None
    s_raw, rgb_raw = dyn(x, tk, d)
    torch.testing.assert_close(s_adv, s_raw)
    torch.testing.assert_close(rgb_adv, rgb_raw)


def test_blend_keeps_the_features_of_the_keyframe_that_holds_density():
    sigma = torch.tensor([2.0, 0.0, 0.0, 3.0])  # point 0: only the earlier read is dense, point 1: the later
    geo = torch.tensor([[1.0], [5.0], [-1.0], [7.0]])
    w = torch.tensor([0.5, 0.25])
    s, g = blend_keyframes(sigma, geo, w)
    torch.testing.assert_close(s, torch.tensor([1.0, 0.75]))
    torch.testing.assert_close(g, torch.tensor([[1.0], [7.0]]), atol=1e-5, rtol=0)


def test_photometric_gradients_reach_the_kinematic_field_through_the_advected_render():
    model = advected_model()
    origins = torch.tensor([[0.0, -3.0, 0.0]]).repeat(8, 1) + 0.1 * torch.randn(8, 3)
    dirs = nn.functional.normalize(torch.tensor([[0.0, 1.0, 0.0]]).repeat(8, 1), dim=-1)
    times = torch.full((8,), 0.4)
    for u in (None, torch.rand(8)):
        model.zero_grad()
        out = model.render_rays(origins, dirs, times, torch.ones(3), keyframe_u=u)
        out["rgb"].sum().backward()
        g = model.kinematic.q.grad
        assert g is not None and g.abs().sum() > 0


def test_normal_regressor_reads_the_advected_features_without_training_the_motion():
    """METHOD 2.8: the normal regulariser trains the regressor and the geometry features; with advection
    its reads go through F_K's keyframe points, which must take no gradient from it (same values)."""
    from kinfield.nn import MLP
    model = advected_model(spacing=0.25)
    model.normal_net = MLP(7, 3, 8, 1)
    x, t = torch.rand(64, 3) - 0.5, torch.rand(64)
    n = model.predict_normals(x, t)
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(64))
    _, geo = model.dynamic._features(x, t)  # the same read with motion gradients
    torch.testing.assert_close(n, torch.nn.functional.normalize(model.normal_net(geo), dim=-1))
    (n * torch.randn_like(n)).sum().backward()
    assert model.kinematic.q.grad is None
    assert model.normal_net.net[0].weight.grad.abs().sum() > 0
    assert model.dynamic.encoding.params.grad.abs().sum() > 0
    # the photometric read of the same points still moves F_K
    model.dynamic._features(x, t)[0].sum().backward()
    assert model.kinematic.q.grad.abs().sum() > 0


def test_keyframe_draws_give_one_uniform_per_ray_only_when_advection_samples():
    model = advected_model()
    u = model.keyframe_draws(7)
    assert u.shape == (7,) and bool(((u >= 0) & (u < 1)).all())
    model.set_keyframe_advection(0.25, sample=False)  # blend both keyframes in every read
    assert model.keyframe_draws(7) is None
    model.set_keyframe_advection(0.0)  # off
    assert model.keyframe_draws(7) is None


def test_occupancy_update_reads_one_keyframe_per_point():
    """With keyframe sampling the occupancy refresh reads the grid once per cell point (as a training ray does),
    not at both keyframes; with blending, twice."""
    for sample, reads_per_point in ((True, 1), (False, 2)):
        model = advected_model()
        model.set_keyframe_advection(0.25, sample=sample)
        seen = []
        inner = model.dynamic._grid_features
        model.dynamic._grid_features = lambda x, t: seen.append(x.shape[0]) or inner(x, t)
        assert model.update_occupancy(0)  # step 0: every cell once
        n_cells = model.occupancy.occs.numel()
        assert sum(seen) == reads_per_point * n_cells


def test_keyframe_advection_needs_the_kinematic_field():
    cfg = Config()
    cfg.kin.keyframe_frames = 4
    assert build_model(cfg, AABB, 0.05).dynamic.keyframe_points is not None
    cfg.kin.enabled = False  # the one ablation switch turns the advection off with the kinematic field
    model = build_model(cfg, AABB, 0.05)
    assert model.kinematic is None and model.dynamic.keyframe_points is None
    assert model.keyframe_draws(4) is None
    model = SceneModel(AABB, FieldConfig(grid=GRID), FieldConfig(grid=GRID), RenderConfig())
    with pytest.raises(ValueError, match="kinematic field"):
        model.set_keyframe_advection(0.2)


def test_a_run_with_keyframe_advection_trains_resumes_and_scores_motion(tmp_path, capsys):
    import json
    from pathlib import Path

    from kinfield.cli import main_eval_motion, main_train
    from kinfield.data.synthetic import PRESETS, write_scene
    from kinfield.train import load_run

    repo = Path(__file__).resolve().parents[2]
    scene = write_scene(PRESETS["tiny"], tmp_path / "scene")
    run = tmp_path / "run"
    args = [str(scene), str(repo / "configs" / "debug.yaml"), "--out", str(run), "--device", "cpu",
            "--train_eval_split", "", "--kin_keyframe_frames", "2", "--prior_dynamic_sparsity_weight", "1e-3"]
    assert main_train(args) == 0
    assert main_train(args + ["--iters", "6"]) == 0  # resumes from step 4
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/dynamic_sparsity" in r for r in rows) and rows[-1]["step"] == 6
    loaded = load_run(run, device="cpu")
    assert loaded.model.dynamic.keyframe_points is not None
    assert abs(loaded.model.keyframe_spacing - 2 * 0.2) < 1e-6  # tiny: 6 frames, frame spacing 0.2
    capsys.readouterr()
    assert main_eval_motion([str(run), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["epe_mean"] >= 0


# ------------------------------------------------------------------ F_K shared within a training step
def counting(model):
    """Counts the points of each evaluation of ``model.kinematic``."""
    calls, inner = [], model.kinematic.forward
    model.kinematic.forward = lambda x, t: (calls.append(x.shape[0]), inner(x, t))[1]
    return calls


def test_shared_kinematics_evaluates_the_kinematic_field_once_per_set_of_points():
    model = advected_model()
    calls = counting(model)
    x, t = torch.rand(6, 3) - 0.5, torch.rand(6)
    model.kinematic_q(x, t), model.kinematic_q(x, t)
    assert calls == [6, 6] and model.kinematic_q(x, t, reuse_only=True) is None  # nothing shared outside the block
    with model.shared_kinematics():
        q = model.kinematic_q(x, t)
        assert model.kinematic_q(x, t.reshape(-1)) is q  # a view of the same times
        assert model.kinematic_q(x, t, reuse_only=True) is q
        assert model.kinematic_q(x.clone(), t, reuse_only=True) is None  # other points (equal values: not looked at)
        with torch.no_grad():
            assert model.kinematic_q(x, t) is q  # a graph where none is needed does no harm
            y = torch.rand(6, 3)
            q_nograd = model.kinematic_q(y, t)
        assert model.kinematic_q(y, t) is not q_nograd  # made without gradient: computed again where one is needed
        x.add_(0.1)  # changed in place: computed again
        assert model.kinematic_q(x, t) is not q
    assert calls == [6, 6, 6, 6, 6, 6] and model._kin_memo is None


def test_a_training_step_sharing_the_kinematic_field_has_the_gradients_of_separate_evaluations(tmp_path):
    """Every loss term on from step 0 with keyframe advection: the render, warps, cycle and physics read F_K at
    shared points; one step's gradients with the sharing equal those of evaluating F_K at every read."""
    import contextlib
    from pathlib import Path

    from kinfield.config import parse_args
    from kinfield.data.synthetic import PRESETS, write_scene
    from kinfield.train import Trainer

    repo = Path(__file__).resolve().parents[2]
    scene = write_scene(PRESETS["tiny"], tmp_path / "scene")
    args = ["--config", str(repo / "configs" / "debug.yaml"), "--scene", str(scene), "--device", "cpu",
            "--train_eval_split", "", "--train_rays", "128", "--train_target_samples", "0", "--kin_keyframe_frames",
            "2", "--kin_start", "0", "--kin_physics_start", "0", "--kin_normal_start", "0", "--kin_unlock_acceleration",
            "0", "--kin_unlock_jerk", "0", "--kin_physics_sigma_threshold", "-1", "--kin_consistency_weight", "1"]
    grads, counts = [], []
    for share in (True, False):
        torch.manual_seed(0)
        trainer = Trainer(parse_args(args + ["--out", str(tmp_path / f"run{share}")]))
        if not share:
            trainer.model.shared_kinematics = contextlib.nullcontext
        with torch.no_grad():  # F_K starts motionless (a zero last layer): give it motion to differentiate
            head = trainer.model.kinematic.mlp.net[-1].weight
            head.copy_(torch.randn(head.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
        calls = counting(trainer.model)
        trainer.optimizer.register_step_pre_hook(lambda opt, *_: grads.append(
            {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}))
        logs = trainer.train_step()
        assert all(logs[f"loss/{k}"] > 0 for k in ("cycle", "integrity", "rigidity", "warp_photo")), logs
        counts.append(len(calls))
    assert counts[0] == counts[1] - 3  # at the warp samples, for the cycle loss, at the physics probes
    assert grads[0].keys() == grads[1].keys() and any(n.startswith("kinematic.") for n in grads[0])
    for n, g in grads[1].items():
        assert (grads[0][n] - g).abs().max() <= 1e-5 * g.abs().max() + 1e-12, n


@pytest.mark.parametrize("keyframe_u", [False, True])
def test_rays_without_samples_render_the_background_with_keyframe_advection(keyframe_u):
    """Rays that miss the box (sky, a batch the occupancy grid empties) reach the keyframe reads with no points."""
    model = advected_model()
    origins = torch.tensor([[0.0, 0.0, 5.0], [3.0, 3.0, 3.0]])
    dirs = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # both point away from the box
    bg = torch.tensor([0.2, 0.4, 0.6])
    u = torch.rand(2) if keyframe_u else None
    out = model.render_rays(origins, dirs, torch.tensor([0.3, 0.7]), bg, keyframe_u=u)
    assert int(out["n_samples"]) == 0
    torch.testing.assert_close(out["rgb"], bg.expand(2, 3))


def test_transport_trains_the_advected_density_but_not_the_motion():
    """METHOD 2.6 / 2.16: the transport term's velocity is detached, so it shapes the density alone. With keyframe
    advection the density is read at points F_K moves: that read must not carry the term's gradient to F_K either
    (the same term without advection gives F_K no gradient)."""
    from types import SimpleNamespace

    from kinfield.fields import KinematicConfig, KinematicField
    from kinfield.losses.kinematic import KinConfig, KinematicObjective
    model = advected_model(spacing=0.2)
    model.kinematic = KinematicField(AABB, 0.05, KinematicConfig(grid=GRID, grid_backend="torch"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    n = 64
    x, t = torch.rand(n, 3) * 1.2 - 0.6, 0.2 + 0.6 * torch.rand(n)
    obj = KinematicObjective(KinConfig(fd_jitter=False, physics_sigma_threshold=0.0), model, 0.05)
    ctx = {"kin_sel": {"idx": torch.arange(n), "n_rays": n, "n_samples": n},  # the warped points, given
           "kin_warp_inter": {"x": x, "t": t, "sigma": torch.full((n,), 100.0)},
           "render": {"samples": SimpleNamespace(w_d=torch.ones(n)), "rgb": torch.zeros(n, 3)}, "step": 10**6}
    with model.shared_kinematics():  # as in a training step: the probes' F_K read is shared with the advection
        obj.physics(ctx)["transport"].backward()
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in model.kinematic.parameters())
    assert float(model.dynamic.encoding.params.grad.abs().sum()) > 0
