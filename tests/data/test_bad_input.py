"""Every kind of bad input raises DatasetError naming the offending file and a fix."""
import json
import pickle
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from kinfield.data import DatasetError, load_dnerf, load_scene, load_tiny_npz

EYE = np.eye(4).tolist()


def frame(i, split="train", **over):
    f = {"file_path": f"./{split}/r_{i:03d}", "time": i / 2, "transform_matrix": EYE}
    f.update(over)
    return f


def make_scene(root: Path, n=3, size=(4, 4), split="train", meta=None, frames=None):
    """A valid tiny scene (``n`` RGBA PNGs); ``meta`` / ``frames`` override the JSON content."""
    (root / split).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        iio.imwrite(root / split / f"r_{i:03d}.png", np.full(size + (4,), 200, np.uint8))
    m = {"camera_angle_x": 0.7, "frames": frames if frames is not None else [frame(i, split) for i in range(n)]}
    if meta is not None:
        m = meta
    (root / f"transforms_{split}.json").write_text(json.dumps(m))
    return root


def raises(fn, *names):
    """Call ``fn``; assert DatasetError whose message holds every name in ``names`` and a fix."""
    with pytest.raises(DatasetError) as ei:
        fn()
    msg = str(ei.value)
    for n in names:
        assert n in msg, f"{n!r} not in message: {msg}"
    assert "fix:" in msg and ei.value.fix
    return msg


def test_error_type():
    e = DatasetError("/a/b.json", "broken", "repair it")
    assert isinstance(e, ValueError) and "/a/b.json" in str(e) and "repair it" in str(e)
    e2 = pickle.loads(pickle.dumps(e))
    assert str(e2) == str(e) and e2.path == "/a/b.json"


def test_missing_folder(tmp_path):
    raises(lambda: load_dnerf(tmp_path / "nope"), "nope", "does not exist")


def test_missing_train_json(tmp_path):
    make_scene(tmp_path, split="val")
    raises(lambda: load_dnerf(tmp_path), "transforms_train.json", "transforms_val.json")


def test_malformed_json(tmp_path):
    make_scene(tmp_path)
    (tmp_path / "transforms_train.json").write_text('{\n  "camera_angle_x": 0.7,\n  "frames": [,]\n}')
    raises(lambda: load_dnerf(tmp_path), "transforms_train.json", "line 3", "column")


@pytest.mark.parametrize("key", ["camera_angle_x", "frames"])
def test_missing_top_level_key(tmp_path, key):
    meta = {"camera_angle_x": 0.7, "frames": [frame(0)]}
    del meta[key]
    make_scene(tmp_path, n=1, meta=meta)
    raises(lambda: load_dnerf(tmp_path), "transforms_train.json", key)


@pytest.mark.parametrize("key", ["file_path", "time", "transform_matrix"])
def test_missing_frame_key(tmp_path, key):
    frames = [frame(0), frame(1)]
    del frames[1][key]
    make_scene(tmp_path, n=2, frames=frames)
    raises(lambda: load_dnerf(tmp_path), "transforms_train.json", "frame 1", key)


def test_missing_image(tmp_path):
    make_scene(tmp_path, n=2)
    (tmp_path / "train" / "r_001.png").unlink()
    raises(lambda: load_dnerf(tmp_path), "transforms_train.json", str(tmp_path / "train" / "r_001.png"))


@pytest.mark.parametrize("content, words", [(b"not a png at all", "not a recognised"), ("cut", "truncated")])
def test_unreadable_image(tmp_path, content, words):
    make_scene(tmp_path, n=2, size=(16, 16))
    p = tmp_path / "train" / "r_001.png"
    if content == "cut":  # noise does not compress, so half the file ends inside the pixel data
        iio.imwrite(p, np.random.default_rng(0).integers(0, 256, (16, 16, 4)).astype(np.uint8))
        content = p.read_bytes()[: p.stat().st_size // 2]
    p.write_bytes(content)
    raises(lambda: load_dnerf(tmp_path), "r_001.png", "cannot decode", words)


def test_mixed_image_sizes(tmp_path):
    make_scene(tmp_path, n=2, size=(4, 4))
    iio.imwrite(tmp_path / "train" / "r_001.png", np.zeros((6, 4, 4), np.uint8))
    raises(lambda: load_dnerf(tmp_path), "r_000.png", "r_001.png", "4x6", "4x4")


def test_mixed_image_sizes_across_splits(tmp_path):
    make_scene(tmp_path, n=2, size=(4, 4))
    make_scene(tmp_path, n=1, size=(8, 8), split="test")
    raises(lambda: load_dnerf(tmp_path), "test/r_000.png", "train/r_000.png")
    assert load_dnerf(tmp_path, splits=("train",)).split("train").num_frames == 2


@pytest.mark.parametrize(
    "matrix, words",
    [
        ([[1.0, 0.0, 0.0, 0.0]] * 3, "[3, 4]"),
        ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, float("nan")], [0, 0, 0, 1]], "NaN"),
        ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, float("inf")], [0, 0, 0, 1]], "NaN or inf"),
        ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0.1, 1]], "last row"),
        ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], "x"], "numeric"),
        ([[1, 0, 0, "0.62"], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "not a string, boolean"),
        ([[True, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "not a string, boolean"),
        ([[1, 0, 0, None], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "numeric"),
        ([[1, 0, 0, 10**400], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "too large"),
        ([[0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 0, 3], [0, 0, 0, 1]], "not a rotation"),  # a degenerate camera
        ([[-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "not a rotation"),  # mirrored
        ([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "not a rotation"),  # sheared
    ],
)
def test_bad_transform_matrix(tmp_path, matrix, words):
    make_scene(tmp_path, n=2, frames=[frame(0), frame(1, transform_matrix=matrix)])
    raises(lambda: load_dnerf(tmp_path), "transforms_train.json", "frame 1", words)


@pytest.mark.parametrize("text", ["1" + "0" * 400, "1" + "0" * 5000, '"0.7"', "true"],
                         ids=["past_float_range", "past_int_digit_limit", "string", "bool"])
def test_bad_camera_angle(tmp_path, text):
    """Huge integer literals (past float range, or past Python's int-parsing limit) are errors, not crashes."""
    make_scene(tmp_path, n=1)
    text = '{"camera_angle_x": %s, "frames": %s}' % (text, json.dumps([frame(0)]))
    (tmp_path / "transforms_train.json").write_text(text)
    raises(lambda: load_dnerf(tmp_path), "transforms_train.json")


def test_last_row_within_tolerance_is_accepted(tmp_path):
    m = np.eye(4)
    m[3, 2] = 1e-7
    make_scene(tmp_path, n=1, frames=[frame(0, transform_matrix=m.tolist())])
    assert load_dnerf(tmp_path).split("train").num_frames == 1


@pytest.mark.parametrize("t", [1.5, -0.1, float("nan"), float("inf"), "0.5", None, True,
                               pytest.param(10**400, id="huge_int"), pytest.param(-(10**400), id="huge_negative_int")])
def test_bad_time(tmp_path, t):
    make_scene(tmp_path, n=2, frames=[frame(0), frame(1, time=t)])
    raises(lambda: load_dnerf(tmp_path), "transforms_train.json", "frame 1", "time")


@pytest.mark.parametrize("split", ["train", "val"])
def test_empty_split(tmp_path, split):
    make_scene(tmp_path, n=1)
    if split != "train":
        make_scene(tmp_path, n=0, split=split)
    else:
        make_scene(tmp_path, n=0, frames=[])
    raises(lambda: load_dnerf(tmp_path), f"transforms_{split}.json", "no frames")


def test_present_but_broken_val_is_an_error(tmp_path):
    make_scene(tmp_path, n=1)
    (tmp_path / "transforms_val.json").write_text("[1, 2")
    raises(lambda: load_dnerf(tmp_path), "transforms_val.json", "line 1")


@pytest.mark.parametrize("ds", [0.5, 0, -2, float("nan"), "2", True])
def test_bad_downscale(tmp_path, ds):
    make_scene(tmp_path, n=1)
    raises(lambda: load_dnerf(tmp_path, downscale=ds), str(tmp_path), "downscale")


def test_bad_background_and_aabb(tmp_path):
    make_scene(tmp_path, n=1)
    raises(lambda: load_dnerf(tmp_path, background=(1.0, 2.0, 0.0)), str(tmp_path), "background")
    raises(lambda: load_dnerf(tmp_path, aabb=(1, 1, 1, 0, 0, 0)), str(tmp_path), "aabb")


# ---------------------------------------------------------------------------------------------
# npz and dispatch
# ---------------------------------------------------------------------------------------------
def good_npz(n=81, **over):
    d = {
        "images": np.zeros((n, 4, 4, 3), np.float32),
        "poses": np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
        "times": np.linspace(0, 1, n).astype(np.float32),
        "focal": np.float64(5.0),
    }
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def test_npz_valid_small(tmp_path):
    p = tmp_path / "s.npz"
    np.savez(p, **good_npz())
    s = load_tiny_npz(p)
    assert [s.split(k).num_frames for k in ("train", "val", "test")] == [50, 11, 20]


@pytest.mark.parametrize(
    "over, words",
    [
        ({"focal": None}, "focal"),
        ({"images": np.zeros((81, 4, 4), np.float32)}, "images"),
        ({"images": np.full((81, 4, 4, 3), np.nan, np.float32)}, "NaN"),
        ({"images": np.full((81, 4, 4, 3), 255.0, np.float32)}, "expected [0, 1]"),  # 0..255 floats: not clipped to white
        ({"times": np.full(81, 2.0, np.float32)}, "times[0]"),
        ({"poses": np.zeros((81, 3, 4), np.float32)}, "poses"),
        ({"poses": np.zeros((81, 4, 4), np.float32)}, "last row"),
        ({"focal": np.float64(-1)}, "focal"),
    ],
)
def test_npz_bad_content(tmp_path, over, words):
    p = tmp_path / "bad.npz"
    np.savez(p, **good_npz(**over))
    raises(lambda: load_tiny_npz(p), "bad.npz", words)


def test_npz_focal_as_size1_array(tmp_path):
    p = tmp_path / "f.npz"
    np.savez(p, **good_npz(focal=np.array([5.0])))
    s = load_tiny_npz(p, downscale=2)
    assert s.split("train").intrinsics[0, 0].item() == pytest.approx(2.5) and s.meta["focal"] == 5.0


def test_npz_overlapping_train_and_test(tmp_path):
    p = tmp_path / "leak.npz"
    np.savez(p, **good_npz(n=10), i_train=np.arange(7), i_val=np.arange(7, 8), i_test=np.arange(6, 10))
    raises(lambda: load_tiny_npz(p), "leak.npz", "'i_train' and 'i_test' share 1 frame(s) [6]")


def test_npz_unknown_split(tmp_path):
    p = tmp_path / "short.npz"
    np.savez(p, **good_npz(n=10))
    raises(lambda: load_tiny_npz(p), "short.npz", "i_train")
    np.savez(p, **good_npz(n=10), i_train=np.arange(6), i_val=np.arange(6, 8), i_test=np.arange(8, 10))
    assert load_tiny_npz(p).split("val").num_frames == 2


def test_npz_missing_or_unreadable(tmp_path):
    raises(lambda: load_tiny_npz(tmp_path / "none.npz"), "none.npz", "does not exist")
    p = tmp_path / "junk.npz"
    p.write_bytes(b"garbage")
    raises(lambda: load_tiny_npz(p), "junk.npz", "cannot read")
    raises(lambda: load_tiny_npz(tmp_path, downscale=0), str(tmp_path), "downscale")


def test_load_scene_dispatch_errors(tmp_path):
    raises(lambda: load_scene(tmp_path / "missing"), "missing", "does not exist")
    (tmp_path / "x.txt").write_text("hi")
    raises(lambda: load_scene(tmp_path / "x.txt"), "x.txt", ".npz")
    raises(lambda: load_scene(tmp_path), "transforms_train.json")
    p = tmp_path / "s.npz"
    np.savez(p, **good_npz())
    raises(lambda: load_scene(p, background=(1, 1, 1)), "s.npz", "background")
    assert load_scene(p, background=(0, 0, 0)).meta["format"] == "tiny_npz"


def test_load_scene_hint_only_names_npz_scenes(tmp_path):
    """A folder without transforms_train.json suggests its .npz scenes, never ground truth such as motion_gt.npz."""
    np.savez(tmp_path / "motion_gt.npz", times=np.linspace(0, 1, 3), positions=np.zeros((3, 2, 3)))
    (tmp_path / "broken.npz").write_bytes(b"garbage")
    msg = raises(lambda: load_scene(tmp_path), "transforms_train.json")
    assert "motion_gt.npz" not in msg and "broken.npz" not in msg and "pass that .npz" not in msg
    np.savez(tmp_path / "scene.npz", **good_npz(n=10))
    msg = raises(lambda: load_scene(tmp_path), "transforms_train.json", "scene.npz")
    assert "motion_gt.npz" not in msg and "broken.npz" not in msg


def test_mixed_rgb_and_rgba_images_are_named(tmp_path, caplog):
    make_scene(tmp_path, n=3)
    iio.imwrite(tmp_path / "train" / "r_001.png", np.full((4, 4, 3), 10, np.uint8))  # its alpha lost
    with caplog.at_level("WARNING", logger="kinfield"):
        scene = load_dnerf(tmp_path, background=(1.0, 1.0, 1.0))
    assert "1 of the scene's 3 images have no alpha channel (e.g." in caplog.text and "r_001.png" in caplog.text
    split = scene.split("train")
    assert split.alphas[1].eq(1).all() and np.allclose(split.images[1].numpy(), 10 / 255, atol=1e-6)  # as saved
    caplog.clear()
    make_scene(tmp_path, n=3)  # all RGBA again: no warning
    with caplog.at_level("WARNING", logger="kinfield"):
        load_dnerf(tmp_path)
    assert "alpha channel" not in caplog.text


def test_a_test_split_listing_training_images_is_named(tmp_path, caplog):
    make_scene(tmp_path, n=3)
    (tmp_path / "transforms_test.json").write_text((tmp_path / "transforms_train.json").read_text())  # copied
    with caplog.at_level("WARNING", logger="kinfield"):
        load_dnerf(tmp_path, splits=("train", "test"))
    assert "transforms_test.json lists 3 of its 3 images that transforms_train.json lists too" in caplog.text


def test_image_files_with_uppercase_extensions_load_and_other_case_is_named(tmp_path):
    make_scene(tmp_path, n=2)
    (tmp_path / "train" / "r_001.png").rename(tmp_path / "train" / "r_001.PNG")
    assert load_dnerf(tmp_path).split("train").num_frames == 2  # file_path without extension: .PNG found too
    (tmp_path / "train" / "r_001.PNG").rename(tmp_path / "train" / "R_001.png")
    raises(lambda: load_dnerf(tmp_path), "r_001", "R_001.png is there, with other letter case")
