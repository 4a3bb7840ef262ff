"""Forward-facing captures end to end: NSFF layout -> NDC training with priors -> render, eval, motion."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BALLOON = REPO / ".." / "shared" / "data" / "nvidia_balloon1"
SMALL = ["--device", "cpu", "--resume", "none", "--train_rays", "128", "--train_target_samples", "4096",
         "--static_grid_n_levels", "4", "--static_grid_log2_hashmap_size", "12", "--dynamic_grid_n_levels", "4",
         "--dynamic_grid_log2_hashmap_size", "12", "--render_occupancy_resolution", "16", "--train_progress", "false",
         "--train_eval_lpips", "false", "--train_save_every", "3", "--train_log_every", "1", "--render_step_size", "0.05"]


@pytest.fixture(scope="module")
def fwd_run(tmp_path_factory):
    from kinfield.cli import main_train
    from kinfield.data.synthetic import PRESETS, write_nsff_scene

    root = tmp_path_factory.mktemp("fwd")
    scene = write_nsff_scene(PRESETS["forward_tiny"], root / "scene")
    run = root / "run"
    # every kinematic and prior term active within 6 steps
    code = main_train([str(scene), str(REPO / "configs" / "nvidia_cpu.yaml"), "--out", str(run), "--iters", "6",
                       "--downscale", "1", "--prior_static_pretrain_steps", "2", "--kin_physics_start", "3",
                       "--kin_normal_start", "3", "--kin_unlock_acceleration", "3", "--prior_entropy_start", "3", *SMALL])
    assert code == 0
    return run


def test_training_logs_every_prior_term(fwd_run):
    rows = [json.loads(line) for line in (fwd_run / "metrics.jsonl").read_text().splitlines()]
    logged = set().union(*rows)
    for term in ("static_pretrain", "rgb", "flow_prior", "static_masked", "dynamic_masked", "entropy", "warp_photo",
                 "integrity", "transport"):
        assert f"loss/{term}" in logged, term
    for row in rows:
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))
    # NSFF protocol: 4 rig cameras x 8 times, less the 8 training views
    test = json.loads((fwd_run / "metrics.json").read_text())["test"]
    assert test["n_images"] == 24 and math.isfinite(test["psnr"])
    assert math.isfinite(test["psnr_dynamic"]) and math.isfinite(test["ssim_dynamic"])  # moving-region metrics


def test_eval_can_subsample_views(fwd_run, tmp_path):
    from kinfield.data import load_scene
    from kinfield.train.evaluate import evaluate_split
    from kinfield.train.run import load_run

    run = load_run(fwd_run, device="cpu")
    scene = load_scene(run.cfg.data.scene, splits=("train", "test"))
    res = evaluate_split(run.model, scene, "test", tmp_path, use_lpips=False, max_views=5)
    assert res["n_images"] == 5 and res["n_views_in_split"] == 24
    assert sorted(p.name for p in (tmp_path / "renders" / "test").glob("*.png")) == \
        ["000.png", "006.png", "012.png", "017.png", "023.png"]


def test_render_and_motion(fwd_run, capsys):
    from kinfield.cli import main_eval_motion, main_render

    out = fwd_run / "vids"
    code = main_render([str(fwd_run), "--path", "fixed-view", "--frames", "3", "--outputs", "rgb,depth,velocity",
                        "--device", "cpu", "--out", str(out), "--no-progress"])
    assert code == 0
    assert len(list(out.glob("fixed-view_*.*"))) == 3
    capsys.readouterr()
    assert main_eval_motion([str(fwd_run), "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert math.isfinite(scores["epe_mean"]) and scores["n_points"] == 32
    import numpy as np

    table = np.genfromtxt(fwd_run / "motion_epe_by_time.csv", delimiter=",", names=True)
    assert table["epe_all"].shape == (scores["n_times"],)
    assert table["epe_all"].mean() == pytest.approx(scores["epe_mean"], rel=1e-4)


def test_motion_ground_truth_moved_out_of_its_scene_is_still_scored_in_the_training_frame(fwd_run, tmp_path,
                                                                                          capsys):
    """The GT of a forward-facing scene is mapped into the rescaled frame the run trained in, whichever folder it
    is read from: the run's scene decides, not the GT file's folder."""
    import shutil

    from kinfield.cli import main_eval_motion
    from kinfield.motion import score_against_ground_truth
    from kinfield.train.run import load_run

    scene = Path(load_run(fwd_run, device="cpu").cfg.data.scene)
    copy = tmp_path / "elsewhere" / "motion_gt.npz"
    copy.parent.mkdir()
    shutil.copy(scene / "motion_gt.npz", copy)
    capsys.readouterr()
    assert main_eval_motion([str(fwd_run), "--device", "cpu"]) == 0
    own = json.loads(capsys.readouterr().out)
    assert main_eval_motion([str(fwd_run), "--device", "cpu", "--gt", str(copy)]) == 0
    moved = json.loads(capsys.readouterr().out)
    assert moved["epe_mean"] == pytest.approx(own["epe_mean"], rel=1e-6)
    assert moved["epe_zero_motion"] == pytest.approx(own["epe_zero_motion"], rel=1e-6)
    # without the scene that defines the frame, scoring refuses rather than compare in the wrong frame
    with pytest.raises(ValueError, match="poses_bounds.npy"):
        score_against_ground_truth(load_run(fwd_run, device="cpu").model, copy)


def test_forward_facing_runs_are_not_orbited(fwd_run, tmp_path, capsys):
    from kinfield.cli import main_render

    out = tmp_path / "v"
    assert main_render([str(fwd_run), "--path", "orbit", "--frames", "2", "--device", "cpu", "--out", str(out)]) == 2
    assert "forward-facing" in capsys.readouterr().err and not out.exists()
    assert main_render([str(fwd_run), "--path", "bullet-time", "--frames", "2", "--outputs", "rgb", "--device", "cpu",
                        "--out", str(out), "--no-progress"]) == 0  # a spiral at the frozen time
    assert len(list(out.glob("bullet-time_rgb*"))) == 1


@pytest.mark.skipif(not BALLOON.is_dir(), reason="../shared/data/nvidia_balloon1 not present")
def test_balloon1_trains_and_renders_without_nans(tmp_path):
    import torch

    from kinfield.cli import main_train
    from kinfield.render.video import render_frames
    from kinfield.train.run import load_run

    run = tmp_path / "run"
    code = main_train([str(BALLOON), str(REPO / "configs" / "nvidia_cpu.yaml"), "--out", str(run), "--iters", "4",
                       "--downscale", "16", "--kin_physics_start", "2", "--train_eval_split", "", *SMALL])
    assert code == 0
    loaded = load_run(run, device="cpu")
    assert loaded.model.space.is_ndc
    from kinfield.data import load_scene

    sp = load_scene(BALLOON, downscale=16).split("train")
    frames = render_frames(loaded.model, sp.poses[:1].expand(2, 4, 4), torch.tensor([0.0, 1.0]), sp.intrinsics[0],
                           sp.height, sp.width, torch.zeros(3), ["rgb", "depth"], progress=False)
    for name in ("rgb", "depth"):
        assert all(np.isfinite(np.asarray(f, dtype=np.float64)).all() for f in frames[name])


def test_the_flow_prior_moves_the_samples_the_warps_move(fwd_run, tmp_path):
    """--kin_dyn_weight_threshold picks the samples F_K moves in the warps and in the flow prior alike (the prior had
    its own fixed 1e-4)."""
    from kinfield.config import parse_args
    from kinfield.train import Trainer

    cfg = parse_args(["--config", str(REPO / "configs" / "nvidia_cpu.yaml"), "--scene", str(fwd_run.parent / "scene"),
                      "--out", str(tmp_path / "run"), "--kin_dyn_weight_threshold", "0.25", *SMALL])
    trainer = Trainer(cfg)
    assert trainer.priors is not None and trainer.priors.thresh == 0.25


def test_points_outside_a_forward_facing_box_are_shown_in_its_frame(fwd_run, tmp_path, capsys):
    """The outside-the-box note of export_trajectories on an NDC run gives the point in NDC too, next to the NDC box
    (it printed the world point beside the NDC box, which read as inside), and says which frame --points are in."""
    import numpy as np

    from kinfield.cli import main_export

    pts = tmp_path / "pts.txt"
    np.savetxt(pts, np.array([[0.0, 0.0, -2.0], [0.0, 0.0, 5.0]]))  # in front of the cameras, and behind them
    capsys.readouterr()
    assert main_export([str(fwd_run), "--points", str(pts), "--time", "0.5", "--times", "3", "--out",
                        str(tmp_path / "t.npz"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "of the 2 --points lie outside the run's scene box [-1.5, -1.5, -1.0, 1.5, 1.5, 1.0] (NDC; e.g. point" in err
    assert ", in NDC [" in err and "rescaled, recentred world frame" in err


def test_a_scene_ground_truth_is_drawn_in_the_run_frame(fwd_run, tmp_path, monkeypatch):
    """--overlay-tracks with a forward-facing scene's motion_gt.npz (written in the generator's frame, unlike exports,
    which are in the run's rescaled, recentred frame): its positions are drawn mapped into the run's frame,
    p -> s R p + c with (s, [R | c]) = world_transform(scene), as eval_motion scores them."""
    import numpy as np

    import kinfield.render.overlay as overlay
    from kinfield.cli import main_render
    from kinfield.data.nsff import world_transform

    scene = fwd_run.parent / "scene"
    seen = []
    real = overlay.draw_tracks
    monkeypatch.setattr(overlay, "draw_tracks", lambda frame, pose, intr, tracks, t: seen.append(tracks) or
                        real(frame, pose, intr, tracks, t))
    assert main_render([str(fwd_run), "--path", "fixed-view", "--frames", "2", "--outputs", "rgb", "--device", "cpu",
                        "--out", str(tmp_path / "v"), "--no-progress", "--overlay-tracks",
                        str(scene / "motion_gt.npz")]) == 0
    scale, m = world_transform(scene)
    with np.load(scene / "motion_gt.npz") as z:
        expected = z["positions"].astype(np.float64) @ (m[:3, :3] * scale).T + m[:3, 3]
    assert seen and np.allclose(seen[0]["positions"], expected, atol=1e-5)
    assert not np.allclose(expected, np.load(scene / "motion_gt.npz")["positions"], atol=1e-3)  # (a real change)
