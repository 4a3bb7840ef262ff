"""Kinematic field F_K(x, t) -> (velocity, acceleration, jerk) (METHOD 1.3, hash-grid variant 8.1).

A coarse 4-D hash grid (few levels, low resolution: motion is smooth) feeds a torch MLP whose last
layer starts at zero, so the scene starts motionless. Outputs are world-space kinematics per unit
of the dataset's normalised time. Order ``k`` is scaled by ``motion_scale * extent / dt^k`` (dt = the
training frame spacing), so an O(1) raw output moves a point by about ``motion_scale`` of the scene
extent over one frame, whatever the order. (The reference uses one factor for every order; a per-order
factor keeps the three outputs equally easy to learn.) A Taylor mask switches orders on over training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict

import torch
from torch import nn

from ..nn import MLP, HashGrid, HashGridConfig


@dataclass
class KinematicConfig:
    """Architecture of the kinematic field."""

    grid: HashGridConfig = field(default_factory=lambda: HashGridConfig(
        n_levels=4, n_features_per_level=2, log2_hashmap_size=17, base_resolution=4, per_level_scale=1.6))
    hidden: int = field(default=64, metadata={"help": "width of F_K's MLP head's hidden layers"})
    n_hidden: int = field(default=2, metadata={"help": "hidden layers of F_K's MLP head (0 = one linear layer)"})
    order: int = field(default=3, metadata={
        "help": "kinematic orders F_K outputs: 1 velocity, 2 + acceleration, 3 + jerk"})
    motion_scale: float = field(default=0.02, metadata={
        "help": "output scale: a raw output of 1 moves a point by about this fraction of the scene box's longest "
                "side over one frame, in every order"})
    time_scale: float = field(default=1.0, metadata={
        "help": "time in [0, 1] spans [0, time_scale] of F_K's grid's time axis (below 1: coarser in time)"})
    grid_backend: str = field(default="auto", metadata={
        "help": "hash-grid implementation: auto (tinycudann for CUDA inputs when it imports, else torch), tcnn "
                "or torch"})
    # ReLU heads died here (every unit of the second hidden layer off within a few hundred steps on the demo
    # scene, so the field output one constant velocity everywhere); SiLU units cannot die.
    activation: str = field(default="silu", metadata={"help": "activation of F_K's MLP head: relu, silu or softplus"})
    # Add a linear read-out of the grid features (random, full rank) to the MLP. With the MLP's zero last
    # layer alone, the early gradients reach the grid only along the mean velocity's direction (the hidden
    # units barely vary between points while the grid is near zero), so the field learns nearly one
    # direction of motion; the skip gives every grid vertex a full 3-D gradient from the first step.
    linear_skip: bool = field(default=False, metadata={
        "help": "add a learned linear read-out of the grid features (initialised random, full rank) to F_K's MLP "
                "head (needs levels x features per level >= its outputs)"})
    # A motion gate: one more head output g, and every order is multiplied by m = sigmoid(sharpness * g), which
    # starts at motion_gate_init everywhere. The grid and head are smooth, so without it moving content next to
    # still content gets a velocity that ramps down towards the still neighbour over several cells (a thrown ball
    # drags the air and floor around it along); the sigmoid turns a smooth g into a sharp on / off boundary and
    # leaves the velocity itself free to stay smooth (rigid) over the moving content. Off by default: on the demo
    # scene it gave the thrown ball its best motion but closed on the spinning top (whose faint spin F_K learns
    # more slowly than the floor teaches the gate) and never reopened (bench/RESULTS.md "Motion"; --kin_gate_start
    # delays it).
    motion_gate: bool = field(default=False, metadata={
        "help": "multiply F_K's kinematics by a learned gate sigmoid(sharpness g), g one more head output (a sharp "
                "boundary between moving and still content; from --kin_gate_start on)"})
    motion_gate_sharpness: float = field(default=5.0, metadata={
        "help": "sharpness of the motion gate sigmoid(sharpness g) (> 0)"})
    motion_gate_init: float = field(default=0.9, metadata={
        "help": "the motion gate's value everywhere at the start, in (0, 1)"})


class KinematicField(nn.Module):
    """Velocity, acceleration and jerk at world points and times.

    Args:
        aabb: ``[6]`` world box (mapped to [0, 1]^3 for the grid).
        frame_dt: training frame spacing in dataset time units (Delta).
        cfg: architecture.
    """

    def __init__(self, aabb: torch.Tensor, frame_dt: float, cfg: KinematicConfig):
        super().__init__()
        if not 1 <= cfg.order <= 3:
            raise ValueError(f"kinematic order must be 1, 2 or 3 (v, a, j), got {cfg.order}")
        self.cfg = cfg
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        self.extent = extent = float((self.aabb[3:] - self.aabb[:3]).max())  # the box's longest side
        scales = [cfg.motion_scale * extent / frame_dt**k for k in range(1, cfg.order + 1)]
        self.register_buffer("order_scales", torch.tensor(scales, dtype=torch.float32))
        self.register_buffer("taylor_mask", torch.ones(cfg.order))
        self.register_buffer("frame_dt", torch.tensor(float(frame_dt)))
        self._gate_on = cfg.motion_gate  # mirrors the buffer (no device sync per call)
        if cfg.motion_gate:  # (a buffer only with a gate: checkpoints of gate-free fields keep loading)
            self.register_buffer("gate_active", torch.tensor(True))
            self.register_load_state_dict_post_hook(lambda module, keys: module.set_gate_active(module.gate_active))
        self.encoding = HashGrid(4, cfg.grid, backend=cfg.grid_backend)
        n_out = 3 * cfg.order + int(cfg.motion_gate)
        self.mlp = MLP(self.encoding.n_output_dims, n_out, cfg.hidden, cfg.n_hidden, zero_init_last=True,
                       activation=cfg.activation)
        if cfg.motion_gate:
            if not 0.0 < cfg.motion_gate_init < 1.0 or cfg.motion_gate_sharpness <= 0:
                raise ValueError(f"kinematic motion_gate_init must be in (0, 1) and motion_gate_sharpness > 0, got "
                                 f"{cfg.motion_gate_init} and {cfg.motion_gate_sharpness}")
            with torch.no_grad():
                self.mlp.net[-1].bias[-1] = math.log(cfg.motion_gate_init / (1 - cfg.motion_gate_init)) \
                    / cfg.motion_gate_sharpness
        if cfg.linear_skip:
            n_in = self.encoding.n_output_dims
            if n_in < n_out:
                raise ValueError(f"kinematic linear_skip needs at least {n_out} grid features (n_levels x "
                                 f"n_features_per_level), got {n_in}")
            self.skip = nn.Linear(n_in, n_out, bias=False)
            nn.init.orthogonal_(self.skip.weight)
        else:
            self.skip = None

    @property
    def order(self) -> int:
        return self.cfg.order

    def set_active_orders(self, k: int) -> None:
        """Enable the first ``k`` orders (1 = velocity only, 2 = + acceleration, 3 = + jerk)."""
        self.taylor_mask.copy_((torch.arange(self.order, device=self.taylor_mask.device) < k).float())

    def set_gate_active(self, on: bool) -> None:
        """Switch the motion gate on / off (off: a factor of 1; no effect without ``motion_gate``)."""
        if self.cfg.motion_gate and bool(on) != self._gate_on:  # (the trainer calls this every step)
            self._gate_on = bool(on)
            self.gate_active.fill_(self._gate_on)

    def finest_cell(self) -> float:
        """World size of one cell of the finest grid level (sets finite-difference steps)."""
        return self.encoding.finest_cell(self.extent)

    def _raw(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Head output ``[N, 3 * order (+ 1 gate)]`` at world points ``x [N, 3]``, normalised times ``t [N]``."""
        lo, hi = self.aabb[:3], self.aabb[3:]
        u = torch.cat([(x - lo) / (hi - lo), t.reshape(-1, 1).to(x.dtype) * self.cfg.time_scale], dim=-1)
        f = self.encoding(u)
        return self.mlp(f) if self.skip is None else self.mlp(f) + self.skip(f)

    def _gate_of(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.cfg.motion_gate_sharpness * raw[:, -1])

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Kinematics ``[N, K, 3]`` (``[:, 0]`` velocity, ``[:, 1]`` acceleration, ``[:, 2]`` jerk).

        Args:
            x: ``[N, 3]`` world points; t: ``[N]`` normalised times.
        """
        raw = self._raw(x, t)
        q = raw[:, :3 * self.order].reshape(-1, self.order, 3) * (self.order_scales * self.taylor_mask)[None, :, None]
        return q * self._gate_of(raw)[:, None, None] if self._gate_on else q

    def gate(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Motion gate ``[N]`` in (0, 1) at ``x [N, 3]``, ``t [N]`` (``motion_gate_init`` at the start; ones without
        ``motion_gate`` or while it is switched off)."""
        if not self._gate_on:
            return torch.ones_like(x[:, 0])
        return self._gate_of(self._raw(x, t))

    def kinematics(self, x: torch.Tensor, t: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{"velocity", "acceleration", "jerk"}`` each ``[N, 3]`` (zeros for orders not modelled)."""
        qs = self(x, t).unbind(1)  # (one node in the backward pass, not one per order)
        zero = torch.zeros_like(qs[0])
        names = ("velocity", "acceleration", "jerk")
        return {n: (qs[i] if i < self.order else zero) for i, n in enumerate(names)}

    def displacement(self, x: torch.Tensor, t: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """Local Taylor displacement ``sum_k tau^k / k! q_k(x, t)`` over a time offset ``tau [N]``: ``[N, 3]``."""
        return taylor_displacement(self(x, t), tau)


def taylor_displacement(q: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``sum_k tau^k / k! q[:, k-1]`` for kinematics ``q [N, K, 3]`` and offsets ``tau [N]`` (``[N, 3]``), or
    ``S`` offsets per point ``tau [N, S]`` (``[N, S, 3]``: several displacements from one read of the field).

    Horner's form, ``tau (q_1 + tau/2 (q_2 + tau/3 q_3))``: one fused op per order."""
    k = q.shape[1]
    per_point = tau.dim() <= 1  # (a scalar or [1] offset applies to every point)
    tau = tau.reshape(-1, 1, 1) if per_point else tau[..., None]  # [N, 1, 1] or [N, S, 1]
    qs = [o[:, None] for o in q.unbind(1)]  # K x [N, 1, 3] (one node in the backward pass, not one per order)
    acc = qs[k - 1]
    for i in range(k - 1, 0, -1):
        acc = torch.addcmul(qs[i - 1], acc, tau, value=1.0 / (i + 1))
    out = acc * tau
    return out.squeeze(1) if per_point else out
