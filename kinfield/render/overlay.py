"""Drawing 3-D motion tracks over rendered frames."""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from .video import hue_wheel


def project_points(points: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Pixel coordinates ``[N, 2]`` (col, row; NaN behind the camera) of world points ``[N, 3]``.

    OpenGL camera (looks down -z, y up); pixel centres at ``(col + 0.5, row + 0.5)`` as in ray generation.
    """
    w2c = np.linalg.inv(np.asarray(c2w, np.float64))
    cam = (w2c[:3, :3] @ np.asarray(points, np.float64).T + w2c[:3, 3:4]).T  # [N, 3]
    fx, fy, cx, cy = np.asarray(intrinsics, np.float64)
    z = -cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        col = fx * cam[:, 0] / z + cx - 0.5
        row = -fy * cam[:, 1] / z + cy - 0.5
    out = np.stack([col, row], axis=-1)
    out[z <= 1e-6] = np.nan
    return out


def positions_at(tracks: Dict[str, np.ndarray], t: float) -> np.ndarray:
    """Track positions ``[N, 3]`` at time ``t`` (linear between the exported times, clamped at the ends)."""
    times = np.asarray(tracks["times"], np.float64)
    pos = np.asarray(tracks["positions"], np.float64)
    order = np.argsort(times)
    times, pos = times[order], pos[order]
    i = int(np.clip(np.searchsorted(times, t), 1, len(times) - 1)) if len(times) > 1 else 0
    if len(times) == 1:
        return pos[0]
    a = float(np.clip((t - times[i - 1]) / max(times[i] - times[i - 1], 1e-12), 0.0, 1.0))
    return (1 - a) * pos[i - 1] + a * pos[i]


def track_colours(n: int) -> np.ndarray:
    """``[n, 3]`` uint8 distinct colours (golden-ratio hues)."""
    return (hue_wheel((np.arange(n) * 0.61803398875) % 1.0) * 255).astype(np.uint8)


def draw_tracks(frame: np.ndarray, c2w, intrinsics, tracks: Dict[str, np.ndarray], t: float,
                trail: float = 0.15, n_trail: int = 8) -> np.ndarray:
    """Draw each track's position at ``t`` (3x3 dot) and its recent past (1-pixel trail) on ``frame [H, W, 3]`` uint8."""
    out = frame.copy()
    h, w = out.shape[:2]
    c2w = c2w.cpu().numpy() if isinstance(c2w, torch.Tensor) else np.asarray(c2w)
    intr = intrinsics.cpu().numpy() if isinstance(intrinsics, torch.Tensor) else np.asarray(intrinsics)
    colours = track_colours(np.asarray(tracks["positions"]).shape[1])
    for k, s in enumerate(np.linspace(max(0.0, t - trail), t, n_trail)):
        uv = project_points(positions_at(tracks, float(s)), c2w, intr)
        radius = 1 if k == n_trail - 1 else 0
        for (u, v), c in zip(uv, colours):
            if not np.isfinite(u) or not np.isfinite(v):
                continue
            col, row = int(round(u)), int(round(v))
            r0, r1, c0, c1 = max(row - radius, 0), min(row + radius + 1, h), max(col - radius, 0), min(col + radius + 1, w)
            if r0 < r1 and c0 < c1:
                out[r0:r1, c0:c1] = c
    return out
