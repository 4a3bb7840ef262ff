"""Motion masks: pixels whose optical flow is not explained by the camera motion.

Method (no depth needed, robust on short clips): for every neighbour pair we fit, with RANSAC on
forward-backward-consistent flow correspondences, a fundamental matrix ``F`` (the rigid scene under
any camera motion) and a homography ``H`` (camera rotation only, or a far / planar scene). When ``H``
explains nearly as many correspondences as ``F`` the pair is treated as rotation-like and the per-pixel
residual is the homography transfer error ``|p' - H p|``; otherwise it is the Sampson distance of
``(p, p + flow(p))`` to ``F``. Pixels with a residual above ``threshold`` pixels are moving. A frame's
raw mask is the union over its forward (i -> i+1) and backward (i -> i-1) pairs, restricted to pixels
whose flow passed the forward-backward check, then cleaned with a morphological opening and closing,
and connected components smaller than ``min_area`` (fraction of the image) are dropped.

Limitation: motion along the epipolar lines (e.g. an object moving parallel to a sideways-moving
camera) is invisible to the epipolar test; such parts are caught only where the same pixels also
move off the lines in the other neighbour pair.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .errors import require_cv2


def _grid_correspondences(flow: np.ndarray, valid: np.ndarray, step: int, max_points: int = 4000,
                          seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    ok = valid[ys, xs] > 0.5
    xs, ys = xs[ok], ys[ok]
    if len(xs) > max_points:
        sel = np.random.default_rng(seed).choice(len(xs), max_points, replace=False)
        xs, ys = xs[sel], ys[sel]
    p = np.stack([xs + 0.5, ys + 0.5], axis=-1).astype(np.float64)
    q = p + flow[ys, xs].astype(np.float64)
    return p, q


def sampson_distance(F: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Sampson distance (pixels) of correspondences ``p -> q [M, 2]`` to ``F`` (``q^T F p = 0``)."""
    ph = np.concatenate([p, np.ones((len(p), 1))], axis=1)
    qh = np.concatenate([q, np.ones((len(q), 1))], axis=1)
    Fp = ph @ F.T            # [M, 3]
    Ftq = qh @ F             # [M, 3]
    num = np.einsum("mi,mi->m", qh, Fp) ** 2
    den = Fp[:, 0] ** 2 + Fp[:, 1] ** 2 + Ftq[:, 0] ** 2 + Ftq[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-12))


def pair_residual(flow: np.ndarray, valid: np.ndarray, threshold: float = 1.5, step: Optional[int] = None,
                  seed: int = 0) -> Tuple[np.ndarray, dict]:
    """Per-pixel residual (pixels) of ``flow [H, W, 2]`` w.r.t. the best rigid model of the pair.

    Returns ``(residual [H, W] float32, info)`` where ``info`` has ``model`` (``"F"``, ``"H"`` or
    ``"none"`` when too few valid correspondences: residual all zero), inlier ratios and the number
    of correspondences.
    """
    cv2 = require_cv2()
    h, w = flow.shape[:2]
    step = step or max(2, int(round(max(h, w) / 96)))
    p, q = _grid_correspondences(flow, valid, step, seed=seed)
    info = {"model": "none", "n_correspondences": int(len(p)), "inliers_F": 0.0, "inliers_H": 0.0}
    if len(p) < 16:
        return np.zeros((h, w), np.float32), info
    cv2.setRNGSeed(seed)
    H, mh = cv2.findHomography(p, q, cv2.RANSAC, threshold, maxIters=2000, confidence=0.999)
    F, mf = cv2.findFundamentalMat(p, q, cv2.FM_RANSAC, threshold, 0.999, 2000)
    rh = float(mh.mean()) if mh is not None and H is not None else 0.0
    rf = float(mf.mean()) if mf is not None and F is not None and F.shape == (3, 3) else 0.0
    info.update(inliers_F=rf, inliers_H=rh)
    xx, yy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    pa = np.stack([xx, yy], axis=-1).reshape(-1, 2)
    qa = pa + flow.reshape(-1, 2).astype(np.float64)
    if rh > 0 and rh >= 0.95 * rf:  # rotation-like / planar: the homography explains the pair
        ph = np.concatenate([pa, np.ones((len(pa), 1))], axis=1) @ H.T
        res = np.linalg.norm(ph[:, :2] / np.where(np.abs(ph[:, 2:]) < 1e-12, 1e-12, ph[:, 2:]) - qa, axis=-1)
        info["model"] = "H"
    elif rf > 0:
        res = sampson_distance(F, pa, qa)
        info["model"] = "F"
    else:
        return np.zeros((h, w), np.float32), info
    return res.reshape(h, w).astype(np.float32), info


def clean_mask(mask: np.ndarray, open_px: int = 1, close_px: int = 2, min_area: float = 0.002) -> np.ndarray:
    """Morphological opening / closing (radii in pixels) and removal of components smaller than
    ``min_area`` (fraction of the image): bool ``[H, W]``."""
    cv2 = require_cv2()
    m = mask.astype(np.uint8)
    if open_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * open_px + 1, 2 * open_px + 1))
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, k)
    if close_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * close_px + 1, 2 * close_px + 1))
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, k)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area * m.size
    return keep[lab]


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Binary dilation by a disc of radius ``px``: bool ``[H, W]``."""
    if px <= 0:
        return mask.astype(bool)
    cv2 = require_cv2()
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), k) > 0


def motion_masks(flows: Sequence[dict], shape: Tuple[int, int], threshold: Optional[float] = None,
                 open_px: int = 1, close_px: int = 2, min_area: float = 0.002) -> Tuple[List[np.ndarray], dict]:
    """Motion masks of all ``N = len(flows) + 1`` frames from :func:`neighbour_flows` output.

    ``threshold`` (pixels) defaults to ``max(1.0, 0.01 * long side)``. Returns ``(masks, info)``:
    ``N`` bool ``[H, W]`` arrays and per-pair model info.
    """
    h, w = shape
    thr = float(threshold) if threshold is not None else max(1.0, 0.01 * max(h, w))
    n = len(flows) + 1
    raw = [np.zeros((h, w), bool) for _ in range(n)]
    pairs = []
    for i, fl in enumerate(flows):
        for key, frame in (("fwd", i), ("bwd", i + 1)):
            valid = fl[f"{key}_mask"]
            res, info = pair_residual(fl[key], valid, threshold=thr, seed=i)
            info.update(pair=[i, i + 1], direction=key)
            pairs.append(info)
            raw[frame] |= (res > thr) & (valid > 0.5)
    masks = [clean_mask(m, open_px, close_px, min_area) for m in raw]
    return masks, {"method": "epipolar (Sampson) / homography residual of the flow, RANSAC per pair",
                   "threshold_px": thr, "pairs": pairs,
                   "moving_fraction": [float(m.mean()) for m in masks]}


# ---------------------------------------------------------------------- with the SfM camera poses
def _cv_w2c(c2w_gl: np.ndarray) -> np.ndarray:
    c2w = np.asarray(c2w_gl, dtype=np.float64).copy()
    c2w[:3, 1:3] *= -1.0
    return np.linalg.inv(c2w)


def _relative(c2w_i: np.ndarray, c2w_j: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(R, t)`` with ``X_j = R X_i + t`` in OpenCV camera coordinates."""
    a, b = _cv_w2c(c2w_i), _cv_w2c(c2w_j)
    m = b @ np.linalg.inv(a)
    return m[:3, :3], m[:3, 3]


def rigid_residuals(flows_to: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray]], c2w_i: np.ndarray,
                    focal: float, cx: float, cy: float, z_range: Tuple[float, float]) -> np.ndarray:
    """How badly a static point explains the flows of one frame, in pixels: ``[H, W]`` float32.

    ``flows_to``: ``(flow [H, W, 2], valid [H, W], c2w_j)`` for each neighbour ``j`` of frame ``i``
    (camera-to-world matrices in OpenGL convention). Per pixel ``p`` the depth ``Z`` of its ray is
    fitted by linear least squares to all valid flow targets ``q_j = p + flow_j(p)`` and clamped to
    ``z_range``; the residual is the largest reprojection error ``|pi_j(Z) - q_j|`` over the valid
    neighbours (0 where none is valid). It is large for pixels off their epipolar lines, for flow
    implying a depth outside ``z_range`` (or behind the camera), and for neighbours that disagree on the
    depth (motion along the epipolar lines of one pair only).
    """
    h, w = flows_to[0][0].shape[:2]
    xx, yy = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    p = np.stack([xx, yy], axis=-1).reshape(-1, 2)
    r = np.stack([(p[:, 0] - cx) / focal, (p[:, 1] - cy) / focal, np.ones(len(p))], axis=-1)
    K = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    num = np.zeros(len(p))
    den = np.zeros(len(p))
    terms = []
    for flow, valid, c2w_j in flows_to:
        R, t = _relative(c2w_i, c2w_j)
        a = r @ (K @ R).T            # [P, 3]: projection of Z * r is (Z a_xy + b_xy) / (Z a_z + b_z)
        b = K @ t                    # [3]
        q = p + flow.reshape(-1, 2).astype(np.float64)
        v = valid.reshape(-1) > 0.5
        A = q * a[:, 2:3] - a[:, :2]             # Z A = B
        B = b[:2][None, :] - q * b[2]
        num += v * np.einsum("pk,pk->p", A, B)
        den += v * np.einsum("pk,pk->p", A, A)
        terms.append((a, b, q, v))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(den > 1e-12, num / den, z_range[1])
    z = np.clip(np.nan_to_num(z, nan=z_range[1]), z_range[0], z_range[1])
    res = np.zeros(len(p))
    for a, b, q, v in terms:
        proj = z[:, None] * a + b[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = proj[:, :2] / proj[:, 2:3]
        e = np.linalg.norm(uv - q, axis=-1)
        e = np.where(np.isfinite(e) & (proj[:, 2] > 0), e, 1e3)
        res = np.maximum(res, np.where(v, e, 0.0))
    return res.reshape(h, w).astype(np.float32)


def motion_masks_from_poses(flows: Sequence[dict], c2w: np.ndarray, focal: float, cx: float, cy: float,
                            z_range: Tuple[float, float], threshold: Optional[float] = None, open_px: int = 1,
                            close_px: int = 2, min_area: float = 0.002) -> Tuple[List[np.ndarray], dict]:
    """Motion masks from the flows and the SfM cameras (:func:`rigid_residuals` over both neighbours
    of every frame, above ``threshold`` pixels, cleaned as in :func:`motion_masks`)."""
    n = len(flows) + 1
    h, w = flows[0]["fwd"].shape[:2]
    thr = float(threshold) if threshold is not None else max(1.0, 0.01 * max(h, w))
    masks = []
    for i in range(n):
        terms = []
        if i + 1 < n:
            terms.append((flows[i]["fwd"], flows[i]["fwd_mask"], c2w[i + 1]))
        if i > 0:
            terms.append((flows[i - 1]["bwd"], flows[i - 1]["bwd_mask"], c2w[i - 1]))
        res = rigid_residuals(terms, c2w[i], focal, cx, cy, z_range)
        masks.append(clean_mask(res > thr, open_px, close_px, min_area))
    return masks, {"method": "rigid reprojection residual of the flow with the SfM cameras (depth per pixel "
                             "fitted to both neighbours, clamped to the scene's depth range)",
                   "threshold_px": thr, "z_range": [float(z_range[0]), float(z_range[1])],
                   "moving_fraction": [float(m.mean()) for m in masks]}
