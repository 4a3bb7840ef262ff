"""Exact values of the preprocessing's forward-backward masks, motion masks, NSFF-layout writers, frame reading rules,
SfM helpers (Umeyama alignment, undistortion maps, sparse depth) and SfM feature masks.

Inputs are synthetic flows, hand-built poses and small hand-made files; every expectation is a closed form written
out here.
"""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV missing: pip install opencv-python-headless")

from kinfield.preprocess.flow import default_preset, fb_consistency, neighbour_flows, warp_by_flow  # noqa: E402
from kinfield.preprocess.frames import natural_key, target_size  # noqa: E402
from kinfield.preprocess.masks import (  # noqa: E402
    clean_mask,
    dilate,
    motion_masks,
    motion_masks_from_poses,
    pair_residual,
    rigid_residuals,
    sampson_distance,
)
from kinfield.preprocess.sfm import umeyama, undistort_maps  # noqa: E402
from kinfield.preprocess.writer import (  # noqa: E402
    check_layout,
    depth_bounds,
    llff_to_opengl,
    make_poses_bounds,
    opengl_to_llff,
    prepare_out_dir,
    project,
    write_flows,
    write_masks,
    write_poses_bounds,
    write_sparse_depth,
)

H, W = 40, 48


def _const(dx, dy, h=H, w=W):
    f = np.zeros((h, w, 2), np.float32)
    f[..., 0], f[..., 1] = dx, dy
    return f


# ------------------------------------------------------------------------- forward-backward check
def test_fb_consistent_pair_is_valid_except_where_the_target_leaves_the_image():
    """f_fw = (+2, 0), f_bw = (-2, 0): |f_fw + f_bw(p + f_fw)| = 0, so valid exactly where x + 2 <= W - 1
    (columns 0..W-3), invalid in the last two columns."""
    m = fb_consistency(_const(2, 0), _const(-2, 0))
    assert m.dtype == np.float32
    assert np.all(m[:, : W - 2] == 1.0)
    assert np.all(m[:, W - 2:] == 0.0)


def test_fb_same_direction_flows_are_inconsistent():
    """f_fw = f_bw = (+2, 0) (both claim the same motion): |f_fw + f_bw| = 4 > 1 + 0.05 * 2, invalid everywhere."""
    assert fb_consistency(_const(2, 0), _const(2, 0)).sum() == 0.0


@pytest.mark.parametrize("residual,valid", [(1.2, True), (1.45, True), (1.5, False), (1.6, False), (0.9, True)])
def test_fb_threshold_is_absolute_plus_relative(residual, valid):
    """f_fw = (0, 10) (down), f_bw = (0, -10 + r): error r against 1.0 + 0.05 * 10 = 1.5 px (strict <)."""
    fw = _const(0, 10)
    bw = _const(0, -10 + residual)
    m = fb_consistency(fw, bw, abs_thresh=1.0, rel_thresh=0.05)
    rows = slice(0, H - 11)  # targets inside the image
    assert np.all(m[rows] == (1.0 if valid else 0.0))
    assert np.all(m[H - 10:] == 0.0)  # y + 10 > H - 1: outside


def test_warp_by_flow_samples_at_p_plus_flow():
    """values = x-coordinate ramp; sampled at p + (1.5, 0): x + 1.5 (bilinear), inside iff x + 1.5 <= W - 1."""
    xx = np.tile(np.arange(W, dtype=np.float32), (H, 1))[..., None]
    out, inside = warp_by_flow(xx, _const(1.5, 0))
    ok = np.arange(W) + 1.5 <= W - 1
    assert np.array_equal(inside[0], ok)
    np.testing.assert_allclose(out[:, ok, 0], (xx[:, ok, 0] + 1.5), atol=1e-2)


# ------------------------------------------------------------------------------------ motion masks
def _flows_with_moving_square(n_frames=3, h=64, w=64, cam=(1.0, 0.0), obj=4.0, sq=(20, 40)):
    """Neighbour-flow dicts of a camera pan (constant flow ``cam``, a homography) with a square whose flow has random
    directions and length ``obj`` px (no rigid model explains it; |flow - cam| >= obj - |cam| = 3 px)."""
    rng = np.random.default_rng(0)
    flows = []
    for _ in range(n_frames - 1):
        fwd = _const(*cam, h=h, w=w)
        bwd = _const(-cam[0], -cam[1], h=h, w=w)
        n = sq[1] - sq[0]
        ang = rng.uniform(0, 2 * np.pi, (n, n))  # non-rigid: random directions, |flow| = obj px
        fwd[sq[0]:sq[1], sq[0]:sq[1], 0] = obj * np.cos(ang)
        fwd[sq[0]:sq[1], sq[0]:sq[1], 1] = obj * np.sin(ang)
        ones = np.ones((h, w), np.float32)
        flows.append({"fwd": fwd, "bwd": bwd, "fwd_mask": ones.copy(), "bwd_mask": ones.copy()})
    return flows


def test_motion_mask_marks_pixels_whose_residual_exceeds_the_threshold():
    """The pan is a homography (residual 0), the square's flow is >= 3 px off it and at most 5 px: with the default
    threshold max(1, 0.01 * 64) = 1 px the square (and only it) is moving in frame 0; with 10 px nothing is."""
    flows = _flows_with_moving_square()
    masks, info = motion_masks(flows, (64, 64), min_area=0.0)
    assert info["threshold_px"] == pytest.approx(1.0)
    m0 = masks[0]
    assert m0[22:38, 22:38].all()
    outside = np.ones_like(m0)
    outside[16:44, 16:50] = False
    assert not m0[outside].any()
    masks_hi, info_hi = motion_masks(flows, (64, 64), threshold=10.0, min_area=0.0)
    assert info_hi["threshold_px"] == 10.0
    assert not any(m.any() for m in masks_hi)


def test_motion_mask_ignores_pixels_that_failed_the_fb_check():
    """Pixels with fb mask 0 never enter the raw mask: zeroing the validity over the square empties frame 0's mask
    (frame 0 only has the forward pair)."""
    flows = _flows_with_moving_square()
    flows[0]["fwd_mask"][16:44, 16:44] = 0.0
    masks, _ = motion_masks(flows, (64, 64), min_area=0.0)
    assert not masks[0].any()


def test_default_threshold_is_one_percent_of_the_long_side():
    """threshold = max(1, 0.01 * max(H, W)): 2.5 px for 250 x 60 frames."""
    flows = [{"fwd": _const(0, 0, 60, 250), "bwd": _const(0, 0, 60, 250),
              "fwd_mask": np.zeros((60, 250), np.float32), "bwd_mask": np.zeros((60, 250), np.float32)}]
    _, info = motion_masks(flows, (60, 250))
    assert info["threshold_px"] == pytest.approx(2.5)


def test_clean_mask_drops_components_below_min_area():
    """Components of area < min_area * H * W are removed, those >= kept: 5x5 = 25 px kept at 25/1600, dropped at
    26/1600 (no opening / closing)."""
    m = np.zeros((40, 40), bool)
    m[5:10, 5:10] = True
    assert clean_mask(m, 0, 0, min_area=25 / 1600).sum() == 25
    assert clean_mask(m, 0, 0, min_area=26 / 1600).sum() == 0


# ---------------------------------------------------------------------------------- poses_bounds
def test_poses_bounds_row_layout_by_hand():
    """OpenGL c2w columns (r, u, b, t) -> LLFF rows of [-u, r, b, t, hwf] flattened row-major, then near, far
    (writer module docstring); here r = e_y, u = e_z, b = e_x, t = (1, 2, 3), hwf = (40, 48, 50)."""
    c2w = np.eye(4)[None].copy()
    c2w[0, :3, 0] = [0, 1, 0]   # right
    c2w[0, :3, 1] = [0, 0, 1]   # up
    c2w[0, :3, 2] = [1, 0, 0]   # backwards
    c2w[0, :3, 3] = [1, 2, 3]
    pb = make_poses_bounds(c2w, (40, 48, 50), np.array([[0.5, 9.0]]))
    expected = np.array([[0, 0, 1, 1, 40,     # row x: -u_x, r_x, b_x, t_x, h
                          0, 1, 0, 2, 48,     # row y
                          -1, 0, 0, 3, 50,    # row z
                          0.5, 9.0]], float)
    assert pb.shape == (1, 17) and pb.dtype == np.float64
    np.testing.assert_array_equal(pb, expected)
    np.testing.assert_array_equal(llff_to_opengl(pb)[0], c2w[0])
    np.testing.assert_array_equal(opengl_to_llff(c2w, (40, 48, 50))[0], expected[0, :15].reshape(3, 5))


def test_write_poses_bounds_checks_near_far(tmp_path):
    """0 < near < far per frame, [N, 17] finite (a NaN pose or an infinite far bound is refused); the file holds
    exactly the array."""
    pb = np.zeros((2, 17))
    pb[:, 15], pb[:, 16] = 1.0, 2.0
    write_poses_bounds(tmp_path / "pb.npy", pb)
    np.testing.assert_array_equal(np.load(tmp_path / "pb.npy"), pb)
    for near, far in ((0.0, 2.0), (2.0, 2.0), (3.0, 2.0)):
        bad = pb.copy()
        bad[1, 15], bad[1, 16] = near, far
        with pytest.raises(ValueError):
            write_poses_bounds(tmp_path / "bad.npy", bad)
    for k in (3, 16):  # a translation, a far bound: not finite
        bad = pb.copy()
        bad[0, k] = np.nan if k == 3 else np.inf
        with pytest.raises(ValueError, match="finite"):
            write_poses_bounds(tmp_path / "bad.npy", bad)
    assert not (tmp_path / "bad.npy").exists()


def test_depth_bounds_are_scaled_percentiles():
    """(near, far) = (P1 * 0.9, P99 * 1.1) of the positive finite depths; 1..101 -> P1 = 2, P99 = 100."""
    d = np.concatenate([np.arange(1, 102, dtype=float), [0.0, -3.0, np.inf, np.nan]])
    near, far = depth_bounds(d)
    assert near == pytest.approx(2.0 * 0.9) and far == pytest.approx(100.0 * 1.1)


def test_project_pinhole_by_hand():
    """Camera at the origin looking down -z (OpenGL): X = (1, 2, -4), f = 10, W x H = 48 x 40 -> u = 24 + 10 * 1/4,
    v = 20 - 10 * 2/4 (y down), depth 4."""
    uv, depth = project(np.array([[1.0, 2.0, -4.0]]), np.eye(4), 10.0, 48, 40)
    np.testing.assert_allclose(uv[0], [26.5, 15.0])
    assert depth[0] == pytest.approx(4.0)


def test_write_flows_names_fwd_by_source_and_bwd_by_target_plus_one(tmp_path):
    """Pair i writes {i}_fwd.npz (i -> i+1) and {i+1}_bwd.npz (i+1 -> i), each with its own mask."""
    flows = []
    for i in range(2):
        flows.append({"fwd": _const(i + 1, 0, 4, 5), "bwd": _const(-(i + 1), 0, 4, 5),
                      "fwd_mask": np.full((4, 5), 1.0, np.float32), "bwd_mask": np.zeros((4, 5), np.float32)})
    assert write_flows(tmp_path, flows) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000_fwd.npz", "001_bwd.npz", "001_fwd.npz", "002_bwd.npz"]
    for name, dx, mask in (("000_fwd", 1, 1), ("001_fwd", 2, 1), ("001_bwd", -1, 0), ("002_bwd", -2, 0)):
        with np.load(tmp_path / f"{name}.npz") as z:
            assert np.all(z["flow"][..., 0] == dx) and np.all(z["flow"][..., 1] == 0), name
            assert np.all(z["mask"] == mask), name


def test_backward_pair_marks_the_later_frame():
    """Pair i's backward flow (i+1 -> i) belongs to frame i+1 (motion_masks docstring: a frame's raw mask is the
    union of its forward (i -> i+1) and backward (i -> i-1) pairs): with the non-rigid square only in pair 1's
    backward flow, frames 0 and 1 are empty and frame 2 holds the square."""
    flows = _flows_with_moving_square()
    sq = _flows_with_moving_square(n_frames=2)[0]["fwd"][20:40, 20:40]
    for fl in flows:
        fl["fwd"][20:40, 20:40] = (1.0, 0.0)
    flows[1]["bwd"][20:40, 20:40] = sq
    masks, _ = motion_masks(flows, (64, 64), min_area=0.0)
    assert not masks[0].any() and not masks[1].any()
    assert masks[2][22:38, 22:38].all()


# ------------------------------------------------------------------------------------- layout files
def test_prepare_out_dir_replaces_only_the_layouts_own_files(tmp_path):
    """A non-empty OUT_DIR is refused without ``overwrite``; with it, the layout's files and folders (OUTPUT_NAMES)
    go and everything else (the input video, the user's notes) stays."""
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "000.png").write_bytes(b"old frame")
    (out / "poses_bounds.npy").write_bytes(b"old poses")
    (out / "clip.mp4").write_bytes(b"video")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_out_dir(out)
    assert prepare_out_dir(out, overwrite=True) == out
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "notes.txt"]
    assert prepare_out_dir(tmp_path / "new" / "dir").is_dir()


def test_sparse_depth_without_weights_is_written_with_weight_one(tmp_path):
    """``write_sparse_depth``: a frame given without ``weight`` gets weight 1 for every point, as float32."""
    write_sparse_depth(tmp_path, [{"uv": [[1.0, 2.0], [3.0, 4.0]], "depth": [5.0, 6.0]}])
    with np.load(tmp_path / "000.npz") as z:
        assert z["weight"].dtype == np.float32 and z["weight"].tolist() == [1.0, 1.0]
        assert z["uv"].tolist() == [[1.0, 2.0], [3.0, 4.0]] and z["depth"].tolist() == [5.0, 6.0]


def _minimal_layout(root, h=8, w=10, n=2):
    """A valid NSFF layout by hand: n grey frames, identity cameras (focal 12), one sparse point, empty masks."""
    import imageio.v3 as iio

    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        iio.imwrite(root / "images" / f"{i:03d}.png", np.full((h, w, 3), 100, np.uint8))
    pb = make_poses_bounds(np.stack([np.eye(4)] * n), (h, w, 12.0), np.tile([[1.0, 5.0]], (n, 1)))
    np.save(root / "poses_bounds.npy", pb)
    (root / "sparse").mkdir()
    np.save(root / "sparse" / "points3D.npy", np.zeros((1, 3), np.float32))
    write_masks(root / "motion_masks", [np.zeros((h, w), bool)] * n)
    (root / "preprocess.json").write_text("{}")
    return pb


def test_check_layout_accepts_a_valid_layout_and_names_each_problem(tmp_path):
    """The hand-made layout passes (n_frames, height, width, focal), also with sparse depth at the far image corner
    (u = W, v = H: pixel centres at +0.5, so the edge itself is inside). A point with u > W or v > H is 'uv outside
    the image'; a camera whose backwards axis is flipped (orthonormal, det -1) is 'not right-handed'."""
    pb = _minimal_layout(tmp_path)
    assert check_layout(tmp_path) == {"n_frames": 2, "height": 8, "width": 10, "focal": 12.0}
    write_sparse_depth(tmp_path / "sparse_depth", [{"uv": [[10.0, 8.0]], "depth": [2.0]}] * 2)
    assert check_layout(tmp_path)["n_frames"] == 2
    for uv in ([10.5, 4.0], [5.0, 8.5]):
        write_sparse_depth(tmp_path / "sparse_depth", [{"uv": [uv], "depth": [2.0]}] * 2)
        with pytest.raises(ValueError, match="uv outside the image"):
            check_layout(tmp_path)
    write_sparse_depth(tmp_path / "sparse_depth", [{"uv": [[5.0, 4.0]], "depth": [2.0]}] * 2)
    mirrored = pb.copy()
    mirrored[1, [2, 7, 12]] *= -1.0  # LLFF column 2 (backwards) of frame 1, rows x, y, z
    np.save(tmp_path / "poses_bounds.npy", mirrored)
    with pytest.raises(ValueError, match="not right-handed") as info:
        check_layout(tmp_path)
    assert "not orthonormal" not in str(info.value)


# ----------------------------------------------------------------------------- neighbour flows (fake flow)
def _fake_flows(monkeypatch, fwd_dx, bwd_dx):
    """``compute_flow`` replaced by constant flows: ``fwd_dx`` px from frame i to a later frame, ``bwd_dx`` back;
    frames are told apart by their fill value. Returns the list of ``(from, to)`` frames it was asked for."""
    import kinfield.preprocess.flow as flow_mod

    calls = []

    def fake(img0, img1, method="dis", preset=None):
        a, b = int(img0[0, 0, 0]), int(img1[0, 0, 0])
        calls.append((a, b))
        return _const(fwd_dx if b > a else bwd_dx, 0)

    monkeypatch.setattr(flow_mod, "compute_flow", fake)
    return calls


def test_neighbour_flows_pair_each_frame_with_the_next_and_mask_each_direction(monkeypatch):
    """Pair i holds fwd = flow(i -> i+1) and bwd = flow(i+1 -> i); fwd_mask is fb_consistency(fwd, bwd) and bwd_mask
    fb_consistency(bwd, fwd): with f_fw = (+2, 0), f_bw = (-2, 0) the forward mask loses the last two columns (targets
    x + 2 > W - 1), the backward one the first two (x - 2 < 0)."""
    calls = _fake_flows(monkeypatch, 2.0, -2.0)
    images = [np.full((H, W, 3), i, np.uint8) for i in range(3)]
    out = neighbour_flows(images)
    assert calls == [(0, 1), (1, 0), (1, 2), (2, 1)]
    assert len(out) == 2
    for fl in out:
        assert np.all(fl["fwd"][..., 0] == 2.0) and np.all(fl["bwd"][..., 0] == -2.0)
        assert np.all(fl["fwd_mask"][:, : W - 2] == 1.0) and np.all(fl["fwd_mask"][:, W - 2:] == 0.0)
        assert np.all(fl["bwd_mask"][:, 2:] == 1.0) and np.all(fl["bwd_mask"][:, :2] == 0.0)


@pytest.mark.parametrize("abs_thresh, rel_thresh, valid", [(1.0, 0.0, False), (1.1, 0.0, True), (0.0, 0.5, False),
                                                         (0.0, 0.6, True)])
def test_neighbour_flows_pass_the_absolute_and_relative_thresholds_in_order(monkeypatch, abs_thresh, rel_thresh,
                                                                            valid):
    """f_fw = (+2, 0), f_bw = (-0.95, 0): the error |f_fw + f_bw| = 1.05 px against abs + rel * |f| with |f| = 2 (fwd
    mask) or 0.95 (bwd mask): 1.0 + 0 and 0 + 0.5 * 2 = 1 fail the fwd check, 1.1 and 0.6 * 2 = 1.2 pass it. (Columns
    10..W-11: every target inside the image.)"""
    _fake_flows(monkeypatch, 2.0, -0.95)
    images = [np.full((H, W, 3), i, np.uint8) for i in range(2)]
    (fl,) = neighbour_flows(images, abs_thresh=abs_thresh, rel_thresh=rel_thresh)
    assert np.all(fl["fwd_mask"][:, 10:-10] == (1.0 if valid else 0.0))
    # backward: 1.05 against abs + rel * 0.95 (1.0, 1.1, 0.475, 0.57): valid only for abs 1.1
    assert np.all(fl["bwd_mask"][:, 10:-10] == (1.0 if abs_thresh == 1.1 else 0.0))


def test_default_dis_preset_is_fine_up_to_640_px():
    """``fine`` while the long side is <= 640 px, ``medium`` above (either orientation)."""
    assert default_preset(480, 640) == "fine" and default_preset(640, 200) == "fine"
    assert default_preset(480, 641) == "medium" and default_preset(641, 100) == "medium"


# ------------------------------------------------------------------------------ rigid-model residuals
def test_sampson_distance_by_hand():
    """F = [e_x]_x (camera translating along x: epipolar lines are the rows). For p = (x, y), q = p + (dx, dy):
    F p = (0, -1, y), F^T q = (0, 1, -y_q), q^T F p = y - y_q, so d = |dy| / sqrt(1 + 1), whatever dx."""
    F = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    p = np.array([[10.0, 5.0], [3.0, 7.0], [0.5, 0.5]])
    q = p + np.array([[4.0, 3.0], [0.0, -2.0], [-7.0, 0.0]])
    np.testing.assert_allclose(sampson_distance(F, p, q), [3 / np.sqrt(2), 2 / np.sqrt(2), 0.0], atol=1e-12)


def test_pair_residual_picks_the_homography_for_a_zoom_and_the_fundamental_matrix_for_parallax():
    """A zoom about (40, 32) by 1.05 (pixel centres at +0.5) is a homography: model "H", residual 0 everywhere (also
    at pixel centres, where a fit on corner coordinates would be 0.025 px off per axis). A sideways camera over two
    depths (flow -5 px on the left half, -2.5 px on the right) is explained by F, not by one homography: model "F"."""
    h, w = 64, 80
    xx, yy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    ones = np.ones((h, w), np.float32)
    zoom = np.stack([(xx - 40) * 0.05, (yy - 32) * 0.05], axis=-1).astype(np.float32)
    res, info = pair_residual(zoom, ones, threshold=1.0)
    assert info["model"] == "H" and info["inliers_H"] == 1.0 and info["n_correspondences"] > 1000
    assert res.shape == (h, w) and res.max() < 1e-3
    parallax = np.stack([np.where(xx < 40, -5.0, -2.5), np.zeros_like(xx)], axis=-1).astype(np.float32)
    _, info = pair_residual(parallax, ones, threshold=1.0)
    assert info["model"] == "F" and info["inliers_F"] == 1.0 and info["inliers_H"] < 0.95


def test_dilate_by_a_disc_of_the_given_radius():
    """One pixel dilated by radius 2 (OpenCV's 5x5 ellipse): the pixel +- 2 along the axes, +-1 diagonally in the
    rows next to it, nothing at (2, 2) diagonally or 3 px away; radius 0 changes nothing."""
    m = np.zeros((11, 11), bool)
    m[5, 5] = True
    expected = np.zeros((11, 11), bool)
    expected[3, 5] = expected[7, 5] = True
    expected[4:7, 3:8] = True
    np.testing.assert_array_equal(dilate(m, 2), expected)
    np.testing.assert_array_equal(dilate(m, 0), m)


def _sideways_plane(h=48, w=64, f=100.0, z=4.0):
    """Three cameras at x = -0.1, 0, 0.1 (OpenGL, looking down -z) over a fronto-parallel plane at depth ``z``: the
    exact flow is -f * 0.1 / z px in x forwards, +f * 0.1 / z backwards."""
    c2w = np.stack([np.eye(4) for _ in range(3)])
    c2w[:, 0, 3] = [-0.1, 0.0, 0.1]
    fwd = np.zeros((h, w, 2), np.float32)
    fwd[..., 0] = -f * 0.1 / z
    return c2w, fwd, -fwd, f, w / 2, h / 2


def test_rigid_residual_of_a_depth_outside_the_range_is_its_reprojection_error():
    """The plane is at depth 4 (flow 2.5 px). With z_range (5, 100) the fitted depth is clamped to 5, predicting
    100 * 0.1 / 5 = 2 px: each neighbour is 0.5 px off, and the residual is the larger of the two (0.5, not 1.0).
    With (1, 2): depth 2 predicts 5 px, 2.5 px off."""
    c2w, fwd, bwd, f, cx, cy = _sideways_plane()
    ones = np.ones(fwd.shape[:2], np.float32)
    terms = [(fwd, ones, c2w[2]), (bwd, ones, c2w[0])]
    np.testing.assert_allclose(rigid_residuals(terms, c2w[1], f, cx, cy, (5.0, 100.0)), 0.5, atol=1e-5)
    np.testing.assert_allclose(rigid_residuals(terms, c2w[1], f, cx, cy, (1.0, 2.0)), 2.5, atol=1e-5)


def test_rigid_residual_ignores_invalid_neighbours_in_the_depth_fit():
    """A neighbour whose flow failed the fb check (mask 0) neither moves the fitted depth nor counts in the maximum:
    the exact forward flow alone gives residual 0 even when the invalid backward flow is 7 px off its epipolar line;
    with no valid neighbour the residual is 0."""
    c2w, fwd, bwd, f, cx, cy = _sideways_plane()
    ones, zeros = np.ones(fwd.shape[:2], np.float32), np.zeros(fwd.shape[:2], np.float32)
    bad = bwd.copy()
    bad[..., 1] += 7.0
    res = rigid_residuals([(fwd, ones, c2w[2]), (bad, zeros, c2w[0])], c2w[1], f, cx, cy, (1.0, 100.0))
    assert res.max() < 1e-4
    res = rigid_residuals([(fwd, zeros, c2w[2]), (bad, zeros, c2w[0])], c2w[1], f, cx, cy, (1.0, 100.0))
    assert np.all(res == 0.0)


def test_pose_masks_use_both_neighbours_of_a_middle_frame():
    """Exact plane flows except pair 0's backward flow (frame 1 -> 0), 3 px off the epipolar lines over rows 10..29,
    columns 20..39: frame 1 (whose backward neighbour is frame 0) marks that square, frames 0 and 2 (whose flows are
    exact) nothing. Threshold default max(1, 0.01 * 64) = 1 px."""
    c2w, fwd, bwd, f, cx, cy = _sideways_plane()
    ones = np.ones(fwd.shape[:2], np.float32)
    flows = [{"fwd": fwd.copy(), "bwd": bwd.copy(), "fwd_mask": ones, "bwd_mask": ones} for _ in range(2)]
    flows[0]["bwd"][10:30, 20:40, 1] += 3.0
    masks, info = motion_masks_from_poses(flows, c2w, f, cx, cy, (1.0, 100.0), min_area=0.0)
    assert info["threshold_px"] == 1.0
    assert not masks[0].any() and not masks[2].any()
    assert masks[1][12:28, 22:38].all()
    outside = np.ones_like(masks[1])
    outside[8:32, 18:42] = False
    assert not masks[1][outside].any()


def test_pose_mask_default_threshold_is_one_percent_of_the_long_side():
    """threshold = max(1, 0.01 * max(H, W)): 2.5 px for 40 x 250 frames (as the pose-free masks)."""
    c2w, fwd, bwd, f, cx, cy = _sideways_plane(h=40, w=250)
    ones = np.ones(fwd.shape[:2], np.float32)
    flows = [{"fwd": fwd, "bwd": bwd, "fwd_mask": ones, "bwd_mask": ones} for _ in range(2)]
    _, info = motion_masks_from_poses(flows, c2w, f, cx, cy, (1.0, 100.0))
    assert info["threshold_px"] == pytest.approx(2.5)


# -------------------------------------------------------------------------------- frames, by hand
def test_target_size_keeps_the_aspect_rounds_and_never_upsamples():
    """``(w, h)`` scaled so the long side (either orientation) or the width is the target, rounded to the nearest
    pixel: 101 x 75 -> long side 64 gives 64 x 47.52 -> 64 x 48; a portrait 48 x 64 -> 24 x 32; a larger target keeps
    the size."""
    assert target_size(101, 75, resize_long_side=64) == (64, 48)
    assert target_size(101, 75, width_out=64) == (64, 48)
    assert target_size(48, 64, resize_long_side=32) == (24, 32)
    assert target_size(64, 48, resize_long_side=128) == (64, 48)
    assert target_size(64, 48, width_out=200) == (64, 48)
    assert target_size(64, 48) == (64, 48)


def test_natural_order_ignores_case_and_compares_numbers():
    """``natural_key``: digit runs compare as numbers, letters without case (``a2`` < ``B1`` < ``b10``)."""
    names = ["b10.png", "B1.png", "a2.png", "b2.png"]
    assert sorted(names, key=natural_key) == ["a2.png", "B1.png", "b2.png", "b10.png"]


def test_16_bit_and_float_samples_are_scaled_to_8_bit():
    """16-bit: v / 257 rounded (65535 -> 255, 257 * 100 -> 100, 128 -> 0); float: v * 255 rounded and clipped to
    [0, 255] (0.5 -> 128, 2.0 -> 255, -1.0 -> 0); grey becomes three equal channels."""
    from kinfield.preprocess.frames import _to_rgb

    grey16 = np.array([[0, 128, 25700, 65535]], np.uint16)
    np.testing.assert_array_equal(_to_rgb(grey16, "f.png")[..., 0], [[0, 0, 100, 255]])
    np.testing.assert_array_equal(_to_rgb(grey16, "f.png")[..., 2], [[0, 0, 100, 255]])
    rgbf = np.array([[[0.5, 2.0, -1.0]]], np.float32)
    np.testing.assert_array_equal(_to_rgb(rgbf, "f.tif"), [[[128, 255, 0]]])


def test_frames_report_the_effective_rate_and_the_resize_scale(tmp_path):
    """``fps_effective = fps / stride``; ``scale = output width / source width`` (64 -> 32 px: 0.5)."""
    import imageio.v3 as iio

    from kinfield.preprocess.frames import Frames, read_frames

    fr = Frames(images=[], source="v.mp4", source_type="video", fps=30.0, stride=3, source_indices=[],
                original_size=(64, 48), size=(64, 48), scale=1.0)
    assert fr.fps_effective == 10.0 and fr.info()["fps_effective"] == 10.0
    for i in range(3):
        iio.imwrite(tmp_path / f"{i}.png", np.full((48, 64, 3), 10 * i, np.uint8))
    fr = read_frames(tmp_path, resize_long_side=32, progress=False)
    assert fr.size == (32, 24) and fr.scale == 0.5 and fr.info()["resize_scale"] == 0.5
    assert fr.fps is None and fr.fps_effective is None


def test_frames_with_a_16_px_short_side_are_processed(tmp_path):
    """The smallest frames accepted have a 16 px short side (MIN_SIDE): 24 x 16 is read, 24 x 15 refused."""
    import imageio.v3 as iio

    from kinfield.preprocess.errors import PreprocessError
    from kinfield.preprocess.frames import read_frames

    for h in (16, 15):
        folder = tmp_path / str(h)
        folder.mkdir()
        for i in range(3):
            iio.imwrite(folder / f"{i}.png", np.zeros((h, 24, 3), np.uint8))
    assert read_frames(tmp_path / "16", progress=False).size == (24, 16)
    with pytest.raises(PreprocessError, match="too small"):
        read_frames(tmp_path / "15", progress=False)


# ----------------------------------------------------------------------------------- SfM helpers
def test_umeyama_recovers_a_known_similarity():
    """dst = 2.5 R_z(30 deg) src + (1, -2, 3) exactly: (s, R, t) come back."""
    rng = np.random.default_rng(0)
    src = rng.normal(size=(10, 3))
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    dst = 2.5 * src @ rot.T + np.array([1.0, -2.0, 3.0])
    scale, R, t = umeyama(src, dst)
    assert scale == pytest.approx(2.5)
    np.testing.assert_allclose(R, rot, atol=1e-10)
    np.testing.assert_allclose(t, [1.0, -2.0, 3.0], atol=1e-10)
    scale, R, t = umeyama(src, dst, with_scale=False)
    assert scale == 1.0


def test_umeyama_returns_a_rotation_when_a_mirror_fits_as_well():
    """Points in the plane z = 0 mirrored across the x axis (y -> -y): the mirror diag(1, -1, 1) and the rotation by
    180 degrees about x, diag(1, -1, -1), both fit exactly; the rotation (det +1) is the answer."""
    src = np.array([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [3, 1, 0], [-1, -2, 0]])
    scale, R, t = umeyama(src, src * [1.0, -1.0, 1.0])
    assert scale == pytest.approx(1.0)
    np.testing.assert_allclose(R, np.diag([1.0, -1.0, -1.0]), atol=1e-10)
    np.testing.assert_allclose(t, 0.0, atol=1e-10)


def _sfm_result(**kw):
    from kinfield.preprocess.sfm import SfMResult

    args = dict(c2w=np.eye(4)[None], focal=100.0, cx=32.0, cy=24.0, k1=0.0, camera_model="SIMPLE_RADIAL", width=64,
                height=48, points=np.zeros((0, 3)), point_errors=np.zeros(0), track_lengths=np.zeros(0),
                observations=[np.zeros(0, np.int64)])
    args.update(kw)
    return SfMResult(**args)


def test_undistort_maps_sample_at_the_distorted_position():
    """map(p) = c + f * x * (1 + k1 |x|^2) - 0.5 with x = (p + 0.5 - c) / f (pixel centres at +0.5): k1 = 0.1, f = 100,
    c = (32, 24). At the last pixel (63, 47) x = (0.315, 0.235), at the first (0, 0) x = (-0.315, -0.235); both scale by
    1 + 0.1 * 0.15445 = 1.015445."""
    map_x, map_y = undistort_maps(_sfm_result(k1=0.1))
    assert map_x.shape == (48, 64) and map_x.dtype == np.float32
    s = 1.0 + 0.1 * (0.315**2 + 0.235**2)
    assert map_x[47, 63] == pytest.approx(32.0 + 100.0 * 0.315 * s - 0.5, abs=1e-4)
    assert map_y[47, 63] == pytest.approx(24.0 + 100.0 * 0.235 * s - 0.5, abs=1e-4)
    assert map_x[0, 0] == pytest.approx(32.0 - 100.0 * 0.315 * s - 0.5, abs=1e-4)
    assert map_y[0, 0] == pytest.approx(24.0 - 100.0 * 0.235 * s - 0.5, abs=1e-4)


def test_undistort_maps_only_for_a_distortion_above_a_quarter_pixel():
    """The largest shift is |k1| r_max^3 f with r_max = |(32, 24)| / 100 = 0.4 (r^3 = 0.064): k1 = 0.05 moves corners
    by 0.32 px (undistorted), k1 = 0.02 by 0.128 px and k1 = 0 not at all (None)."""
    assert undistort_maps(_sfm_result(k1=0.05)) is not None
    assert undistort_maps(_sfm_result(k1=-0.05)) is not None
    assert undistort_maps(_sfm_result(k1=0.02)) is None
    assert undistort_maps(_sfm_result(k1=0.0)) is None


def test_sparse_depth_keeps_points_in_front_and_in_the_image_weighted_by_track_and_error():
    """Camera at the origin looking down -z, f = 10, 48 x 40, c = (24, 20). Points: (1, 2, -4) -> uv (26.5, 15),
    depth 4, a two-view track (weight (2 - 1) / 4 = 0.25); (0, 0, -2) -> (24, 20), depth 2, track 9 and error 1 px
    (weight exp(-0.5)); (0, 0, 2) behind the camera and (10, 0, -1) at u = 124 are dropped."""
    pts = np.array([[1.0, 2.0, -4.0], [0.0, 0.0, -2.0], [0.0, 0.0, 2.0], [10.0, 0.0, -1.0]])
    res = _sfm_result(focal=10.0, cx=24.0, cy=20.0, width=48, height=40, points=pts,
                      point_errors=np.array([0.0, 1.0, 0.0, 0.0]), track_lengths=np.array([2.0, 9.0, 5.0, 5.0]),
                      observations=[np.arange(4)])
    (d,) = res.sparse_depth()
    np.testing.assert_allclose(d["uv"], [[26.5, 15.0], [24.0, 20.0]], atol=1e-6)
    np.testing.assert_allclose(d["depth"], [4.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(d["weight"], [0.25, np.exp(-0.5)], rtol=1e-6)
    assert d["point_index"].tolist() == [0, 1]
    (d2,) = res.sparse_depth(err_sigma=2.0)
    np.testing.assert_allclose(d2["weight"], [0.25, np.exp(-0.125)], rtol=1e-6)


# ------------------------------------------------------------------------ SfM feature masks and fallback
def test_sfm_feature_masks_are_dilated_motion_masks_then_a_pass_without(tmp_path, monkeypatch):
    """``_sfm_with_fallback``: with a moving pixel the first SfM pass gets feature masks (0 = no features) of the
    motion masks dilated by max(2, round(1% of the long side)) = 4 px for 40 x 400 frames; when it fails, a second
    pass runs without masks and its result is returned with ``masked = False``. Without moving pixels there is one
    pass, unmasked; a first pass that succeeds returns ``masked = True``."""
    import imageio.v3 as iio

    import kinfield.preprocess.pipeline as pipeline
    from kinfield.preprocess import PreprocessOptions, SfMError

    seen = []

    def fake_run(image_dir, names, work, mask_dir, opts, source):
        seen.append(None if mask_dir is None else iio.imread(mask_dir / f"{names[0]}.png"))
        if mask_dir is not None and fail_masked:
            raise SfMError(source, "masked pass failed", registered=1, total=2)
        return "model"

    monkeypatch.setattr(pipeline, "_run", fake_run)
    masks = [np.zeros((40, 400), bool) for _ in range(2)]
    masks[0][20, 200] = True
    names = ["000.png", "001.png"]
    fail_masked = True
    assert pipeline._sfm_with_fallback(tmp_path, names, tmp_path / "w1", masks, PreprocessOptions(), "src") == \
        ("model", False)
    assert len(seen) == 2 and seen[1] is None
    m = seen[0]
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}
    assert m[20, 196] == m[20, 204] == m[16, 200] == m[24, 200] == 0  # 4 px along the axes: masked
    assert m[20, 195] == m[20, 205] == m[15, 200] == m[25, 200] == 255  # 5 px: features allowed
    fail_masked = False
    seen.clear()
    assert pipeline._sfm_with_fallback(tmp_path, names, tmp_path / "w2", masks, PreprocessOptions(), "src") == \
        ("model", True)
    assert len(seen) == 1 and seen[0] is not None
    seen.clear()
    still = [np.zeros((40, 400), bool) for _ in range(2)]
    assert pipeline._sfm_with_fallback(tmp_path, names, tmp_path / "w3", still, PreprocessOptions(), "src") == \
        ("model", False)
    assert seen == [None]
