"""Classical optical flow (OpenCV DIS or Farnebäck) between neighbouring frames and a forward-backward
consistency mask.

Conventions: ``flow [H, W, 2]`` float32 in pixels, ``(dx, dy)`` with x to the right and y down, so
pixel ``p`` of the first image corresponds to ``p + flow(p)`` in the second one; masks are float32 in
{0, 1}.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .errors import require_cv2

FLOW_METHODS = ("dis", "farneback")
DIS_PRESETS = ("ultrafast", "fast", "medium", "fine")


def _gray(img: np.ndarray) -> np.ndarray:
    cv2 = require_cv2()
    img = np.asarray(img)
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(img.astype(np.uint8))


def default_preset(height: int, width: int) -> str:
    """``fine`` (full-resolution DIS) for small frames (long side <= 640), ``medium`` otherwise."""
    return "fine" if max(height, width) <= 640 else "medium"


def compute_flow(img0: np.ndarray, img1: np.ndarray, method: str = "dis", preset: Optional[str] = None
                 ) -> np.ndarray:
    """Dense flow from ``img0`` to ``img1`` (RGB or gray uint8 ``[H, W(, 3)]``): ``[H, W, 2]`` float32."""
    cv2 = require_cv2()
    a, b = _gray(img0), _gray(img1)
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape} vs {b.shape}")
    if method == "dis":
        preset = preset or default_preset(*a.shape)
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; expected one of {DIS_PRESETS}")
        code = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}.get(preset)
        if preset == "fine":
            dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            dis.setFinestScale(0)  # full resolution
            dis.setPatchStride(2)
            dis.setGradientDescentIterations(25)
            dis.setVariationalRefinementIterations(10)
        else:
            dis = cv2.DISOpticalFlow_create(code)
        flow = dis.calc(a, b, None)
    elif method == "farneback":
        flow = cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=5, winsize=15, iterations=5,
                                            poly_n=7, poly_sigma=1.5, flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN)
    else:
        raise ValueError(f"unknown flow method {method!r}; expected one of {FLOW_METHODS}")
    return np.ascontiguousarray(flow, dtype=np.float32)


def warp_by_flow(values: np.ndarray, flow: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Bilinearly sample ``values [H2, W2, C]`` at ``p + flow(p)`` for every pixel ``p`` of ``flow
    [H, W, 2]``: ``(sampled [H, W, C], inside [H, W] bool)`` (``inside``: the target lies in the image)."""
    cv2 = require_cv2()
    h, w = flow.shape[:2]
    xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = xx + flow[..., 0], yy + flow[..., 1]
    h2, w2 = values.shape[:2]
    inside = (mx >= 0) & (mx <= w2 - 1) & (my >= 0) & (my <= h2 - 1)
    out = cv2.remap(np.ascontiguousarray(values, dtype=np.float32), mx, my, interpolation=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    if out.ndim == 2:
        out = out[..., None]
    return out, inside


def fb_consistency(flow_fwd: np.ndarray, flow_bwd: np.ndarray, abs_thresh: float = 1.0, rel_thresh: float = 0.05
                   ) -> np.ndarray:
    """Validity of ``flow_fwd`` (image 0 -> 1) given ``flow_bwd`` (image 1 -> 0): float32 ``[H, W]``.

    Pixel ``p`` is valid (1) when ``p + f_fw(p)`` lies inside image 1 and
    ``|f_fw(p) + f_bw(p + f_fw(p))| < abs_thresh + rel_thresh * |f_fw(p)|`` (pixels; occluded and
    mismatched pixels fail).
    """
    bwd_w, inside = warp_by_flow(flow_bwd, flow_fwd)
    err = np.linalg.norm(flow_fwd + bwd_w, axis=-1)
    thresh = abs_thresh + rel_thresh * np.linalg.norm(flow_fwd, axis=-1)
    return ((err < thresh) & inside).astype(np.float32)


def neighbour_flows(images: Sequence[np.ndarray], method: str = "dis", preset: Optional[str] = None,
                    abs_thresh: float = 1.0, rel_thresh: float = 0.05, progress: bool = False
                    ) -> List[dict]:
    """Forward and backward flow between every pair of neighbours ``(i, i+1)``.

    Returns a list of ``N - 1`` dicts with ``fwd`` (i -> i+1), ``bwd`` (i+1 -> i), ``fwd_mask``,
    ``bwd_mask`` (forward-backward consistency of each direction).
    """
    from tqdm import tqdm

    out = []
    for i in tqdm(range(len(images) - 1), desc="optical flow", disable=not progress, unit="pair"):
        fwd = compute_flow(images[i], images[i + 1], method, preset)
        bwd = compute_flow(images[i + 1], images[i], method, preset)
        out.append({"fwd": fwd, "bwd": bwd,
                    "fwd_mask": fb_consistency(fwd, bwd, abs_thresh, rel_thresh),
                    "bwd_mask": fb_consistency(bwd, fwd, abs_thresh, rel_thresh)})
    return out
