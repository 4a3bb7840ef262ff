"""Loader values against hand-written inputs whose cameras, colours and times are known exactly:
D-NeRF folders, the tiny npz, the NSFF / LLFF layout, the ray batcher and the in-memory synthetic
scene. Every expectation is a closed form written out here (never the function under test)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kinfield.data import RayBatcher, load_scene
from kinfield.data.dnerf import load_dnerf
from kinfield.data.scene import SceneSplit
from kinfield.data.synthetic import PRESETS, load_synthetic
from kinfield.data.tiny_npz import load_tiny_npz
from kinfield.geometry import pixel_rays


def _rot(ax_deg, az_deg):
    """R = Rz(az) @ Rx(ax) (float64) -- an arbitrary, non-symmetric rotation."""
    a, b = math.radians(ax_deg), math.radians(az_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    return rz @ rx


# ---------------------------------------------------------------------------------------------- D-NeRF
ANGLE = 0.8
H, W = 4, 6


def _write_dnerf(root: Path) -> np.ndarray:
    """Frame 0: RGBA; (0,0) opaque red, (0,1),(1,0),(1,1) transparent green, (2,2) red at alpha 128,
    the rest opaque black. Frame 1: RGB, all (51, 102, 153). Returns the two c2w matrices."""
    (root / "train").mkdir(parents=True)
    a = np.zeros((H, W, 4), np.uint8)
    a[..., 3] = 255
    a[0, 0] = (255, 0, 0, 255)
    a[0, 1] = a[1, 0] = a[1, 1] = (0, 255, 0, 0)
    a[2, 2] = (255, 0, 0, 128)
    Image.fromarray(a, "RGBA").save(root / "train" / "r_000.png")
    b = np.zeros((H, W, 3), np.uint8)
    b[...] = (51, 102, 153)
    Image.fromarray(b, "RGB").save(root / "train" / "r_001.png")
    poses = np.stack([np.eye(4), np.eye(4)])
    poses[0, :3, :3], poses[0, :3, 3] = _rot(30, 50), (0.5, -1.0, 3.0)
    poses[1, :3, :3], poses[1, :3, 3] = _rot(-70, 10), (-2.0, 0.25, 1.0)
    frames = [{"file_path": f"./train/r_00{i}", "time": t, "transform_matrix": poses[i].tolist()}
              for i, t in enumerate((0.0, 0.25))]
    (root / "transforms_train.json").write_text(json.dumps({"camera_angle_x": ANGLE, "frames": frames}))
    return poses


def test_dnerf_values_full_resolution(tmp_path):
    """fx = fy = 0.5 W / tan(angle / 2), (cx, cy) = (W/2, H/2) = (3, 2); poses exactly as written;
    straight-alpha colour c at alpha a on background bg -> a c + (1 - a) bg; an RGB frame next to RGBA
    ones gets alpha 1; 8-bit v -> v / 255."""
    poses = _write_dnerf(tmp_path)
    s = load_dnerf(tmp_path, splits=("train",), background=(0.0, 0.0, 1.0)).split("train")
    fx = 0.5 * W / math.tan(0.5 * ANGLE)
    assert torch.allclose(s.intrinsics, torch.tensor([fx, fx, 3.0, 2.0]).expand(2, 4), atol=1e-4)
    assert torch.allclose(s.poses.double(), torch.from_numpy(poses), atol=1e-6)
    img, alpha = s.images[0], s.alphas[0]
    assert torch.allclose(img[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(img[0, 1], torch.tensor([0.0, 0.0, 1.0]))
    a = 128 / 255
    assert torch.allclose(img[2, 2], torch.tensor([a, 0.0, 1.0 - a]), atol=1e-6)
    assert abs(float(alpha[2, 2]) - a) < 1e-6 and float(alpha[0, 1]) == 0.0
    assert torch.equal(s.alphas[1], torch.ones(H, W))
    assert torch.allclose(s.images[1], torch.tensor([0.2, 0.4, 0.6]).expand(H, W, 3), atol=1e-6)
    assert s.times.tolist() == [0.0, 0.25]


def test_dnerf_values_downscaled(tmp_path):
    """Downscale 2 -> 2x3: fx = 0.5 * 3 / tan(angle / 2) (the downscaled width), (cx, cy) = (1.5, 1);
    the top-left block averages premultiplied colours (red, 3 x transparent): rgb = (0.25, 0, 0), alpha
    0.25, then composited on blue: (0.25, 0, 0.75). Downscale 1.5 -> (round(4/1.5), round(6/1.5)) = (3, 4)."""
    _write_dnerf(tmp_path)
    s = load_dnerf(tmp_path, splits=("train",), downscale=2, background=(0.0, 0.0, 1.0)).split("train")
    fx = 0.5 * 3 / math.tan(0.5 * ANGLE)
    assert s.images.shape == (2, 2, 3, 3)
    assert torch.allclose(s.intrinsics[0], torch.tensor([fx, fx, 1.5, 1.0]), atol=1e-4)
    assert torch.allclose(s.images[0, 0, 0], torch.tensor([0.25, 0.0, 0.75]), atol=1e-6)
    assert abs(float(s.alphas[0, 0, 0]) - 0.25) < 1e-6
    s15 = load_dnerf(tmp_path, splits=("train",), downscale=1.5).split("train")
    assert s15.images.shape == (2, 3, 4, 3)
    assert torch.allclose(s15.intrinsics[0, 2:], torch.tensor([2.0, 1.5]))


# ---------------------------------------------------------------------------------------- tiny npz
def test_tiny_npz_values(tmp_path):
    """uint8 v -> v / 255 on black; f scales by new_w / w: downscale 2 of 4x6 with focal 10 -> (5, 5,
    1.5, 1); frame_dt = median spacing of the TRAIN times only ((0, 0.5) -> 0.5, not 0.3 of all)."""
    imgs = np.zeros((3, 4, 6, 3), np.uint8)
    imgs[...] = (51, 255, 0)
    p = tmp_path / "t.npz"
    np.savez(p, images=imgs, poses=np.tile(np.eye(4), (3, 1, 1)), times=np.array([0.0, 0.5, 0.6]),
             focal=np.float64(10.0), i_train=np.array([0, 1]), i_val=np.array([2]), i_test=np.array([2]))
    sc = load_tiny_npz(p, downscale=2)
    tr = sc.split("train")
    assert torch.allclose(tr.intrinsics, torch.tensor([5.0, 5.0, 1.5, 1.0]).expand(2, 4))
    assert torch.allclose(tr.images, torch.tensor([0.2, 1.0, 0.0]).expand(2, 2, 3, 3), atol=1e-6)
    assert torch.equal(sc.background, torch.zeros(3))
    assert sc.frame_dt == pytest.approx(0.5)


def test_tiny_npz_published_split(tmp_path):
    """81 frames without split arrays: train 0-49, val 50-60, test 61-80 (times i / 80)."""
    n = 81
    p = tmp_path / "t81.npz"
    np.savez(p, images=np.zeros((n, 2, 2, 3), np.float32), poses=np.tile(np.eye(4), (n, 1, 1)),
             times=np.arange(n) / 80.0, focal=np.float64(3.0))
    sc = load_tiny_npz(p)
    for name, (a, b) in (("train", (0, 50)), ("val", (50, 61)), ("test", (61, 81))):
        assert torch.allclose(sc.split(name).times, torch.arange(a, b, dtype=torch.float32) / 80.0)


# ---------------------------------------------------------------------------------------------- NSFF
NR = _rot(20, 30)  # common OpenGL rotation of every camera
T = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.5, 2.0]])
RIG_T = np.array([[2.0, 0.0, 0.0], [0.0, -1.0, 1.0]])
HWF = (8.0, 12.0, 20.0)  # poses computed for 8x12 images; the stored images are 4x6
SCALE = 1.0 / (2.0 * 0.75)  # nearest bound 2, LLFF bd_factor 0.75


def _llff(r, t):
    """LLFF 3x5 [down, right, back | t | hwf] of the OpenGL rotation r (x right, y up, z back)."""
    return np.concatenate([np.stack([-r[:, 1], r[:, 0], r[:, 2]], 1), t[:, None], np.array(HWF)[:, None]], 1)


def _write_nsff(root: Path):
    (root / "images").mkdir(parents=True)
    for i in range(3):
        if i == 0:  # RGBA: an opaque capture, alpha composited on black
            a = np.full((4, 6, 4), 255, np.uint8)
            a[0, 0] = (255, 255, 255, 0)
            Image.fromarray(a, "RGBA").save(root / "images" / f"{i:03d}.png")
        else:
            Image.fromarray(np.full((4, 6, 3), 200, np.uint8)).save(root / "images" / f"{i:03d}.png")
    rows = [np.concatenate([_llff(NR, T[i]).reshape(-1), [2.0 + i, 10.0]]) for i in range(3)]
    np.save(root / "poses_bounds.npy", np.stack(rows))
    (root / "sparse_depth").mkdir()
    np.savez(root / "sparse_depth" / "000.npz", uv=np.array([[4.5, 1.5]]), depth=np.array([2.0]),
             weight=np.array([1.0]))
    (root / "flow_i1").mkdir()
    np.savez(root / "flow_i1" / "000_fwd.npz", flow=np.ones((4, 3, 2)), mask=np.ones((4, 3)))
    np.save(root / "rig_poses.npy", np.stack([_llff(NR, t) for t in RIG_T]))
    for i, c in ((0, 1), (1, 0), (2, 1)):
        (root / "mv_images" / f"{i:05d}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 6, 3), 10 * (i + 1), np.uint8)).save(root / "mv_images" / f"{i:05d}" / f"cam{c:02d}.png")


def test_nsff_hand_written_capture(tmp_path):
    """LLFF columns (down, right, back) -> OpenGL (x, y, z) = (right, -down, back); scale = 1 / (min
    bound * 0.75); recentring on the mean pose [R | mean t] gives c2w_i = [I | R^T s (t_i - mean t)].
    Focal f * w / W_pose = 20 * 6 / 12 = 10, (cx, cy) = (3, 2), ndc = (10, 6, 4, 1); frame i of 3 has time
    i / 2; sparse uv (4.5, 1.5) -> pixel row 1, col 4 with depth 2 s; a (1, 1) px flow stored at 4x3 is
    (2, 1) px at 4x6; RGBA frames are composited on black. Held-out rig views (frame i, camera c) get
    time i / 2 and pose [I | R^T s (t_c - mean t)]."""
    _write_nsff(tmp_path)
    sc = load_scene(tmp_path)
    tr = sc.split("train")
    mean_t = T.mean(0)
    want = np.tile(np.eye(4), (3, 1, 1))
    want[:, :3, 3] = SCALE * (T - mean_t) @ NR  # rows: R^T (s (t_i - mean))
    assert np.allclose(tr.poses.numpy(), want, atol=1e-5)
    assert sc.meta["world_scale"] == pytest.approx(SCALE)
    assert torch.allclose(tr.intrinsics, torch.tensor([10.0, 10.0, 3.0, 2.0]).expand(3, 4))
    assert sc.ndc == pytest.approx((10.0, 6.0, 4.0, 1.0))
    assert torch.allclose(tr.times, torch.tensor([0.0, 0.5, 1.0]))
    assert sc.frame_dt == pytest.approx(0.5)
    assert torch.allclose(sc.aabb, torch.tensor([-1.5, -1.5, -1.0, 1.5, 1.5, 1.0]))
    assert torch.allclose(tr.images[0, 0, 0], torch.zeros(3)) and float(tr.images[0, 0, 1].min()) == 1.0
    sd = tr.extras["sparse_depth"][0]
    assert float(sd[1, 4]) == pytest.approx(2.0 * SCALE) and int((sd > 0).sum()) == 1
    assert torch.allclose(tr.extras["flow_fwd"][0], torch.tensor([2.0, 1.0]).expand(4, 6, 2))
    te = sc.split("test")
    assert torch.allclose(te.times, torch.tensor([0.0, 0.5, 1.0]))
    want_rig = SCALE * (RIG_T - mean_t) @ NR
    assert np.allclose(te.poses[:, :3, 3].numpy(), want_rig[[1, 0, 1]], atol=1e-5)
    assert np.allclose(te.poses[:, :3, :3].numpy(), np.eye(3), atol=1e-5)


def test_nsff_downscaled_intrinsics(tmp_path):
    """Downscale 2 of 4x6 frames (poses for 8x12, f = 20): f = 20 * 6 / 12 * 3 / 6 = 5, (cx, cy) = (1.5, 1)."""
    _write_nsff(tmp_path)
    sc = load_scene(tmp_path, downscale=2)
    tr = sc.split("train")
    assert tr.images.shape == (3, 2, 3, 3)
    assert torch.allclose(tr.intrinsics[0], torch.tensor([5.0, 5.0, 1.5, 1.0]))
    assert sc.ndc == pytest.approx((5.0, 3.0, 2.0, 1.0))


# -------------------------------------------------------------------------------------------- batcher
def _split(n=3, h=5, w=7):
    g = torch.Generator().manual_seed(0)
    poses = torch.eye(4).repeat(n, 1, 1)
    poses[:, :3, 3] = torch.arange(3 * n, dtype=torch.float32).reshape(n, 3)
    intr = torch.tensor([[10.0, 20.0, 3.5, 2.5]]).repeat(n, 1)
    return SceneSplit("train", torch.rand(n, h, w, 3, generator=g), torch.rand(n, h, w, generator=g), poses,
                      torch.tensor([0.0, 0.3, 0.9]), intr, [f"f{i}" for i in range(n)])


def test_batcher_rays_times_alpha_per_pixel():
    """Non-square 5x7 frames with identity rotations: each ray's origin is its frame's translation, its
    direction normalise(((c + 0.5 - cx) / fx, -(r + 0.5 - cy) / fy, -1)), its time and alpha its frame's."""
    split = _split()
    b = RayBatcher(split, torch.device("cpu"), torch.Generator().manual_seed(1)).sample(500)
    f, r, c = b["frame"], b["rows"], b["cols"]
    d = torch.stack([(c + 0.5 - 3.5) / 10.0, -(r + 0.5 - 2.5) / 20.0, -torch.ones(len(c))], -1)
    assert torch.allclose(b["dirs"], d / d.norm(dim=-1, keepdim=True), atol=1e-6)
    assert torch.equal(b["origins"], split.poses[f, :3, 3])
    assert torch.equal(b["times"], split.times[f])
    assert torch.equal(b["alpha"], split.alphas[f, r, c])


def test_batcher_flat_importance_draws_are_uniform():
    """With every pixel at the same importance the inverse-CDF draw is uniform over the N = 105 pixels:
    the mean of flat / (N - 1) over 40000 draws is 0.5 +- 0.005 (sd 0.0015), and every pixel is hit
    (expected 381 each; a miss has probability ~e^-381)."""
    batcher = RayBatcher(_split(), torch.device("cpu"), torch.Generator().manual_seed(5))
    batcher.enable_importance(0.5)
    flat = batcher.sample(40000, n_important=40000)["flat"]
    assert abs(float(flat.double().mean()) / (batcher.n_pixels - 1) - 0.5) < 0.005
    assert torch.bincount(flat, minlength=batcher.n_pixels).min() > 250


# ------------------------------------------------------------------------------------------ synthetic
@pytest.fixture(scope="module")
def tiny_scene():
    return load_synthetic(PRESETS["tiny"], background=(0.0, 0.0, 0.0))


def test_synthetic_intrinsics_and_times(tiny_scene):
    """tiny: 16 px, f = 8 / tan(camera_angle_x / 2), (cx, cy) = (8, 8); train times linspace(0, 1, 6),
    test times the midpoints of train intervals (multiples of 0.1 + 0.1)."""
    spec = PRESETS["tiny"]
    f = 0.5 * 16 / math.tan(0.5 * spec.camera_angle_x)
    for s in ("train", "val", "test"):
        sp = tiny_scene.split(s)
        assert torch.allclose(sp.intrinsics, torch.tensor([f, f, 8.0, 8.0]).expand(sp.num_frames, 4), atol=1e-4)
    assert torch.allclose(tiny_scene.split("train").times, torch.linspace(0, 1, 6))
    t = tiny_scene.split("test").times.double()
    k = (t - 0.1) / 0.2
    assert torch.allclose(k, k.round(), atol=1e-5)
    assert tiny_scene.frame_dt == pytest.approx(0.2)


def test_synthetic_image_agrees_with_pixel_rays(tiny_scene):
    """Render each train view with one sample per pixel; a pixel is covered (alpha 1) exactly where the
    pixel-centre ray of kinfield.geometry.pixel_rays (checked by closed form elsewhere) hits the scene
    (SyntheticScene.trace: analytic ray/object intersection), and its colour on black equals the traced
    colour -- so images, poses and intrinsics of the split are mutually consistent."""
    scene = tiny_scene.meta["scene"]
    sp = tiny_scene.split("train")
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    for i in range(sp.num_frames):
        o, d = pixel_rays(sp.poses[i], sp.intrinsics[i], rows, cols)
        d = d.double() / d.double().norm(dim=-1, keepdim=True)
        rgb, hit = scene.trace(o.double().numpy(), d.numpy(), float(sp.times[i]))
        rgba = scene.render(sp.poses[i].double().numpy(), float(sp.times[i]), 16, 16,
                            float(sp.intrinsics[i, 0]), supersample=1)
        assert np.array_equal(rgba[..., 3].reshape(-1) > 0.5, hit)
        assert np.allclose(rgba[..., :3].reshape(-1, 3)[hit], rgb[hit], atol=1e-5)
        # the stored (supersampled) alpha is 1 inside and 0 well outside the covered pixels
        a = sp.alphas[i].reshape(-1).numpy()
        assert (a[hit] > 0).mean() > 0.95 and (a[~hit] < 1).mean() > 0.95


def test_a_flow_mask_read_at_a_coarser_resolution_drops_every_pixel_with_a_masked_source(tmp_path):
    """Flow stored at 4x6 with one masked pixel, read at downscale 2: the coarse pixel covering it is masked (the
    area average of the mask must stay above 0.99), its neighbour is not."""
    _write_nsff(tmp_path)
    mask = np.ones((4, 6))
    mask[0, 0] = 0
    np.savez(tmp_path / "flow_i1" / "000_fwd.npz", flow=np.ones((4, 6, 2)), mask=mask)
    m = load_scene(tmp_path, downscale=2).split("train").extras["flow_fwd_mask"][0]
    assert m.shape == (2, 3) and float(m[0, 0]) == 0.0 and float(m[0, 1]) == 1.0 and float(m[1, 0]) == 1.0


def test_a_missing_split_is_named_with_the_splits_the_loader_finds(tmp_path):
    """A forward-facing capture without held-out rig views has a train split only (its folder may hold other
    layouts' files, e.g. transforms_*.json, which its loader ignores)."""
    import shutil

    from kinfield.cli import _load_run_scene
    from kinfield.config import parse_args

    _write_nsff(tmp_path)
    shutil.rmtree(tmp_path / "mv_images")
    (tmp_path / "rig_poses.npy").unlink()
    (tmp_path / "transforms_test.json").write_text("{}")
    cfg = parse_args(["--scene", str(tmp_path)])
    with pytest.raises(KeyError, match=r"has no 'test' split \(it has: train\)"):
        _load_run_scene(cfg, None, None, ["test"])


def test_scene_summary_line_names_the_frames_size_source_and_splits(tmp_path):
    """The line training logs about its scene: each split's size, and for the training frames the size and folder they
    were read at and the --downscale that took them to the training size."""
    from kinfield.data.synthetic import write_nsff_scene, write_scene

    dnerf = write_scene(PRESETS["tiny"], tmp_path / "dnerf")
    assert load_scene(dnerf, downscale=2).describe() == \
        f"scene {dnerf} (dnerf): train 6 frames 8x8 (at 16x16, --downscale 2); val 2 views; test 2 views"
    assert load_scene(dnerf).describe() == f"scene {dnerf} (dnerf): train 6 frames 16x16; val 2 views; test 2 views"
    nsff = write_nsff_scene(PRESETS["forward_tiny"], tmp_path / "nsff")
    (nsff / "images").rename(nsff / "images_24x24")
    assert load_scene(nsff, downscale=1.5).describe() == \
        f"scene {nsff} (nsff, NDC): train 8 frames 16x16 (from images_24x24/ at 24x24, --downscale 1.5); test 24 views"
