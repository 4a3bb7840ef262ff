"""Exact values of the trainer's schedules, checkpoint pruning, metric aggregation and logging.

Every expectation here is a closed form written out in the test (from the option help texts, the docstrings and
METHOD.md section 4), never a value computed by the function under test.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kinfield.config import parse_args
from kinfield.data import Scene, SceneSplit
from kinfield.data.synthetic import PRESETS, write_scene
from kinfield.train import Trainer
from kinfield.train.checkpoint import list_checkpoints, save_checkpoint
from kinfield.train.evaluate import evaluate_split, evenly_spaced_views, quick_scores, to_uint8
from kinfield.train.logger import EMA, MetricsLogger

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory) -> Path:
    return write_scene(PRESETS["tiny"], tmp_path_factory.mktemp("tiny_sched") / "scene")


def _cfg(scene, out, *extra):
    return parse_args(["--config", str(REPO / "configs" / "debug.yaml"), "--scene", str(scene), "--out", str(out),
                       "--device", "cpu", "--train_eval_split", "", *extra])


def _group_kind(trainer, group) -> str:
    """Which of the six parameter sets of ``_make_optimizer`` a group holds, from its parameters' names."""
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    kinds = set()
    for p in group["params"]:
        n = names[id(p)]
        grid = "grid" if n.endswith("encoding.params") else "net"
        part = "static" if n.startswith("static.") else "kin" if n.startswith("kinematic.") else "dyn"
        kinds.add(f"{part}_{grid}")
    assert len(kinds) == 1, kinds
    return kinds.pop()


# ------------------------------------------------------------------------------ learning rates
def test_initial_learning_rate_of_every_parameter_group(tiny_scene, tmp_path):
    """Base rates by hand: dynamic grid lr_grid, dynamic nets lr_net, static grid / nets x lr_static_factor,
    kinematic grid / nets x lr_kinematic_factor (config help); weight decay only on the non-kinematic nets."""
    cfg = _cfg(tiny_scene, tmp_path, "--train_lr_grid", "0.02", "--train_lr_net", "0.003",
               "--train_lr_static_factor", "0.1", "--train_lr_kinematic_factor", "0.5",
               "--train_weight_decay_net", "1e-5")
    trainer = Trainer(cfg)
    expected = {"dyn_grid": (0.02, 0.0), "dyn_net": (0.003, 1e-5), "static_grid": (0.002, 0.0),
                "static_net": (0.0003, 1e-5), "kin_grid": (0.01, 0.0), "kin_net": (0.0015, 0.0)}
    seen = set()
    for g in trainer.optimizer.param_groups:
        kind = _group_kind(trainer, g)
        seen.add(kind)
        lr, wd = expected[kind]
        assert g["initial_lr"] == pytest.approx(lr, rel=1e-12), kind
        assert g["weight_decay"] == pytest.approx(wd, rel=1e-12), kind
    assert {"dyn_grid", "dyn_net", "static_grid", "kin_grid"} <= seen


def test_warmup_and_exponential_decay_of_every_group(tiny_scene, tmp_path):
    """lr(s) / lr0 = min(1, (s+1)/warmup) * ratio ** min(1, s/iters) for every group (linear warm-up, then the
    exponential decay reaching exactly lr_final_ratio at --iters and staying there), checked step by step."""
    warm, iters, ratio = 4, 10, 0.1
    cfg = _cfg(tiny_scene, tmp_path, "--train_warmup", str(warm), "--iters", str(iters),
               "--train_lr_final_ratio", str(ratio))
    trainer = Trainer(cfg)
    opt, sched = trainer.optimizer, trainer.scheduler
    base = [g["initial_lr"] for g in opt.param_groups]
    assert len(base) >= 3
    for s in range(iters + 4):
        factor = min(1.0, (s + 1) / warm) * ratio ** min(1.0, s / iters)
        for g, lr0 in zip(opt.param_groups, base):
            assert g["lr"] == pytest.approx(lr0 * factor, rel=1e-9), (s, _group_kind(trainer, g))
        opt.step()  # (no gradients: nothing moves; it only keeps the scheduler's call-order check quiet)
        sched.step()
    # spot values of the closed form
    assert math.isclose(min(1.0, 1 / warm) * ratio ** 0, 0.25)
    assert opt.param_groups[0]["lr"] == pytest.approx(base[0] * ratio, rel=1e-9)  # past --iters: the final ratio


# ------------------------------------------------------------------------- loss-term schedules
def test_term_start_steps_and_linear_ramp(tiny_scene, tmp_path):
    """Term weights by hand: 0 before --kin_start (inclusive start: full schedule value at the start step), the
    warp terms ramp linearly w * (s - start) / ramp up to w (KinConfig.ramp comment), dynamic sparsity starts at
    its own start step, physics terms at max(kin_start, physics_start)."""
    cfg = _cfg(tiny_scene, tmp_path, "--kin_start", "7", "--kin_ramp", "4", "--kin_physics_start", "9",
               "--prior_dynamic_sparsity_weight", "0.5", "--prior_dynamic_sparsity_start", "5",
               "--kin_photo_weight", "0.5", "--kin_integrity_weight", "0.1")
    trainer = Trainer(cfg)
    terms = {t.name: t for t in trainer.terms}
    rgb, ds, photo, integ = terms["rgb"], terms["dynamic_sparsity"], terms["warp_photo"], terms["integrity"]
    assert [rgb.weight_at(s) for s in (0, 1, 100)] == [1.0, 1.0, 1.0]
    assert [ds.weight_at(s) for s in (0, 4, 5, 6)] == [0.0, 0.0, 0.5, 0.5]
    expected_photo = {6: 0.0, 7: 0.0, 8: 0.5 * 1 / 4, 9: 0.5 * 2 / 4, 10: 0.5 * 3 / 4, 11: 0.5, 50: 0.5}
    for s, w in expected_photo.items():
        assert photo.weight_at(s) == pytest.approx(w, abs=1e-12), s
    assert integ.weight_at(8) == 0.0 and integ.weight_at(9) == pytest.approx(0.1)


@pytest.mark.parametrize("static", ["true", "false"])
def test_the_entropy_term_needs_no_prior_but_a_static_field(tiny_scene, tmp_path, static):
    """--prior_entropy_weight on a scene without priors (D-NeRF): on from its start step with a static field (it was
    left out on every scene without a prior), weight 0 without one (every sample's dynamic share is 1 there); the
    step logs it."""
    cfg = _cfg(tiny_scene, tmp_path, "--model_use_static", static, "--prior_entropy_weight", "0.25",
               "--prior_entropy_start", "1", "--iters", "2")
    trainer = Trainer(cfg)
    assert trainer.priors is None
    term = {t.name: t for t in trainer.terms}["entropy"]
    w = 0.25 if static == "true" else 0.0
    assert [term.weight_at(s) for s in (0, 1, 5)] == [0.0, w, w]
    trainer.step = 1  # (the fit loop advances it)
    logs = trainer.train_step()
    assert ("loss/entropy" in logs) == (static == "true"), sorted(logs)


def test_term_start_step_is_inclusive_without_ramp(tiny_scene, tmp_path):
    """With no ramp a term has its full weight exactly at its start step and none one step earlier
    (Term docstring: active for start <= step)."""
    cfg = _cfg(tiny_scene, tmp_path, "--kin_start", "7", "--kin_ramp", "0", "--kin_photo_weight", "0.5")
    terms = {t.name: t for t in Trainer(cfg).terms}
    assert terms["warp_photo"].weight_at(6) == 0.0
    assert terms["warp_photo"].weight_at(7) == 0.5


def test_step_decay_schedule_of_the_transport_term(tiny_scene, tmp_path):
    """Transport weight w * 0.1 ** #(milestones m <= s) (METHOD section 3: x0.1 at each milestone, the milestone
    step itself already decayed)."""
    cfg = _cfg(tiny_scene, tmp_path, "--kin_physics_start", "0", "--kin_transport_weight", "2.0",
               "--kin_transport_decay_milestones", "3", "6")
    terms = {t.name: t for t in Trainer(cfg).terms}
    tr = terms["transport"]
    expected = {0: 2.0, 2: 2.0, 3: 0.2, 5: 0.2, 6: 0.02, 100: 0.02}
    for s, w in expected.items():
        assert tr.weight_at(s) == pytest.approx(w, rel=1e-12), s


def test_taylor_order_curriculum_unlock_steps(tiny_scene, tmp_path):
    """Active orders 1 + [s >= unlock_acceleration] + [s >= unlock_jerk] (METHOD section 2.1: mask [1,0,0], one order
    more at each unlock step), and a training step at the unlock step sets the field's Taylor mask to [1, 1, 0]."""
    cfg = _cfg(tiny_scene, tmp_path, "--kin_unlock_acceleration", "3", "--kin_unlock_jerk", "6",
               "--train_rays", "32", "--train_min_rays", "32", "--train_target_samples", "0")
    trainer = Trainer(cfg)
    k = trainer.kinematic
    assert [k.active_orders(s) for s in (0, 2, 3, 5, 6, 100)] == [1, 1, 2, 2, 3, 3]
    trainer.step = 3
    trainer.train_step()
    assert trainer.model.kinematic.taylor_mask.tolist() == [1.0, 1.0, 0.0]


# -------------------------------------------------------------------------- ray-count adaptation
@pytest.mark.parametrize("target,lo,hi,case", [
    (10 ** 9, 16, 10 ** 6, "growth capped at sqrt(2)"),
    (10 ** 9, 16, 150, "upper clamp"),
    (1, 100, 10 ** 6, "lower clamp"),
    ("half", 16, 10 ** 6, "free"),
])
def test_ray_count_moves_towards_the_sample_target(tiny_scene, tmp_path, target, lo, hi, case):
    """n' = int(clamp(n * sqrt(min(target / samples, 2)), min_rays, max_rays)) (trainer comment: towards the target,
    at most x1.41 up per step), computed here from the step's logged sample count."""
    n0 = 128
    cfg = _cfg(tiny_scene, tmp_path, "--train_rays", str(n0), "--train_min_rays", str(lo),
               "--train_max_rays", str(hi), "--train_target_samples", "1000")
    trainer = Trainer(cfg)
    if target == "half":  # first measure the samples of a step, then aim at about half of them
        probe = trainer.train_step()
        trainer.n_rays = n0
        target = max(1, int(probe["samples"] / 2))
    trainer.cfg.train.target_samples = target
    logs = trainer.train_step()
    assert logs["rays"] == n0
    samples = logs["samples"]
    assert samples > 0
    ratio = min(target / samples, 2.0)
    expected = int(min(hi, max(lo, n0 * math.sqrt(ratio))))
    assert trainer.n_rays == expected, case
    if case == "growth capped at sqrt(2)":
        assert trainer.n_rays == int(n0 * math.sqrt(2.0))
    elif case == "upper clamp":
        assert trainer.n_rays == 150
    elif case == "lower clamp":
        assert trainer.n_rays == 100
    else:
        assert trainer.n_rays < n0  # too many samples: fewer rays


@pytest.mark.parametrize("rays,target,expected", [(64, 1000, 100), (4096, 1000, 150), (120, 1000, 120), (64, 0, 64)])
def test_the_first_step_keeps_to_the_ray_bounds(tiny_scene, tmp_path, rays, target, expected, caplog):
    """--train_rays outside [--train_min_rays 100, --train_max_rays 150] is clamped from the first step when the count
    adapts (--train_target_samples > 0); with a fixed count (target 0) the bounds do not apply."""
    cfg = _cfg(tiny_scene, tmp_path, "--train_rays", str(rays), "--train_min_rays", "100", "--train_max_rays", "150",
               "--train_target_samples", str(target))
    with caplog.at_level("INFO", logger="kinfield"):
        trainer = Trainer(cfg)
    assert trainer.train_step()["rays"] == expected
    assert (f"--train_rays {rays} is outside [--train_min_rays 100, --train_max_rays 150]: {expected} rays at the "
            f"start" in caplog.text) == (rays != expected)


# ---------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("keep,left", [(3, [3, 4, 5]), (1, [5]), (2, [4, 5]), (0, [1, 2, 3, 4, 5])])
def test_keep_prunes_to_the_newest(tmp_path, keep, left):
    """After saving steps 1..5 with keep=k, exactly the k newest remain (0: all) (save_checkpoint docstring)."""
    for s in range(1, 6):
        save_checkpoint(tmp_path, s, {"x": torch.tensor(s)}, keep=keep)
    steps = [int(p.name[5:12]) for p in list_checkpoints(tmp_path)]
    assert steps == left


def test_keep_keeps_the_one_just_written_even_when_older_by_step(tmp_path):
    """A save of an earlier step than those on disk keeps that file plus the keep-1 newest others."""
    for s in (10, 20, 30):
        save_checkpoint(tmp_path, s, {}, keep=3)
    save_checkpoint(tmp_path, 5, {}, keep=3)
    assert [int(p.name[5:12]) for p in list_checkpoints(tmp_path)] == [5, 20, 30]


# ---------------------------------------------------------------------------------- evaluation
class _ConstantModel:
    """Renders a fixed grey image whatever the view: the scores follow from the ground truth alone."""

    training = True

    def __init__(self, value, h, w):
        self.img = torch.full((h, w, 3), float(value))

    def render_image(self, pose, intr, h, w, t, bg):
        return {"rgb": self.img.clone()}

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode


def _eval_scene(errors, h=12, w=12, masks=None):
    """A split whose view i differs from the grey 0.5 render by ``errors[i]`` in every pixel (MSE errors[i]**2)."""
    n = len(errors)
    imgs = torch.stack([torch.full((h, w, 3), 0.5 + e) for e in errors]).float()
    poses = torch.eye(4).repeat(n, 1, 1)
    split = SceneSplit("test", imgs, None, poses, torch.linspace(0, 1, n), torch.tensor([8.0, 8.0, 6.0, 6.0]).repeat(n, 1),
                       paths=[f"v{i}.png" for i in range(n)], extras={} if masks is None else {"dynamic_mask": masks})
    return Scene("", {"test": split}, torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]), 1.0, 3.0, torch.zeros(3), 0.5)


def test_summary_psnr_is_the_mean_of_per_view_psnrs(tmp_path):
    """Summary PSNR = mean_i(-10 log10 MSE_i) (per-view scores averaged, METHOD section 5), not -10 log10 of the
    mean MSE; the CSV holds one row per view with its own PSNR; metrics.json holds the summary under the split."""
    errors = [0.01, 0.1, 0.3]
    per_view = [-10.0 * math.log10(e * e) for e in errors]  # 40, 20, 10.457...
    scene = _eval_scene(errors)
    out = evaluate_split(_ConstantModel(0.5, 12, 12), scene, "test", tmp_path, use_lpips=False)
    assert out["psnr"] == pytest.approx(sum(per_view) / 3, abs=1e-3)
    assert out["psnr"] != pytest.approx(-10 * math.log10(np.mean([e * e for e in errors])), abs=0.5)
    assert out["n_images"] == 3 and out["n_views_in_split"] == 3 and out["lpips"] is None
    with open(tmp_path / "metrics_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == [0, 1, 2]
    assert [r["file"] for r in rows] == ["v0.png", "v1.png", "v2.png"]
    for r, p in zip(rows, per_view):
        assert float(r["psnr"]) == pytest.approx(p, abs=1e-3)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test"]["psnr"] == pytest.approx(sum(per_view) / 3, abs=1e-3)
    assert saved["test"]["lpips"] is None


def test_max_views_and_dynamic_metrics(tmp_path):
    """evenly_spaced_views(n, k) = round(linspace(0, n - 1, k)): [0, 2, 4] for (5, 3), [0, 2, 3, 5] for (6, 4); masked PSNR uses the MSE over mask pixels
    only, and views with an empty mask are left out of the dynamic mean (NaN in the CSV, null in JSON)."""
    assert evenly_spaced_views(5, 3) == [0, 2, 4]
    assert evenly_spaced_views(6, 4) == [0, 2, 3, 5]  # round(0, 5/3, 10/3, 5), not floor (0, 1, 3, 5)
    assert evenly_spaced_views(4, 0) == [0, 1, 2, 3]
    assert evenly_spaced_views(3, 5) == [0, 1, 2]
    h = w = 12
    errors = [0.01, 0.5, 0.1, 0.5, 0.2]
    imgs_err = []
    masks = torch.zeros(5, h, w)
    masks[0, :6] = 1.0
    masks[4, :, :3] = 1.0  # view 2 has an empty mask
    scene = _eval_scene(errors, masks=masks)
    sp = scene.split("test")
    # outside view 0's mask the error is larger: the dynamic PSNR must only see the masked pixels
    sp.images[0, 6:] = 0.5 + 0.25
    out = evaluate_split(_ConstantModel(0.5, h, w), scene, "test", tmp_path, use_lpips=False, max_views=3)
    assert out["n_images"] == 3 and out["n_views_in_split"] == 5
    mse0 = (0.01 ** 2 * 6 + 0.25 ** 2 * 6) / 12
    full = [-10 * math.log10(mse0), -10 * math.log10(0.1 ** 2), -10 * math.log10(0.2 ** 2)]
    dyn = [-10 * math.log10(0.01 ** 2), -10 * math.log10(0.2 ** 2)]
    assert out["psnr"] == pytest.approx(np.mean(full), abs=1e-3)
    assert out["psnr_dynamic"] == pytest.approx(np.mean(dyn), abs=1e-3)
    with open(tmp_path / "metrics_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == [0, 2, 4]
    assert math.isnan(float(rows[1]["psnr_dynamic"]))
    del imgs_err


def test_quick_scores_average_per_view_psnr():
    """quick_scores: mean over the chosen views of -10 log10 MSE_view; n_images counts them; the model's
    training flag is restored."""
    errors = [0.01, 0.1, 0.3, 0.05]
    scene = _eval_scene(errors)
    model = _ConstantModel(0.5, 12, 12)
    s = quick_scores(model, scene, "test", max_views=0, with_ssim=False)
    assert s["psnr"] == pytest.approx(np.mean([-10 * math.log10(e * e) for e in errors]), abs=1e-3)
    assert s["n_images"] == 4 and math.isnan(s["ssim"]) and model.training is True
    s2 = quick_scores(model, scene, "test", max_views=2, with_ssim=False)  # views 0 and 3
    assert s2["psnr"] == pytest.approx(np.mean([-10 * math.log10(e * e) for e in (0.01, 0.05)]), abs=1e-3)
    # the first view's render beside its ground truth (the TensorBoard image of a validation)
    assert s2["preview"].shape == (12, 24, 3)
    assert torch.equal(s2["preview"][:, :12], torch.full((12, 12, 3), 0.5))
    assert torch.equal(s2["preview"][:, 12:], scene.split("test").images[0])


def test_to_uint8_rounds_to_nearest():
    """uint8 = floor(clamp(x, 0, 1) * 255 + 0.5): 0.5 -> 128, 0.2 -> 51, 1.2 -> 255, -1 -> 0, 0.001 -> 0."""
    x = torch.tensor([0.5, 0.2, 1.2, -1.0, 0.001, 0.999]).reshape(1, 6, 1)
    assert to_uint8(x).reshape(-1).tolist() == [128, 51, 255, 0, 0, 255]


# --------------------------------------------------------------------------------------- logger
def test_ema_closed_form():
    """EMA with decay d: first value as is, then d * old + (1 - d) * new; keys are independent."""
    ema = EMA(decay=0.9)
    assert ema.update({"a": 10.0}) == {"a": 10.0}
    assert ema.update({"a": 0.0, "b": 4.0})["a"] == pytest.approx(9.0)
    out = ema.update({"a": 20.0})
    assert out["a"] == pytest.approx(0.9 * 9.0 + 0.1 * 20.0) and out["b"] == 4.0


def test_metrics_logger_rows_and_cut_off_row(tmp_path):
    """One JSON object per line with the step first; non-finite values as strings; a row cut off by a kill is
    dropped on reopening so the next row starts on its own line."""
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(3, {"loss": 0.5, "n": 2, "bad": float("nan"), "inf": float("inf")})
    logger.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 3, "loss": 0.5, "n": 2.0, "bad": "nan", "inf": "inf"}]
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(5, {"loss": 0.25})
    logger.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 5]


def test_rays_are_drawn_from_the_motion_map_from_the_kinematic_start(tiny_scene, tmp_path):
    """--train_dynamic_ray_fraction 0.5 of 64 rays: none before --kin_start (3), 32 from it on."""
    trainer = Trainer(_cfg(tiny_scene, tmp_path, "--train_dynamic_ray_fraction", "0.5", "--kin_start", "3",
                           "--train_rays", "64", "--train_min_rays", "64", "--train_max_rays", "64"))
    assert trainer.n_rays == 64
    assert [trainer._n_dynamic_rays(s) for s in (0, 2, 3, 10)] == [0, 0, 32, 32]


def test_training_targets_are_recomposited_on_the_random_background(tiny_scene, tmp_path):
    """A pixel stored as rgb = c a + (1 - a) scene_bg (alpha a) becomes c a + (1 - a) bg on the step's random bg."""
    trainer = Trainer(_cfg(tiny_scene, tmp_path, "--data_random_background", "true"))
    white = trainer.scene.background.to(torch.float32)
    a = torch.tensor([0.5, 1.0, 0.0, 0.25])
    c = torch.tensor([[0.4, 0.2, 0.8]] * 4)
    batch = {"rgb": c * a[:, None] + (1 - a[:, None]) * white, "alpha": a}
    target, bg = trainer.make_target(batch)
    assert bg.shape == (4, 3) and not torch.allclose(bg, white.expand(4, 3))
    torch.testing.assert_close(target, c * a[:, None] + (1 - a[:, None]) * bg)


def test_a_resume_with_other_learning_rates_names_the_groups_that_changed(tiny_scene, tmp_path, caplog):
    base = _cfg(tiny_scene, tmp_path, "--iters", "2", "--train_lr_grid", "0.01")
    Trainer(base).fit()
    resumed = Trainer(_cfg(tiny_scene, tmp_path, "--iters", "4", "--train_lr_grid", "0.03", "--resume", "auto"))
    with caplog.at_level("INFO", logger="kinfield"):
        resumed.maybe_resume()
    line = next(r.getMessage() for r in caplog.records if "not the checkpoint" in r.getMessage())
    assert "dynamic grid 0.03 / 0 (checkpoint: 0.01 / 0)" in line and "nets" not in line  # the nets kept theirs
    assert {g["name"] for g in resumed.optimizer.param_groups} >= {"dynamic grid", "dynamic nets", "kinematic grid"}
    assert next(g for g in resumed.optimizer.param_groups if g["name"] == "dynamic grid")["initial_lr"] == 0.03


@pytest.mark.parametrize("threshold", ["-1", "1e30"])
def test_the_step_logs_how_many_physics_points_its_terms_had(tiny_scene, tmp_path, threshold):
    """physics_points: the points the physics terms were evaluated at (at most --kin_max_physics_points 16); with a
    density threshold no point passes, 0 (the terms then read 0, as converged ones would)."""
    cfg = _cfg(tiny_scene, tmp_path, "--kin_start", "0", "--kin_physics_start", "0", "--kin_integrity_weight", "0.1",
               "--kin_max_physics_points", "16", "--kin_physics_sigma_threshold", threshold)
    trainer = Trainer(cfg)
    logs = trainer.train_step()
    assert "loss/integrity" in logs
    assert logs["physics_points"] == (16.0 if threshold == "-1" else 0.0)
    if threshold != "-1":
        assert logs["loss/integrity"] == 0.0


def test_physics_terms_without_points_for_fifty_steps_are_named_once(tiny_scene, tmp_path, caplog):
    """50 steps in a row without a physics point: one warning (once per session) with the last step's reason; a step
    with points restarts the count. The reasons name the option that took the points: the density threshold, or the
    dynamic render weight of the warp rays' samples."""
    cfg = _cfg(tiny_scene, tmp_path, "--kin_start", "0", "--kin_physics_start", "0", "--kin_integrity_weight", "0.1",
               "--kin_physics_sigma_threshold", "1e30")
    trainer = Trainer(cfg)
    why = "no warped sample inside the dynamic field's box has a dynamic density above --kin_physics_sigma_threshold"
    with caplog.at_level("WARNING", logger="kinfield"):
        for step in range(49):
            assert trainer.train_step()["physics_points"] == 0.0
            trainer.step += 1
        trainer._note_missing_physics(49, 3, "")  # (a step with points)
        for step in range(50, 99):
            trainer._note_missing_physics(step, 0, why + " 1e+30")
        assert "no point" not in caplog.text
        for step in range(99, 200):
            trainer._note_missing_physics(step, 0, why + " 1e+30")
    assert caplog.text.count("the physics terms have had no point for 50 steps") == 1
    assert "step 99:" in caplog.text and why in caplog.text
    trainer = Trainer(_cfg(tiny_scene, tmp_path / "b", "--kin_start", "0", "--kin_physics_start", "0",
                           "--kin_integrity_weight", "0.1", "--kin_dyn_weight_threshold", "1e30"))
    ctx_logs = trainer.train_step()
    assert ctx_logs["physics_points"] == 0.0
    trainer._steps_without_physics = 49
    with caplog.at_level("WARNING", logger="kinfield"):
        trainer.train_step()
    assert "dynamic render weight above --kin_dyn_weight_threshold 1e+30" in caplog.text


def test_an_interrupt_on_the_last_step_still_records_the_training_time(tiny_scene, tmp_path):
    """Ctrl-C during the last step: the step completes and is saved, and the run's training time (train_time.txt, a
    train_time_s row) is written then; the rerun, with nothing to train, leaves them (it would never write them)."""
    cfg = _cfg(tiny_scene, tmp_path, "--iters", "2", "--train_progress", "false")
    trainer = Trainer(cfg)
    real = trainer.train_step

    def step_then_ctrl_c():
        logs = real()
        if trainer.step == 1:  # (the last step in progress: fit advances the counter after it)
            trainer._signal = 2
        return logs

    trainer.train_step = step_then_ctrl_c
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_0000002.pt"]
    seconds = float((tmp_path / "train_time.txt").read_text())
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_time_s"] for r in rows if "train_time_s" in r] == [pytest.approx(seconds, abs=0.05)]
    Trainer(cfg).fit()
    assert (tmp_path / "train_time.txt").read_text() == f"{seconds:.1f}\n"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_0000002.pt"]
