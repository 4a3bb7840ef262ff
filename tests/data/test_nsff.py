"""The NSFF / forward-facing reader: synthetic rig scenes, Balloon1, and bad input."""
from pathlib import Path

import numpy as np
import pytest
import torch

from kinfield.data import DatasetError, load_scene
from kinfield.data.nsff import llff_to_opengl, world_transform
from kinfield.data.synthetic import PRESETS, write_nsff_scene

BALLOON = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "nvidia_balloon1"


@pytest.fixture(scope="module")
def fwd_dir(tmp_path_factory):
    return write_nsff_scene(PRESETS["forward_tiny"], tmp_path_factory.mktemp("fwd") / "scene")


def test_llff_columns_to_opengl():
    r = np.eye(3)
    pose = np.concatenate([np.stack([-r[:, 1], r[:, 0], r[:, 2]], 1), np.zeros((3, 1)), np.ones((3, 1))], 1)
    assert np.allclose(llff_to_opengl(pose[None])[0, :3, :3], np.eye(3))


def test_reads_synthetic_rig_scene(fwd_dir):
    scene = load_scene(fwd_dir)
    spec = PRESETS["forward_tiny"]
    train = scene.split("train")
    assert train.images.shape == (spec.n_train, spec.resolution, spec.resolution, 3)
    assert scene.ndc is not None and scene.frame_dt == pytest.approx(1.0 / (spec.n_train - 1))
    assert torch.allclose(train.times, torch.linspace(0, 1, spec.n_train))
    for key in ("flow_fwd", "flow_fwd_mask", "flow_bwd", "motion_mask", "sparse_depth"):
        assert key in train.extras and train.extras[key].shape[:3] == train.images.shape[:3]
    # NSFF protocol: every rig camera at every time except the training view
    test = scene.split("test")
    assert test.num_frames == spec.n_train * spec.n_rig - spec.n_train
    assert "dynamic_mask" in test.extras
    # recentred: the mean camera sits at the origin and looks down -z
    assert float(train.poses[:, :3, 3].mean(0).norm()) < 1e-4
    assert float(train.poses[:, :3, 2].mean(0)[2]) > 0.9


def test_world_transform_maps_gt_into_training_frame(fwd_dir):
    """The rig poses of the file, pushed through world_transform, equal the loader's test poses."""
    scale, m = world_transform(fwd_dir)
    rig = llff_to_opengl(np.load(fwd_dir / "rig_poses.npy").reshape(-1, 3, 5))
    centre = rig[1, :3, 3] * scale @ m[:3, :3].T + m[:3, 3]
    test = load_scene(fwd_dir).split("test")
    assert np.allclose(test.poses[0, :3, 3].numpy(), centre, atol=1e-5)  # first held-out view: frame 0, camera 1


@pytest.mark.skipif(not BALLOON.is_dir(), reason="../shared/data/nvidia_balloon1 not present")
def test_balloon1():
    scene = load_scene(BALLOON, downscale=8)
    train = scene.split("train")
    assert train.images.shape == (12, 68, 120, 3)
    assert "disp" in train.extras and bool(torch.isfinite(train.extras["disp"]).all())
    assert scene.ndc[1:3] == (120.0, 68.0)
    assert "test" not in scene.splits


def _copy_scene(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage, message", [
    ("no_poses", "poses_bounds.npy: file not found"),
    ("bad_shape", "expected (N >= 2, 17)"),
    ("nan", "non-finite"),
    ("missing_image", "images but"),
    ("bad_flow", "unreadable flow file"),
    ("few_masks", "motion masks for"),
])
def test_bad_input(fwd_dir, tmp_path, damage, message):
    d = _copy_scene(fwd_dir, tmp_path / "s")
    pb = d / "poses_bounds.npy"
    if damage == "no_poses":
        pb.unlink()
    elif damage == "bad_shape":
        np.save(pb, np.load(pb)[:, :15])
    elif damage == "nan":
        a = np.load(pb)
        a[0, 3] = np.nan
        np.save(pb, a)
    elif damage == "missing_image":
        sorted((d / "images").iterdir())[-1].unlink()
    elif damage == "bad_flow":
        (d / "flow_i1" / "000_fwd.npz").write_bytes(b"not an npz")
    elif damage == "few_masks":
        sorted((d / "motion_masks").iterdir())[-1].unlink()
    with pytest.raises(DatasetError) as e:
        from kinfield.data import load_nsff

        load_nsff(d)
    assert message in str(e.value) and "fix:" in str(e.value)
