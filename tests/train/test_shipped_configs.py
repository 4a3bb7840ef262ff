"""Every shipped config trains: a step with each of its loss terms switched on runs and gives finite values.

The GPU configs (``dnerf.yaml``, ``nvidia.yaml``) are otherwise only parsed on a CPU-only machine; this runs their grids,
marching and term settings (the occupancy grid coarser, the batch small) on the tiny synthetic scenes.
"""
import math
from pathlib import Path

import pytest
import torch

from kinfield.config import parse_train_args
from kinfield.data.synthetic import PRESETS, write_nsff_scene, write_scene
from kinfield.train import Trainer

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))
# every term from the first step (the configs start them over hundreds or thousands of steps)
EVERY_TERM_ON = ["--kin_start", "0", "--kin_physics_start", "0", "--kin_normal_start", "0", "--kin_unlock_acceleration",
                 "0", "--kin_unlock_jerk", "0", "--prior_static_pretrain_steps", "0", "--prior_entropy_start", "0",
                 "--prior_distortion_start", "0", "--kin_physics_sigma_threshold", "-1"]
KINEMATIC_TERMS = {"warp_photo", "warp_photo_inter", "cycle", "integrity", "transport", "rigidity", "normal",
                   "higher_order"}
PRIOR_TERMS = {"flow_prior", "static_masked", "dynamic_masked", "entropy", "distortion"}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return {"dnerf": write_scene(PRESETS["tiny"], root / "dnerf"),
            "forward": write_nsff_scene(PRESETS["forward_tiny"], root / "forward")}


ON_GPU = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                          reason="needs a CUDA GPU")])


@pytest.mark.parametrize("device", ["cpu", ON_GPU])
@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_config_trains_a_step_with_every_term(name, device, scenes, tmp_path):
    """(On a GPU: with the CUDA kernels, tinycudann and nerfacc where they are installed, as a user's run takes them.)"""
    torch.manual_seed(0)
    forward = name.startswith("nvidia")
    cfg = parse_train_args([str(scenes["forward" if forward else "dnerf"]), str(REPO / "configs" / name), "--out",
                            str(tmp_path / "run"), "--resume", "none", "--device", device, "--downscale", "1",
                            "--train_rays", "64", "--train_min_rays", "32", "--render_occupancy_resolution", "32",
                            "--train_progress", "false", *EVERY_TERM_ON])
    trainer = Trainer(cfg)
    logs = {}
    for _ in range(2):
        logs = trainer.train_step()
        trainer.step += 1
    assert "skipped_nonfinite" not in logs
    terms = {k.split("/", 1)[1] for k in logs if k.startswith("loss/")}
    assert all(math.isfinite(logs[f"loss/{t}"]) for t in terms)
    if cfg.kin.enabled:
        assert KINEMATIC_TERMS <= terms, sorted(KINEMATIC_TERMS - terms)
        assert logs["physics_points"] > 0
    if forward:  # (the synthetic capture has no flow where OpenCV is missing, e.g. on a GPU machine)
        expected = PRIOR_TERMS if (scenes["forward"] / "flow_i1").is_dir() else PRIOR_TERMS - {"flow_prior"}
        assert expected <= terms, sorted(expected - terms)
