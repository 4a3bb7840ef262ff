"""Normalised device coordinates of forward-facing captures (METHOD 1.5).

World here is the recentred LLFF frame: the mean camera sits near the origin looking down -z, and
depths were rescaled so that the near plane is at ``z = -near`` (``near = 1`` by default). With
``a_x = -2 f / W`` and ``a_y = -2 f / H``:

    world -> NDC:  (a_x x / z, a_y y / z, 1 + 2 near / z)
    NDC -> world:  z = 2 near / (z_ndc - 1),  x = z x_ndc / a_x,  y = z y_ndc / a_y

so the near plane maps to ``z_ndc = -1`` and infinity to ``z_ndc = 1``. Straight world rays stay
straight in NDC; :func:`ndc_rays` gives their NDC origin and direction.
"""
from __future__ import annotations

from typing import Tuple

import torch

Z_NDC_MAX = 1.0 - 1e-4  # NDC depth beyond which the inverse map would overflow (points at ~infinity)


def _coeffs(focal: float, width: float, height: float):
    return -2.0 * focal / width, -2.0 * focal / height


def world_to_ndc(x: torch.Tensor, focal: float, width: float, height: float, near: float = 1.0) -> torch.Tensor:
    """World points ``x [N, 3]`` (in front of the cameras: ``z < 0``) to NDC ``[N, 3]``."""
    ax, ay = _coeffs(focal, width, height)
    z = x[:, 2].clamp(max=-1e-6)
    return torch.stack([ax * x[:, 0] / z, ay * x[:, 1] / z, 1.0 + 2.0 * near / z], dim=-1)


def ndc_to_world(p: torch.Tensor, focal: float, width: float, height: float, near: float = 1.0) -> torch.Tensor:
    """NDC points ``p [N, 3]`` to world ``[N, 3]`` (``z_ndc`` clamped below 1, where depth is infinite)."""
    ax, ay = _coeffs(focal, width, height)
    z = 2.0 * near / (p[:, 2].clamp(max=Z_NDC_MAX) - 1.0)
    return torch.stack([z * p[:, 0] / ax, z * p[:, 1] / ay, z], dim=-1)


def ndc_jacobian(x: torch.Tensor, focal: float, width: float, height: float, near: float = 1.0) -> torch.Tensor:
    """``d ndc / d world`` at world points ``x [N, 3]``: ``[N, 3, 3]`` (rows: NDC axes)."""
    ax, ay = _coeffs(focal, width, height)
    z = x[:, 2].clamp(max=-1e-6)
    jac = torch.zeros(x.shape[0], 3, 3, dtype=x.dtype, device=x.device)
    jac[:, 0, 0] = ax / z
    jac[:, 0, 2] = -ax * x[:, 0] / z**2
    jac[:, 1, 1] = ay / z
    jac[:, 1, 2] = -ay * x[:, 1] / z**2
    jac[:, 2, 2] = -2.0 * near / z**2
    return jac


def ndc_rays(origins: torch.Tensor, dirs: torch.Tensor, focal: float, width: float, height: float,
             near: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """World rays to NDC rays: origins moved onto the near plane ``z = -near``.

    Returns:
        ``(o_ndc [R, 3], d_ndc [R, 3])`` such that ``o_ndc + s d_ndc``, ``s`` in [0, 1), traces the
        world ray from the near plane to infinity (``d_ndc`` is not unit length).
    """
    ax, ay = _coeffs(focal, width, height)
    dz = torch.where(dirs[:, 2].abs() < 1e-9, torch.full_like(dirs[:, 2], -1e-9), dirs[:, 2])
    s = -(near + origins[:, 2]) / dz
    o = origins + s[:, None] * dirs
    oz = o[:, 2].clamp(max=-1e-6)
    o_ndc = torch.stack([ax * o[:, 0] / oz, ay * o[:, 1] / oz, 1.0 + 2.0 * near / oz], dim=-1)
    d_ndc = torch.stack([
        ax * (dirs[:, 0] / dz - o[:, 0] / oz),
        ay * (dirs[:, 1] / dz - o[:, 1] / oz),
        -2.0 * near / oz,
    ], dim=-1)
    return o_ndc, d_ndc
