"""Tests of the synthetic scene generator (kinfield.data.synthetic)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from kinfield.data.synthetic import (
    PRESETS,
    WORLD_BOUND,
    SyntheticSceneSpec,
    build_scene,
    ensure_scene,
    forward_smooth_path,
    load_synthetic,
    render_forward_video,
    spec_of_scene,
    write_nsff_scene,
    write_scene,
)

REPO = Path(__file__).resolve().parents[2]
TINY = PRESETS["tiny"]
# big enough that a facing surface point is well inside its sphere's silhouette
MEDIUM = dataclasses.replace(PRESETS["demo"], resolution=48, n_train=4, n_val=1, n_test=2, n_query_per_object=32)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_scene(TINY, tmp_path_factory.mktemp("tiny") / "scene")


@pytest.fixture(scope="module")
def medium_dir(tmp_path_factory) -> Path:
    return write_scene(MEDIUM, tmp_path_factory.mktemp("medium") / "scene")


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load_frames(root: Path):
    """Yield (split, index, c2w [4,4], time, rgba uint8 [H,W,4], camera_angle_x)."""
    for split in ("train", "val", "test"):
        doc = json.loads((root / f"transforms_{split}.json").read_text())
        for i, fr in enumerate(doc["frames"]):
            rgba = iio.imread(root / (fr["file_path"] + ".png"))
            yield split, i, np.array(fr["transform_matrix"]), fr["time"], rgba, doc["camera_angle_x"]


def _project(points: np.ndarray, c2w: np.ndarray, width: int, height: int, angle_x: float):
    """World points [N,3] -> integer pixel (col, row) [N] each, and camera-space depth [N]."""
    focal = 0.5 * width / np.tan(0.5 * angle_x)
    w2c = np.linalg.inv(c2w)
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -pc[:, 2]
    u = 0.5 * width + focal * pc[:, 0] / depth
    v = 0.5 * height - focal * pc[:, 1] / depth
    return np.floor(u).astype(int), np.floor(v).astype(int), depth


# ----------------------------------------------------------------------------------------- tests
def test_tiny_is_deterministic(tiny_dir, tmp_path):
    again = write_scene(TINY, tmp_path / "again")
    a, b = _files(tiny_dir), _files(again)
    assert sorted(a) == sorted(b)
    assert any(k.endswith(".png") for k in a) and "motion_gt.npz" in a
    for k in a:
        assert a[k] == b[k], f"{k} differs between two writes of the same spec"
    other = build_scene(dataclasses.replace(TINY, seed=1))
    assert not np.allclose(other.cameras["train"], build_scene(TINY).cameras["train"])


@pytest.mark.parametrize("preset", ["demo", "projectile", "spin", "pulse"])
def test_motion_matches_finite_differences(preset):
    scene = build_scene(PRESETS[preset])
    pts, _ = scene.query_points(t0=0.3, n_per_object=16)
    times = np.array([0.05, 0.3, 0.62, 0.95])
    h = 1e-3
    offsets = np.array([-2, -1, 0, 1, 2]) * h
    m = scene.motion(pts, 0.3, (times[:, None] + offsets[None, :]).reshape(-1))
    p = m["positions"].reshape(len(times), 5, -1, 3)
    ex = {k: m[k].reshape(len(times), 5, -1, 3)[:, 2] for k in ("velocity", "acceleration", "jerk")}
    v_fd = (p[:, 3] - p[:, 1]) / (2 * h)
    a_fd = (p[:, 3] - 2 * p[:, 2] + p[:, 1]) / h**2
    j_fd = (p[:, 4] - 2 * p[:, 3] + 2 * p[:, 1] - p[:, 0]) / (2 * h**3)
    for name, fd, tol in (("velocity", v_fd, 1e-4), ("acceleration", a_fd, 1e-3), ("jerk", j_fd, 1e-2)):
        scale = max(1.0, float(np.abs(ex[name]).max()))
        err = float(np.abs(fd - ex[name]).max())
        assert err < tol * scale, f"{preset} {name}: max |fd - exact| = {err} (scale {scale})"
    # derivatives of the exact lower-order quantities, too
    vel = m["velocity"].reshape(len(times), 5, -1, 3)
    acc = m["acceleration"].reshape(len(times), 5, -1, 3)
    np.testing.assert_allclose((vel[:, 3] - vel[:, 1]) / (2 * h), ex["acceleration"], atol=1e-3 * max(1, np.abs(ex["acceleration"]).max()))
    np.testing.assert_allclose((acc[:, 3] - acc[:, 1]) / (2 * h), ex["jerk"], atol=1e-3 * max(1, np.abs(ex["jerk"]).max()))
    # the material points stay on their sphere
    for k, obj in enumerate(scene.moving):
        sel = m["object_index"] == k
        d = np.stack([obj.surface_distance(m["positions"][i][sel], t) for i, t in enumerate(
            (times[:, None] + offsets[None, :]).reshape(-1))])
        assert d.max() < 1e-9


def test_rigid_closed_form():
    scene = build_scene(PRESETS["demo"])
    pts, ids = scene.query_points(t0=0.5)
    times = np.linspace(0, 1, 7)
    m = scene.motion(pts, 0.5, times)
    for k, obj in enumerate(scene.moving):
        sel = ids == k
        w = np.asarray(obj.omega)
        c, c1, c2, _ = obj.center(times)
        rel = m["positions"][:, sel] - c[:, None]
        np.testing.assert_allclose(m["velocity"][:, sel], c1[:, None] + np.cross(w, rel), atol=1e-10)
        np.testing.assert_allclose(m["acceleration"][:, sel], c2[:, None] + np.cross(w, np.cross(w, rel)), atol=1e-10)
        np.testing.assert_allclose(m["jerk"][:, sel], np.cross(w, np.cross(w, np.cross(w, rel))), atol=1e-10)
        if obj.motion_type in ("projectile", "both"):
            assert np.linalg.norm(obj.gravity) > 0 and np.allclose(c2, obj.gravity)
    assert {o.motion_type for o in scene.moving} == {"both", "spin"}


@pytest.mark.parametrize("preset", ["demo", "pulse"])
def test_texture_moves_with_gt_material_points(preset):
    """The rendered texture is attached to the GT material points (a point keeps its colour)."""
    scene = build_scene(PRESETS[preset])
    pts, ids = scene.query_points(t0=0.5)
    times = np.linspace(0, 1, 9)
    pos = scene.motion(pts, 0.5, times)["positions"]
    for k, obj in enumerate(scene.moving):
        albedo = np.stack([obj.surface(pos[i][ids == k], t)[1] for i, t in enumerate(times)])
        assert np.all(albedo == albedo[4:5]), f"{obj.name}: texture does not follow the GT motion"


def test_static_points_and_far_points():
    scene = build_scene(TINY)
    ground = np.array([[0.9, -1.0, -0.9], [-1.2, 1.1, -0.9]])
    m = scene.motion(ground, 0.2, [0.0, 0.5, 1.0])
    assert np.allclose(m["positions"], ground[None])
    for k in ("velocity", "acceleration", "jerk"):
        assert np.all(m[k] == 0)
    with pytest.raises(ValueError):
        scene.motion(np.array([[0.0, 0.0, 1.4]]), 0.2, [0.0])


def test_gt_projects_onto_foreground(medium_dir, tiny_dir):
    for root, check_points in ((medium_dir, True), (tiny_dir, False)):
        gt = np.load(root / "motion_gt.npz")
        times = gt["times"]
        n_checked = 0
        for split, i, c2w, t, rgba, angle in _load_frames(root):
            h, w = rgba.shape[:2]
            ti = int(np.argmin(np.abs(times - t)))
            assert abs(times[ti] - t) < 1e-6, f"{split} frame {i}: time {t} missing from the GT times"
            alpha = rgba[..., 3] / 255.0
            # every moving object's centre lands on a foreground pixel
            u, v, depth = _project(gt["centers"][ti].astype(np.float64), c2w, w, h, angle)
            assert np.all(depth > 0) and np.all((u >= 0) & (u < w) & (v >= 0) & (v < h))
            assert np.all(alpha[v, u] > 0.5), f"{root.name} {split} {i}: a centre projects onto background"
            if not check_points:
                continue
            pos = gt["positions"][ti].astype(np.float64)
            ctr = gt["centers"][ti][gt["object_id"]].astype(np.float64)
            normal = (pos - ctr) / np.linalg.norm(pos - ctr, axis=-1, keepdims=True)
            view = c2w[:3, 3] - pos
            facing = np.einsum("nd,nd->n", normal, view / np.linalg.norm(view, axis=-1, keepdims=True)) > 0.5
            u, v, _ = _project(pos[facing], c2w, w, h, angle)
            assert np.all((u >= 0) & (u < w) & (v >= 0) & (v < h))
            assert np.all(alpha[v, u] > 0.5), f"{split} {i}: a facing GT point projects onto background"
            n_checked += int(facing.sum())
        if check_points:
            assert n_checked > 50


def test_everything_stays_in_world_box(medium_dir):
    gt = np.load(medium_dir / "motion_gt.npz")
    assert np.allclose(gt["aabb"], [-WORLD_BOUND] * 3 + [WORLD_BOUND] * 3)
    lo = gt["centers"] - gt["radii"][..., None]
    hi = gt["centers"] + gt["radii"][..., None]
    assert lo.min() >= -WORLD_BOUND and hi.max() <= WORLD_BOUND
    assert np.abs(gt["positions"]).max() <= WORLD_BOUND
    ts = np.linspace(0, 1, 501)
    for name, spec in PRESETS.items():
        scene = build_scene(spec)  # runs scene.check()
        for obj in scene.moving:
            lo, hi = obj.extent(ts)
            assert lo.min() >= -WORLD_BOUND and hi.max() <= WORLD_BOUND, name
        for obj in scene.static:
            lo, hi = obj.extent()
            assert lo.min() >= -WORLD_BOUND and hi.max() <= WORLD_BOUND, name


def test_dnerf_format_and_gt_fields(tiny_dir):
    res = TINY.resolution
    train_times = None
    for split, n in (("train", TINY.n_train), ("val", TINY.n_val), ("test", TINY.n_test)):
        doc = json.loads((tiny_dir / f"transforms_{split}.json").read_text())
        assert isinstance(doc["camera_angle_x"], float) and 0.5 < doc["camera_angle_x"] < 1.0
        assert len(doc["frames"]) == n
        times = []
        for i, fr in enumerate(doc["frames"]):
            assert fr["file_path"] == f"./{split}/r_{i:03d}"
            assert 0.0 <= fr["time"] <= 1.0
            times.append(fr["time"])
            m = np.array(fr["transform_matrix"])
            assert m.shape == (4, 4) and np.allclose(m[3], [0, 0, 0, 1])
            assert np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-9)
            assert m[2, 3] > 0 and abs(np.linalg.norm(m[:3, 3]) - TINY.camera_radius) < 1e-9
            # looks at the origin: -z axis points from the camera towards (0, 0, 0)
            assert np.allclose(-m[:3, 2], -m[:3, 3] / np.linalg.norm(m[:3, 3]))
            img = iio.imread(tiny_dir / f"{split}/r_{i:03d}.png")
            assert img.shape == (res, res, 4) and img.dtype == np.uint8
        if split == "train":
            train_times = np.array(times)
            assert np.allclose(train_times, np.linspace(0, 1, n))
        else:
            assert not np.any(np.isclose(np.array(times)[:, None], train_times[None]))
    alpha = np.stack([f[4][..., 3] for f in _load_frames(tiny_dir)])
    assert (alpha == 0).any() and (alpha == 255).any()  # transparent background + solid objects
    gt = np.load(tiny_dir / "motion_gt.npz")
    times = gt["times"]
    assert times.dtype == np.float32 and np.all(np.diff(times) > 0) and times[0] >= 0 and times[-1] <= 1
    n = len(gt["query_points"])
    assert n == TINY.n_query_per_object * len(gt["object_names"])
    for k in ("positions", "velocity", "acceleration", "jerk"):
        assert gt[k].shape == (len(times), n, 3) and gt[k].dtype == np.float32
    assert gt["object_id"].shape == (n,) and set(gt["object_id"]) == set(range(len(gt["object_names"])))
    assert list(gt["motion_types"]) == ["both", "spin"]
    tq = int(np.argmin(np.abs(times - gt["query_time"])))
    assert abs(times[tq] - gt["query_time"]) < 1e-7
    np.testing.assert_allclose(gt["positions"][tq], gt["query_points"], atol=1e-6)
    meta = json.loads((tiny_dir / "scene_meta.json").read_text())
    assert meta["spec"] == TINY.to_dict() and meta["resolution"] == [res, res]


def test_refuses_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_scene(TINY, tmp_path)
    write_scene(TINY, tmp_path, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "x"
    assert (tmp_path / "transforms_train.json").exists()


def test_ensure_scene(tmp_path):
    out = tmp_path / "scene"
    ensure_scene(out, TINY)
    stamp = (out / "transforms_train.json").stat().st_mtime_ns
    os.utime(out / "transforms_train.json", ns=(stamp - 10**9, stamp - 10**9))
    ensure_scene(out, TINY)  # same spec: untouched
    assert (out / "transforms_train.json").stat().st_mtime_ns == stamp - 10**9
    with pytest.raises(FileExistsError, match="another synthetic scene"):  # another spec: never replaced
        ensure_scene(out, dataclasses.replace(TINY, seed=5))
    assert json.loads((out / "scene_meta.json").read_text())["spec"]["seed"] == TINY.seed
    meta = json.loads((out / "scene_meta.json").read_text())
    (out / "scene_meta.json").write_text(json.dumps({**meta, "generator_version": -1}))
    ensure_scene(out, TINY)  # the same spec from another generator version: rewritten
    assert json.loads((out / "scene_meta.json").read_text())["generator_version"] != -1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "transforms_train.json").write_text("{}")
    with pytest.raises(FileExistsError):
        ensure_scene(foreign, TINY)
    mine = tmp_path / "mine"  # a user's folder without transforms: nothing in it is touched
    (mine / "train").mkdir(parents=True)
    (mine / "train" / "my_photo.png").write_bytes(b"png")
    with pytest.raises(FileExistsError, match="left as it is"):
        ensure_scene(mine, TINY)
    assert (mine / "train" / "my_photo.png").read_bytes() == b"png"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (ensure_scene(empty, TINY) / "motion_gt.npz").exists()


def test_load_synthetic_in_memory():
    scene = load_synthetic(TINY)
    tr = scene.split("train")
    assert tuple(tr.images.shape) == (TINY.n_train, TINY.resolution, TINY.resolution, 3)
    assert tuple(tr.alphas.shape) == (TINY.n_train, TINY.resolution, TINY.resolution)
    assert tuple(tr.poses.shape) == (TINY.n_train, 4, 4) and tuple(tr.intrinsics.shape) == (TINY.n_train, 4)
    assert abs(scene.frame_dt - 1 / (TINY.n_train - 1)) < 1e-12
    assert float(tr.images.min()) >= 0 and float(tr.images.max()) <= 1


def test_cli(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, str(REPO / "tools/make_scene.py"), str(out), "--preset", "tiny",
           "--resolution", "12", "--n-train", "3", "--n-val", "1", "--n-test", "1"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert iio.imread(out / "train/r_002.png").shape == (12, 12, 4)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode != 0 and "overwrite" in r.stderr
    (tmp_path / "a_file").write_text("")  # an OUT_DIR that cannot be made: one error line, no traceback
    cmd[2] = str(tmp_path / "a_file" / "scene")
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and "a part of the path is a file: choose another OUT_DIR" in r.stderr


@pytest.mark.parametrize("field, value", [("n_train", 1), ("resolution", 0), ("supersample", 0), ("seed", -1),
                                          ("query_time", 2.0), ("n_query_per_object", 0), ("camera_radius", float("nan")),
                                          ("camera_mode", "sideways")])
def test_invalid_spec_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"{field} must be .*, got {value!r}"):
        build_scene(dataclasses.replace(TINY, **{field: value}))


def test_invalid_spec():
    with pytest.raises(ValueError):
        build_scene(SyntheticSceneSpec(preset="nope"))
    with pytest.raises(ValueError, match="n_rig must be >= 1"):
        build_scene(dataclasses.replace(PRESETS["forward_tiny"], n_rig=0))


def test_a_bad_spec_with_overwrite_keeps_the_scene_there(tmp_path):
    write_scene(TINY, tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="resolution"):
        write_scene(dataclasses.replace(TINY, resolution=0), tmp_path, overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# ------------------------------------------------------------------------------ forward-facing rig
FWD_TINY = PRESETS["forward_tiny"]


def test_random_mode_spec_dict_unchanged():
    d = TINY.to_dict()
    assert "camera_mode" not in d and "n_rig" not in d  # scene_meta.json of random scenes stays as before
    assert SyntheticSceneSpec.from_dict(d) == TINY
    f = PRESETS["forward"].to_dict()
    assert f["camera_mode"] == "forward" and f["n_rig"] == 12
    assert SyntheticSceneSpec.from_dict(json.loads(json.dumps(f))) == PRESETS["forward"]
    with pytest.raises(ValueError, match="camera_mode"):
        build_scene(dataclasses.replace(TINY, camera_mode="orbit"))


def test_forward_rig_geometry_and_teleporting_frames():
    spec = PRESETS["forward"]
    scene = build_scene(spec)
    rig = scene.rig
    assert rig.shape == (12, 4, 4)
    centres = rig[:, :3, 3]
    assert np.allclose(np.linalg.norm(centres, axis=1), spec.camera_radius, atol=spec.rig_stagger)
    mid = centres.mean(axis=0)
    assert np.abs(centres - mid).max() <= spec.rig_half_width + spec.rig_stagger + 1e-6  # small baseline
    assert np.all(centres[:, 1] < 0)                                                       # all on one side
    for c2w in rig:  # each looks at the origin (OpenGL: down -z), upright (x axis horizontal)
        assert np.allclose(-c2w[:3, 2], -c2w[:3, 3] / np.linalg.norm(c2w[:3, 3]), atol=1e-9)
        assert abs(c2w[2, 0]) < 1e-9
    assert np.array_equal(scene.rig_index["train"], np.arange(spec.n_train) % 12)
    assert np.allclose(scene.cameras["train"], rig[np.arange(spec.n_train) % 12])
    assert np.allclose(scene.times["train"], np.linspace(0, 1, spec.n_train))
    assert np.all(scene.rig_index["test"] != scene.rig_index["train"][np.round(scene.times["test"] * 23).astype(int)])
    assert any(type(o).__name__ == "TexturedWall" for o in scene.static)


def test_smooth_path_and_video(tmp_path):
    spec = PRESETS["forward"]
    path = forward_smooth_path(spec, 9, half_width=1.0)
    steps = np.linalg.norm(np.diff(path[:, :3, 3], axis=0), axis=1)
    assert steps.max() < 1.5 * steps.min() and steps.max() < 0.5  # continuous, no teleporting
    assert abs(path[0, 0, 3] + path[-1, 0, 3]) < 1e-9 and path[0, 0, 3] < -0.9
    r = render_forward_video(spec, tmp_path / "v.mp4", n_frames=5, width=64, height=48)
    assert r["c2w"].shape == (5, 4, 4) and r["frames"].shape == (5, 48, 64, 3) and r["moving_masks"].any()
    assert r["focal"] == pytest.approx(0.5 * 64 / np.tan(0.5 * spec.camera_angle_x))
    frames = iio.imread(tmp_path / "v.mp4")
    assert frames.shape == (5, 48, 64, 3)
    assert np.abs(frames.mean(-1) - r["frames"].mean(-1)).mean() < 8  # lossy (chroma subsampled) but close


def test_render_ids_and_depth():
    scene = build_scene(FWD_TINY)
    c2w, res, f = scene.rig[0], 24, scene.focal
    rgba, ids = scene.render(c2w, 0.3, res, res, f, return_ids=True)
    assert np.array_equal(rgba, scene.render(c2w, 0.3, res, res, f))
    assert ids.shape == (res, res, FWD_TINY.supersample ** 2)
    assert np.allclose(rgba[..., 3], (ids >= 0).mean(axis=-1))
    depth, pid = scene.trace_pixels(c2w, 0.3, res, res, f)
    hit = np.isfinite(depth)
    assert np.array_equal(hit, pid >= 0) and depth[hit].min() > 1.0
    # back-projected pixel depths lie on the surface of the object that was hit
    rows, cols = np.nonzero(hit)
    z = depth[rows, cols]
    cam = np.stack([(cols + 0.5 - res / 2) / f * z, -(rows + 0.5 - res / 2) / f * z, -z], axis=-1)
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    for k, obj in enumerate(scene.objects):
        sel = pid[rows, cols] == k
        if sel.any():
            assert obj.surface_distance(world[sel], 0.3).max() < 1e-6, obj.name


@pytest.fixture(scope="module")
def nsff_dir(tmp_path_factory) -> Path:
    return write_nsff_scene(FWD_TINY, tmp_path_factory.mktemp("nsff") / "scene")


def test_nsff_layout_and_determinism(nsff_dir, tmp_path):
    from kinfield.preprocess.writer import check_layout, llff_to_opengl

    info = check_layout(nsff_dir)
    n, c, res = FWD_TINY.n_train, FWD_TINY.n_rig, FWD_TINY.resolution
    assert (info["n_frames"], info["height"], info["width"]) == (n, res, res)
    scene = build_scene(FWD_TINY)
    pb = np.load(nsff_dir / "poses_bounds.npy")
    assert np.allclose(llff_to_opengl(pb), scene.rig[np.arange(n) % c])
    assert np.allclose(pb[:, 14], scene.focal)
    rig = np.load(nsff_dir / "rig_poses.npy")
    assert rig.shape == (c, 3, 5) and np.allclose(rig[np.arange(n) % c].reshape(n, 15), pb[:, :15])
    for i in range(n):
        for cam in range(c):
            assert iio.imread(nsff_dir / "mv_images" / f"{i:05d}" / f"cam{cam:02d}.png").shape == (res, res, 3)
        same = nsff_dir / "mv_images" / f"{i:05d}" / f"cam{i % c:02d}.png"
        assert same.read_bytes() == (nsff_dir / "images" / f"{i:03d}.png").read_bytes()
        mv_mask = iio.imread(nsff_dir / "mv_masks" / f"{i:05d}" / f"cam{i % c:02d}.png")
        assert np.array_equal(mv_mask, iio.imread(nsff_dir / "motion_masks" / f"{i:03d}.png"))
        # sparse depths are exact: back-projected, they lie on the scene's surfaces at the frame time
        with np.load(nsff_dir / "sparse_depth" / f"{i:03d}.npz") as z:
            uv, depth = z["uv"].astype(np.float64), z["depth"].astype(np.float64)
        c2w = scene.rig[i % c]
        cam_pts = np.stack([(uv[:, 0] - res / 2) / scene.focal * depth, -(uv[:, 1] - res / 2) / scene.focal * depth,
                            -depth], axis=-1)
        world = cam_pts @ c2w[:3, :3].T + c2w[:3, 3]
        dist = np.min(np.stack([o.surface_distance(world, float(scene.times["train"][i])) for o in scene.objects]), 0)
        assert dist.max() < 1e-4
        assert np.mean((depth > pb[i, 15]) & (depth < pb[i, 16])) > 0.95
    assert any(iio.imread(p).any() for p in sorted((nsff_dir / "motion_masks").glob("*.png")))
    assert (nsff_dir / "motion_gt.npz").is_file() and (nsff_dir / "flow_i1" / "000_fwd.npz").is_file()
    meta = json.loads((nsff_dir / "scene_meta.json").read_text())
    assert meta["frame_rig_camera"] == (np.arange(n) % c).tolist() and meta["format"] == "nsff"
    again = write_nsff_scene(FWD_TINY, tmp_path / "again")
    a, b = _files(nsff_dir), _files(again)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k] == b[k], f"{k} differs between two writes of the same spec"


def test_nsff_needs_forward_mode_and_cli(tmp_path):
    with pytest.raises(ValueError, match="forward"):
        write_nsff_scene(TINY, tmp_path / "x")
    out = tmp_path / "cli"
    cmd = [sys.executable, str(REPO / "tools/make_scene.py"), str(out), "--preset", "forward", "--format", "nsff",
           "--resolution", "16", "--n-train", "4", "--n-rig", "3", "--no-flow"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert np.load(out / "rig_poses.npy").shape == (3, 3, 5) and not (out / "flow_i1").exists()
    assert iio.imread(out / "mv_images" / "00003" / "cam02.png").shape == (16, 16, 3)
    r = subprocess.run(cmd[:3] + ["--preset", "demo", "--format", "nsff", "--camera-mode", "random"],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 2 and "forward" in r.stderr


def test_spec_of_scene_reads_the_written_spec_and_names_the_missing_file(tiny_dir, tmp_path):
    assert spec_of_scene(tiny_dir, world_frame=True) == TINY
    with pytest.raises(ValueError, match=r"scene_meta.json not found: this needs a run on a synthetic scene"):
        spec_of_scene(tmp_path)
    forward = tmp_path / "fwd"
    forward.mkdir()
    spec = PRESETS["forward_tiny"]
    (forward / "scene_meta.json").write_text(json.dumps({"spec": spec.to_dict()}))
    assert spec_of_scene(forward) == spec
    with pytest.raises(ValueError, match="forward-facing scenes train in a rescaled frame"):
        spec_of_scene(forward, world_frame=True)


def test_val_and_test_times_sit_at_quarter_and_half_points_between_training_frames():
    from kinfield.data.synthetic import split_times

    st = split_times(5, 2, 2)  # training frames at 0, 0.25, 0.5, 0.75, 1
    np.testing.assert_allclose(st["train"], [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(st["val"], [0.3125, 0.8125])  # a quarter into intervals 1 and 3
    np.testing.assert_allclose(st["test"], [0.375, 0.875])  # their midpoints
