"""Exact values of the preprocessing's forward-backward masks, motion masks and NSFF-layout writers.

Inputs are synthetic flows and hand-built poses; every expectation is a closed form written out here.
"""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV missing: pip install opencv-python-headless")

from kinfield.preprocess.flow import fb_consistency, warp_by_flow  # noqa: E402
from kinfield.preprocess.masks import clean_mask, motion_masks  # noqa: E402
from kinfield.preprocess.writer import (  # noqa: E402
    depth_bounds,
    llff_to_opengl,
    make_poses_bounds,
    opengl_to_llff,
    project,
    write_flows,
    write_poses_bounds,
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
    """0 < near < far per frame, [N, 17] finite; the file holds exactly the array."""
    pb = np.zeros((2, 17))
    pb[:, 15], pb[:, 16] = 1.0, 2.0
    write_poses_bounds(tmp_path / "pb.npy", pb)
    np.testing.assert_array_equal(np.load(tmp_path / "pb.npy"), pb)
    for near, far in ((0.0, 2.0), (2.0, 2.0), (3.0, 2.0)):
        bad = pb.copy()
        bad[1, 15], bad[1, 16] = near, far
        with pytest.raises(ValueError):
            write_poses_bounds(tmp_path / "bad.npy", bad)


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
