"""Optical flow, forward-backward masks, motion masks and the LLFF pose conventions of kinfield.preprocess."""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="OpenCV missing: pip install opencv-python-headless")

from kinfield.preprocess.flow import compute_flow, fb_consistency, neighbour_flows  # noqa: E402
from kinfield.preprocess.masks import motion_masks, rigid_residuals  # noqa: E402
from kinfield.preprocess.writer import (  # noqa: E402
    llff_to_opengl,
    make_poses_bounds,
    opencv_w2c_to_opengl_c2w,
    opengl_to_llff,
)

H, W = 96, 128


def _texture(h, w, seed=0, cell=4):
    """A smooth random colour texture ``[h, w, 3]`` uint8 (bicubic-upsampled noise)."""
    rng = np.random.default_rng(seed)
    small = (rng.random((h // cell + 2, w // cell + 2, 3)) * 255).astype(np.uint8)
    big = cv2.resize(small, ((w // cell + 2) * cell, (h // cell + 2) * cell), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(cv2.GaussianBlur(big, (0, 0), 1.0)[:h, :w])


def _shifted_pair(dx, dy, pad=8):
    big = _texture(H + 2 * pad, W + 2 * pad)
    img0 = big[pad:pad + H, pad:pad + W]
    img1 = big[pad - dy:pad - dy + H, pad - dx:pad - dx + W]  # content moves by (+dx, +dy)
    return np.ascontiguousarray(img0), np.ascontiguousarray(img1)


@pytest.mark.parametrize("method,tol", [("dis", 0.05), ("farneback", 0.3)])
def test_flow_recovers_a_known_shift(method, tol):
    dx, dy = 3, -2
    img0, img1 = _shifted_pair(dx, dy)
    fwd = compute_flow(img0, img1, method=method)
    bwd = compute_flow(img1, img0, method=method)
    assert fwd.shape == (H, W, 2) and fwd.dtype == np.float32
    inner = (slice(10, -10), slice(10, -10))
    err = np.abs(fwd[inner] - np.array([dx, dy], np.float32))
    assert np.median(err) < tol, np.median(fwd[inner].reshape(-1, 2), axis=0)
    assert np.median(np.abs(bwd[inner] + np.array([dx, dy]))) < tol
    valid = fb_consistency(fwd, bwd)
    assert valid.dtype == np.float32 and set(np.unique(valid)) <= {0.0, 1.0}
    assert valid[inner].mean() > 0.9
    # pixels whose target leaves the image are invalid: the content moves right by 3 px
    assert valid[:, -2:].mean() < 0.2


def test_fb_mask_rejects_occluded_pixels():
    bg = _texture(H, W, seed=1)
    patch = _texture(24, 24, seed=2)
    img0, img1 = bg.copy(), bg.copy()
    img0[30:54, 40:64] = patch         # a square moves 8 px to the right over a static background
    img1[30:54, 48:72] = patch
    fwd, bwd = compute_flow(img0, img1), compute_flow(img1, img0)
    valid = fb_consistency(fwd, bwd)
    occluded = valid[32:52, 65:71]      # background of frame 0 that the square covers in frame 1
    assert occluded.mean() < 0.4, occluded.mean()
    assert valid[:24].mean() > 0.95 and valid[-20:].mean() > 0.95
    assert np.allclose(np.median(fwd[34:50, 44:60].reshape(-1, 2), axis=0), [8, 0], atol=0.3)


def test_pose_free_motion_masks_find_a_moving_square():
    """Camera pans (the background shifts by 2 px per frame), a square moves against it."""
    n = 4
    big = _texture(H + 16, W + 16, seed=3)
    patch = _texture(20, 20, seed=4)
    frames, truth = [], []
    for i in range(n):
        img = np.ascontiguousarray(big[8:8 + H, 2 * i:2 * i + W])
        y0, x0 = 20 + 3 * i, 70 - 5 * i
        img[y0:y0 + 20, x0:x0 + 20] = patch
        m = np.zeros((H, W), bool)
        m[y0:y0 + 20, x0:x0 + 20] = True
        frames.append(img)
        truth.append(m)
    flows = neighbour_flows(frames)
    masks, info = motion_masks(flows, (H, W))
    assert len(masks) == n and masks[0].dtype == bool
    inter = sum((a & b).sum() for a, b in zip(masks, truth))
    union = sum((a | b).sum() for a, b in zip(masks, truth))
    assert inter / union > 0.5, (inter / union, info["moving_fraction"])
    assert all(m[:, :40].mean() < 0.05 for m in masks)  # static background stays static


def test_rigid_residuals_small_for_a_static_scene_large_for_motion():
    """Exact flow of a fronto-parallel plane at depth 4 seen by a sideways-moving pinhole camera."""
    f, cx, cy, z = 100.0, W / 2, H / 2, 4.0
    c2w = [np.eye(4) for _ in range(3)]
    for i, m in enumerate(c2w):
        m[0, 3] = 0.1 * (i - 1)        # camera x: -0.1, 0, 0.1
    shift = f * 0.1 / z                # 2.5 px per frame, content moves left when the camera moves right
    fwd = np.zeros((H, W, 2), np.float32)
    fwd[..., 0] = -shift
    bwd = -fwd
    ones = np.ones((H, W), np.float32)
    res = rigid_residuals([(fwd, ones, c2w[2]), (bwd, ones, c2w[0])], c2w[1], f, cx, cy, (1.0, 100.0))
    assert res.max() < 1e-3
    bad = fwd.copy()
    bad[..., 1] += 3.0                 # off the (horizontal) epipolar lines
    res = rigid_residuals([(bad, ones, c2w[2]), (bwd, ones, c2w[0])], c2w[1], f, cx, cy, (1.0, 100.0))
    assert res.min() > 2.0
    along = fwd.copy()
    along[..., 0] += 3.0               # along the lines, but the two neighbours disagree on the depth
    res = rigid_residuals([(along, ones, c2w[2]), (bwd, ones, c2w[0])], c2w[1], f, cx, cy, (1.0, 100.0))
    assert res.min() > 1.0


def test_llff_conventions_round_trip():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = q, [1.0, 2.0, 3.0]
    llff = opengl_to_llff(c2w[None], (48, 64, 70.0))[0]
    # LLFF columns: (down, right, backwards) = (-up, right, backwards) of OpenGL, then t, hwf
    assert np.allclose(llff[:, 0], -c2w[:3, 1]) and np.allclose(llff[:, 1], c2w[:3, 0])
    assert np.allclose(llff[:, 2], c2w[:3, 2]) and np.allclose(llff[:, 3], c2w[:3, 3])
    assert np.allclose(llff[:, 4], [48, 64, 70.0])
    pb = make_poses_bounds(c2w[None], (48, 64, 70.0), np.array([[0.5, 9.0]]))
    assert pb.shape == (1, 17) and pb.dtype == np.float64 and np.allclose(pb[0, 15:], [0.5, 9.0])
    assert np.allclose(pb[0, :15].reshape(3, 5), llff)
    assert np.allclose(llff_to_opengl(pb)[0], c2w)
    # OpenCV world-to-camera (x right, y down, z forward) of the same camera
    cv_c2w = c2w.copy()
    cv_c2w[:3, 1:3] *= -1
    assert np.allclose(opencv_w2c_to_opengl_c2w(np.linalg.inv(cv_c2w)[None])[0], c2w)
