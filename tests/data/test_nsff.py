"""The NSFF / forward-facing reader: synthetic rig scenes, Balloon1, and bad input."""
from pathlib import Path

import imageio.v3 as iio
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


def _set(path: Path, index, value):
    """Overwrite ``index`` of the .npy array at ``path`` with ``value``."""
    a = np.load(path)
    a[index] = value
    np.save(path, a)


def _npz(path: Path, **over):
    """Rewrite the .npz at ``path`` with arrays replaced by ``over`` (``None`` drops one)."""
    arrays = dict(np.load(path))
    arrays.update(over)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def _disp(d: Path, bad):
    """A disp/ folder of one (24, 24) map per frame, frame 0's replaced by ``bad`` (bytes or an array)."""
    (d / "disp").mkdir()
    for i in range(PRESETS["forward_tiny"].n_train):
        np.save(d / "disp" / f"{i:03d}.npy", np.ones((24, 24), np.float32))
    p = d / "disp" / "000.npy"
    if isinstance(bad, bytes):
        p.write_bytes(bad)
    else:
        np.save(p, bad)


PB, RIG, SPARSE, FLOW = "poses_bounds.npy", "rig_poses.npy", "sparse_depth/000.npz", "flow_i1/000_fwd.npz"
DAMAGE = {  # name: (damage the copied scene d, the file the error must name, words of the message)
    "no_poses": (lambda d: (d / PB).unlink(), PB, "file not found"),
    "bad_shape": (lambda d: np.save(d / PB, np.load(d / PB)[:, :15]), PB, "expected (N >= 2, 17)"),
    "nan": (lambda d: _set(d / PB, (0, 3), np.nan), PB, "non-finite"),
    "pb_garbage": (lambda d: (d / PB).write_bytes(b"garbage"), PB, "cannot read"),
    "pb_width_zero": (lambda d: _set(d / PB, (slice(None), 9), 0.0), PB, "w, f > 0"),
    "pb_negative_focal": (lambda d: _set(d / PB, (2, 14), -50.0), PB, "row 2"),
    "pb_near_above_far": (lambda d: _set(d / PB, (1, 15), 1e3), PB, "0 < near < far"),
    "pb_near_zero": (lambda d: _set(d / PB, (1, 15), 0.0), PB, "0 < near < far"),
    "pb_degenerate_rotation": (lambda d: _set(d / PB, (3, [0, 1, 2, 5, 6, 7, 10, 11, 12]), 0.0), PB,
                               "row 3: its 3x3 block"),
    "missing_image": (lambda d: sorted((d / "images").iterdir())[-1].unlink(), "images", "images but"),
    "bad_flow": (lambda d: (d / FLOW).write_bytes(b"not an npz"), FLOW, "unreadable flow file"),
    "truncated_flow": (lambda d: (d / FLOW).write_bytes((d / FLOW).read_bytes()[:300]), FLOW, "unreadable flow file"),
    "few_masks": (lambda d: sorted((d / "motion_masks").iterdir())[-1].unlink(), "motion_masks", "motion masks for"),
    "sparse_garbage": (lambda d: (d / SPARSE).write_bytes(b"garbage"), SPARSE, "unreadable sparse-depth file"),
    "sparse_no_depth": (lambda d: _npz(d / SPARSE, depth=None), SPARSE, "'depth'"),
    "sparse_uv_shape": (lambda d: _npz(d / SPARSE, uv=np.ones((3, 2)), depth=np.ones(5), weight=np.ones(5)),
                        SPARSE, "'uv' has shape (3, 2), expected (5, 2)"),
    "sparse_weight_nan": (lambda d: _npz(d / SPARSE, weight=np.full(len(np.load(d / SPARSE)["depth"]), np.nan)),
                          SPARSE, "'weight' has NaN"),
    "sparse_weight_negative": (lambda d: _npz(d / SPARSE, weight=-np.ones(len(np.load(d / SPARSE)["depth"]))),
                               SPARSE, "negative"),
    "rig_garbage": (lambda d: (d / RIG).write_bytes(b"garbage"), RIG, "cannot read rig poses"),
    "rig_shape": (lambda d: np.save(d / RIG, np.zeros(7)), RIG, "shape (7,)"),
    "rig_nan": (lambda d: _set(d / RIG, (0, 0, 3), np.nan), RIG, "NaN"),
    "disp_1d": (lambda d: _disp(d, np.ones(24)), "disp/000.npy", "shape (24,)"),
    "disp_garbage": (lambda d: _disp(d, b"garbage"), "disp/000.npy", "cannot read disparity map"),
    "disp_nan": (lambda d: _disp(d, np.full((24, 24), np.nan)), "disp/000.npy", "NaN"),
    "disp_aspect": (lambda d: _disp(d, np.ones((24, 48))), "disp/000.npy", "48x24"),
    # a mask of another aspect ratio is refused, not stretched (a flow is resampled with its vectors scaled per axis)
    "mask_aspect": (lambda d: iio.imwrite(sorted((d / "motion_masks").iterdir())[0], np.zeros((10, 50), np.uint8)),
                    "motion_masks/000.png", "motion mask is 50x10, the images are 24x24"),
    "sparse_uv_outside": (lambda d: _npz(d / SPARSE, uv=np.load(d / SPARSE)["uv"] * 4), SPARSE,
                          "'uv' lie outside the 24x24 images"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_bad_input(fwd_dir, tmp_path, damage):
    """Every corrupt / inconsistent file stops with a DatasetError naming that file and a fix."""
    from kinfield.data import load_nsff

    d = _copy_scene(fwd_dir, tmp_path / "s")
    hurt, name, message = DAMAGE[damage]
    hurt(d)
    with pytest.raises(DatasetError) as e:
        load_nsff(d)
    msg = str(e.value)
    assert str(d / name) in msg and message in msg and "fix:" in msg, msg


def test_world_transform_validates_poses_bounds(fwd_dir, tmp_path):
    d = _copy_scene(fwd_dir, tmp_path / "s")
    _set(d / PB, (0, 9), 0.0)
    with pytest.raises(DatasetError, match="poses_bounds.npy"):
        world_transform(d)


def test_frames_in_natural_order(tmp_path):
    """0.png .. 11.png (and every other per-frame folder) are read as 0, 1, 2, ..., 11, not 0, 1, 10, 11, 2."""
    import imageio.v3 as iio

    from kinfield.preprocess.writer import make_poses_bounds

    n = 12
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 0, 3] = np.linspace(-0.1, 0.1, n)
    np.save(tmp_path / PB, make_poses_bounds(c2w, (4.0, 4.0, 4.0), np.tile([1.0, 5.0], (n, 1))))
    for sub in ("images", "motion_masks", "disp"):
        (tmp_path / sub).mkdir()
    for i in range(n):
        iio.imwrite(tmp_path / "images" / f"{i}.png", np.full((4, 4, 3), 20 * i, np.uint8))
        iio.imwrite(tmp_path / "motion_masks" / f"{i}.png", np.full((4, 4), 255 * (i >= 6), np.uint8))
        np.save(tmp_path / "disp" / f"{i}.npy", np.full((4, 4), float(i)))
    train = load_scene(tmp_path).split("train")
    assert [round(float(v) * 255) for v in train.images[:, 0, 0, 0]] == [20 * i for i in range(n)]
    assert train.paths[2].endswith("2.png") and train.paths[10].endswith("10.png")
    assert train.extras["motion_mask"][:, 0, 0].tolist() == [float(i >= 6) for i in range(n)]
    assert train.extras["disp"][:, 0, 0].tolist() == [float(i) for i in range(n)]


def test_a_downscaled_motion_mask_marks_every_pixel_with_some_motion(tmp_path):
    """METHOD 5: after area downscaling a pixel is dynamic when any of it moved (> 1e-3), so the static terms never
    train on a partly moving pixel: one moving source pixel of a 4x4 block makes its 2x2-downscaled pixel dynamic."""
    import imageio.v3 as iio

    from kinfield.preprocess.writer import make_poses_bounds

    n = 2
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 0, 3] = [-0.1, 0.1]
    np.save(tmp_path / PB, make_poses_bounds(c2w, (8.0, 8.0, 8.0), np.tile([1.0, 5.0], (n, 1))))
    for sub in ("images", "motion_masks"):
        (tmp_path / sub).mkdir()
    mask = np.zeros((8, 8), np.uint8)
    mask[0, 0] = 255  # 1/16 of the top-left 4x4 block
    mask[4:, 4:] = 255  # the whole bottom-right block
    for i in range(n):
        iio.imwrite(tmp_path / "images" / f"{i}.png", np.full((8, 8, 3), 100, np.uint8))
        iio.imwrite(tmp_path / "motion_masks" / f"{i}.png", mask)
    got = load_scene(tmp_path, downscale=4).split("train").extras["motion_mask"][0]
    assert got.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_missing_flow_files_are_named(fwd_dir, tmp_path, caplog):
    """A flow file gone from flow_i1/ (or files named another way) leaves those frames without the flow prior: the
    loader says which, instead of skipping them silently; the frames whose flow is there keep it."""
    import shutil

    copy = tmp_path / "scene"
    shutil.copytree(fwd_dir, copy)
    (copy / "flow_i1" / "003_fwd.npz").unlink()
    with caplog.at_level("WARNING", logger="kinfield"):
        train = load_scene(copy, splits=("train",)).split("train")
    assert "1 of the 7 forward flow files are missing (003_fwd.npz)" in caplog.text
    assert "backward" not in caplog.text
    mask = train.extras["flow_fwd_mask"]
    assert float(mask[3].sum()) == 0.0 and float(mask[2].sum()) > 0.0
