"""The exact kinematics of the synthetic scenes (kinfield.fields.analytic.ExactKinematics) against the
generator's ground truth, and the motion score reaching 0 with them (the metric can meet its target)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kinfield.config import parse_args
from kinfield.data.synthetic import PRESETS, _layout, build_scene, write_scene
from kinfield.fields.analytic import ExactKinematics
from kinfield.motion import score_against_ground_truth
from kinfield.train.trainer import build_model

REPO = Path(__file__).resolve().parents[2]


def test_taylor_displacement_matches_the_generator():
    """Over tau = 0.02 the cubic Taylor step of the exact v, a, j matches the true motion to O(tau^4)."""
    objs = _layout("demo")
    kin = ExactKinematics(objs)
    for obj in objs:
        c = obj.center(np.array([0.3]))[0][0]
        p0 = c + obj.radius * np.array([0.6, 0.0, 0.8])
        truth = obj.motion(p0[None], 0.3, np.array([0.3, 0.32]))["positions"]
        d = kin.displacement(torch.tensor(p0[None]), torch.tensor([0.3], dtype=torch.float64),
                             torch.tensor([0.02], dtype=torch.float64))
        assert np.abs(d.numpy()[0] - (truth[1, 0] - truth[0, 0])).max() < 1e-5
    with pytest.raises(ValueError, match="rigid"):
        ExactKinematics(_layout("pulse"))


def test_motion_score_is_zero_for_the_exact_field_and_the_baseline_for_none(tmp_path):
    scene = write_scene(PRESETS["tiny"], tmp_path / "scene")
    cfg = parse_args(["--config", str(REPO / "configs" / "debug.yaml"), "--scene", str(scene), "--device", "cpu"])
    model = build_model(cfg, torch.tensor([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]), 0.2)
    model.kinematic = ExactKinematics(build_scene(PRESETS["tiny"]).moving, frame_dt=0.2)
    exact = score_against_ground_truth(model, scene / "motion_gt.npz", substeps=8)
    assert exact["epe_mean"] < 2e-3 * exact["epe_zero_motion"] and exact["velocity_rel_err"] < 1e-4
    assert exact["velocity_cosine"] == pytest.approx(1.0, abs=1e-5) and exact["velocity_speed_ratio"] == pytest.approx(1.0, rel=1e-4)
    model.kinematic.scale = 0.5  # too slow, the right way: half the speed at cosine 1, for each object
    slow = score_against_ground_truth(model, scene / "motion_gt.npz")
    assert slow["velocity_speed_ratio"] == pytest.approx(0.5, rel=1e-4) and slow["velocity_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert slow["velocity_rel_err"] == pytest.approx(0.5, rel=1e-4)
    for name in ("ball", "top"):
        assert slow[f"velocity_speed_ratio_{name}"] == pytest.approx(0.5, rel=1e-4)
    model.kinematic.scale = 0.0
    still = score_against_ground_truth(model, scene / "motion_gt.npz")
    assert still["epe_mean"] == pytest.approx(still["epe_zero_motion"], rel=1e-5)
    assert still["velocity_rel_err"] == pytest.approx(1.0)
