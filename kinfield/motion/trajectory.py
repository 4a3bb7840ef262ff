"""Point trajectories integrated through a velocity field (dx/dt = v(x, t), classic RK4)."""
from __future__ import annotations

from typing import Callable, Dict

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def rk4_step(v: VelocityFn, x: torch.Tensor, t: float, h: float) -> torch.Tensor:
    """One RK4 step of ``dx/dt = v(x, t)`` from ``(x [N, 3], t)`` over ``h`` (may be negative)."""
    n = x.shape[0]

    def at(s):
        return torch.full((n,), s, dtype=x.dtype, device=x.device)

    k1 = v(x, at(t))
    k2 = v(x + 0.5 * h * k1, at(t + 0.5 * h))
    k3 = v(x + 0.5 * h * k2, at(t + 0.5 * h))
    k4 = v(x + h * k3, at(t + h))
    return x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)


@torch.no_grad()
def integrate(v: VelocityFn, points: torch.Tensor, t0: float, times: torch.Tensor, max_step: float) -> torch.Tensor:
    """Positions of material points at ``times``, integrating forward and backward from ``t0``.

    Args:
        v: velocity field ``(x [N, 3], t [N]) -> [N, 3]``.
        points: ``[N, 3]`` positions at time ``t0``.
        times: ``[T]`` output times (any order, may include ``t0``).
        max_step: largest RK4 step (e.g. a quarter of the frame spacing).

    Returns:
        ``[T, N, 3]`` positions.
    """
    times_l = [float(s) for s in times.reshape(-1).tolist()]
    out = torch.empty(len(times_l), *points.shape, dtype=points.dtype, device=points.device)
    for direction in (1.0, -1.0):
        order = sorted((i for i, s in enumerate(times_l) if (s - t0) * direction >= 0), key=lambda i: direction * times_l[i])
        x, t = points.clone(), float(t0)
        for i in order:
            target = times_l[i]
            span = target - t
            n_sub = max(1, int(abs(span) / max_step + 0.999999)) if span != 0 else 0
            for _ in range(n_sub):
                h = span / n_sub
                x = rk4_step(v, x, t, h)
                t += h
            t = target
            out[i] = x
    return out


@torch.no_grad()
def kinematics_along(kin_fn: Callable[[torch.Tensor, torch.Tensor], Dict[str, torch.Tensor]], positions: torch.Tensor,
                     times: torch.Tensor, chunk: int = 65536) -> Dict[str, torch.Tensor]:
    """Field kinematics sampled along tracks, ``chunk`` points per field call (bounded memory).

    Args:
        kin_fn: ``(x [M, 3], t [M]) -> {"velocity", "acceleration", "jerk": [M, 3]}``.
        positions: ``[T, N, 3]``; times: ``[T]``.

    Returns:
        ``{"velocity", "acceleration", "jerk"}`` each ``[T, N, 3]``.
    """
    T, N, _ = positions.shape
    flat_x = positions.reshape(-1, 3)
    flat_t = times.reshape(T, 1).expand(T, N).reshape(-1).to(positions.dtype)
    names = ("velocity", "acceleration", "jerk")
    parts = [kin_fn(flat_x[i : i + chunk], flat_t[i : i + chunk]) for i in range(0, flat_x.shape[0], chunk)]
    if not parts:
        return {k: positions.new_zeros(T, N, 3) for k in names}
    return {k: torch.cat([r[k] for r in parts]).reshape(T, N, 3) for k in names}
