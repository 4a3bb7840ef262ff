"""An analytic dynamic radiance field with exact motion (for tests and diagnostics).

:class:`AnalyticSphere` stands in for the learned dynamic field F_DY: a sphere with a smooth solid
texture whose centre follows ``c(t) = c0 + v0 t + g t^2 / 2`` and which spins at a constant angular
velocity ``omega``. Its density, colour and exact velocity are closed-form and differentiable in
position, so the kinematic objective can be checked on a field that is a perfectly consistent 3-D
copy of the scene at every time (``bench/oracle_motion.py``, ``tests/losses``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def rotate(v: torch.Tensor, omega: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Rotate ``v [N, 3]`` about the axis of ``omega [3]`` by the angle ``|omega| t`` (``t [N]``)."""
    w = float(omega.norm())
    if w == 0.0:
        return v
    k = (omega / w).expand_as(v)
    th = (w * t)[:, None]
    return v * torch.cos(th) + torch.cross(k, v, dim=-1) * torch.sin(th) + k * (v * k).sum(-1, keepdim=True) * (1 - torch.cos(th))


class AnalyticSphere(nn.Module):
    """A textured, moving, spinning sphere as a dynamic radiance field (same call signature as
    :class:`~kinfield.fields.RadianceField` with ``n_dims=4``).

    Args:
        c0, v0, gravity, omega: ``[3]`` centre at t=0, its velocity, its acceleration, angular velocity
            (per unit of normalised time).
        radius: sphere radius; ``edge``: width of the density's sigmoid shell; ``sigma_max``: inner density.
        freq: spatial frequency of the solid texture (body frame).
        encoding: optional grid whose ``finest_cell`` the kinematic objective uses for its finite-difference
            steps (the learned field's encoding when this one replaces it).
    """

    def __init__(self, c0: Sequence[float], v0: Sequence[float] = (0.0, 0.0, 0.0),
                 gravity: Sequence[float] = (0.0, 0.0, 0.0), omega: Sequence[float] = (0.0, 0.0, 0.0),
                 radius: float = 0.35, edge: float = 0.015, sigma_max: float = 300.0, freq: float = 18.0,
                 aabb: Sequence[float] = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5), encoding=None):
        super().__init__()
        for name, val in (("c0", c0), ("v0", v0), ("gravity", gravity), ("omega", omega), ("aabb", aabb)):
            self.register_buffer(name, torch.tensor(val, dtype=torch.float32))
        self.register_buffer("phase", torch.tensor([[0.0, 1.3, 2.1], [0.7, 2.9, 0.4], [1.9, 0.2, 2.6]]))
        self.radius, self.edge, self.sigma_max, self.freq = radius, edge, sigma_max, freq
        self.encoding = encoding
        self.keyframe_points = None  # exact at every time: never advected between keyframes

    def center(self, t: torch.Tensor) -> torch.Tensor:
        """Centre ``[N, 3]`` at times ``t [N]``."""
        t = t[:, None]
        return self.c0 + self.v0 * t + 0.5 * self.gravity * t**2

    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Exact velocity ``[N, 3]`` of the material point at ``x [N, 3]``, time ``t [N]``."""
        return self.v0 + self.gravity * t[:, None] + torch.cross(self.omega.expand_as(x), x - self.center(t), dim=-1)

    def density(self, x: torch.Tensor, t: torch.Tensor, keyframe_u=None, motion_grad: bool = True) -> torch.Tensor:
        """Density ``[N]``: ``sigma_max`` inside, a sigmoid shell of width ``edge`` at the surface
        (``keyframe_u``, ``motion_grad``: accepted for the radiance field's signature, unused)."""
        r = (x - self.center(t)).norm(dim=-1)
        return self.sigma_max * torch.sigmoid((self.radius - r) / self.edge) * self.inside(x)

    def forward(self, x: torch.Tensor, t: torch.Tensor, d: torch.Tensor, keyframe_u=None):
        """Density ``[N]`` and view-independent colour ``[N, 3]`` (a smooth texture fixed in the body frame)."""
        f = self.freq * rotate(x - self.center(t), self.omega, -t)
        waves = torch.sin(f[:, None, :] + self.phase[None])  # [N, 3 channels, 3 axes]
        return self.density(x, t), 0.5 + 0.4 * waves.prod(-1)

    def inside(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.aabb[:3], self.aabb[3:]
        return ((x >= lo) & (x <= hi)).all(-1).to(x.dtype)


class ExactKinematics(nn.Module):
    """The exact kinematics of rigid moving spheres, in the kinematic field's interface (``forward(x, t)
    -> [N, 3, 3]`` velocity, acceleration, jerk; ``order``, ``taylor_mask``, ``displacement``), scaled by
    ``scale`` (0 = no motion, 1 = the truth). Points farther than ``margin * radius`` from every centre
    do not move. Used to ask whether an objective is minimised by the true motion (``bench/warp_bias.py``).

    Args:
        spheres: objects with ``center(t) -> (c, c', c'', c''')`` (numpy, ``[T, 3]`` each), ``radius``
            and ``omega`` (constant angular velocity), e.g. :class:`kinfield.data.synthetic.MovingSphere`.
    """

    order = 3

    def __init__(self, spheres, scale: float = 1.0, margin: float = 1.3, frame_dt: float = 1.0 / 39.0):
        super().__init__()
        for s in spheres:
            if getattr(s, "motion_type", "") == "pulse":
                raise ValueError(f"ExactKinematics handles rigid spheres only; {getattr(s, 'name', s)} pulses")
        self.spheres, self.scale, self.margin = list(spheres), float(scale), float(margin)
        self.register_buffer("taylor_mask", torch.ones(3))
        self.register_buffer("frame_dt", torch.tensor(float(frame_dt)))

    def set_active_orders(self, k: int) -> None:
        self.taylor_mask.copy_((torch.arange(3) < k).float())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        q = torch.zeros(x.shape[0], 3, 3, dtype=x.dtype, device=x.device)
        t64 = t.detach().double().cpu().numpy()
        for s in self.spheres:
            c, dc, ddc, dddc = (torch.as_tensor(a, dtype=x.dtype, device=x.device) for a in s.center(t64))
            r = x - c
            w = torch.as_tensor(s.omega, dtype=x.dtype, device=x.device).expand_as(r)
            e1 = torch.cross(w, r, dim=-1)  # rigid: v = c' + w x r, a = c'' + w x (w x r), j = c''' + w x a_rot
            e2 = torch.cross(w, e1, dim=-1)
            e3 = torch.cross(w, e2, dim=-1)
            near = (r.norm(dim=-1) < self.margin * s.radius)[:, None, None]
            q = torch.where(near, torch.stack([dc + e1, ddc + e2, dddc + e3], dim=1), q)
        return q * (self.scale * self.taylor_mask)[None, :, None]

    def kinematics(self, x: torch.Tensor, t: torch.Tensor):
        q = self(x, t)
        return {"velocity": q[:, 0], "acceleration": q[:, 1], "jerk": q[:, 2]}

    def displacement(self, x: torch.Tensor, t: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        from .kinematic import taylor_displacement

        return taylor_displacement(self(x, t), tau)
