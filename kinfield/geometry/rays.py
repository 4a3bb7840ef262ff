"""Pinhole rays from OpenGL camera-to-world poses, and ray/box intersection."""
from __future__ import annotations

from typing import Tuple

import torch


def pixel_rays(
    c2w: torch.Tensor, intrinsics: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixel centres ``(col + 0.5, row + 0.5)``.

    OpenGL camera axes: x right, y up, the camera looks down -z; pixel rows grow downwards.

    Args:
        c2w: ``[R, 4, 4]`` (or ``[4, 4]``) camera-to-world poses, one per ray or shared.
        intrinsics: ``[R, 4]`` (or ``[4]``) ``(fx, fy, cx, cy)``.
        rows, cols: ``[R]`` integer pixel coordinates.

    Returns:
        ``(origins [R, 3], directions [R, 3])`` with unit directions.
    """
    fx, fy, cx, cy = intrinsics.unbind(-1)
    u = (cols.to(torch.float32) + 0.5 - cx) / fx
    v = (rows.to(torch.float32) + 0.5 - cy) / fy
    dirs_cam = torch.stack([u, -v, -torch.ones_like(u)], dim=-1)  # [R, 3]
    rot = c2w[..., :3, :3]
    dirs = (rot @ dirs_cam[..., None])[..., 0] if rot.dim() == 3 else dirs_cam @ rot.T
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[..., :3, 3].expand_as(dirs)
    return origins.contiguous(), dirs


def image_rays(c2w: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int):
    """All rays of one image in row-major order: ``(origins [H*W, 3], directions [H*W, 3])``."""
    dev = c2w.device
    rows, cols = torch.meshgrid(torch.arange(height, device=dev), torch.arange(width, device=dev), indexing="ij")
    return pixel_rays(c2w, intrinsics, rows.reshape(-1), cols.reshape(-1))


def ray_aabb(origins: torch.Tensor, dirs: torch.Tensor, aabb: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Entry/exit distances of rays through a box (slab test).

    Args:
        origins, dirs: ``[R, 3]``; aabb: ``[6]``.

    Returns:
        ``(t_near [R], t_far [R])`` with ``t_near >= 0``; a miss has ``t_far <= t_near``.
    """
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (aabb[:3] - origins) * inv
    t1 = (aabb[3:] - origins) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far
