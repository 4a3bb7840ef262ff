"""Deterministic synthetic dynamic scenes (D-NeRF format) with exact ground-truth motion.

The generator ray-traces, analytically and vectorised in numpy, a few textured spheres that move
(projectile flight, constant-rate spin, both, or an optional radial pulse) over static content
(a finite checkered ground square and a checkered box). Everything else is transparent (alpha 0).

Conventions (shared with :mod:`kinfield.data.scene`):
    * world units; all content stays inside the box ``[-1.5, 1.5]^3`` at every time in [0, 1];
    * time ``t`` is the dataset's normalised time in [0, 1]; velocities, accelerations and jerks are
      per unit of that time (``d/dt``, ``d^2/dt^2``, ``d^3/dt^3``);
    * cameras are OpenGL camera-to-world matrices (x right, y up, looking down -z), pinhole with
      ``focal = 0.5 * W / tan(0.5 * camera_angle_x)`` and principal point ``(W/2, H/2)``;
    * pixel ``(row i, col j)`` covers the continuous image square ``[j, j+1] x [i, i+1]``: its
      centre ray goes through ``(j + 0.5, i + 0.5)``. Each pixel averages ``supersample^2``
      stratified sub-samples (colour and alpha); PNG colours are straight (not premultiplied) alpha.

Kinematics of a material point of a sphere with centre ``c(t)``, constant angular velocity ``w``
and radius ``r(t)`` (``r`` constant unless the motion is ``"pulse"``): with ``s(t) = r(t)/r(t0)``
and ``e(t) = Rot(w, t - t0) (p(t0) - c(t0))`` the point is ``p(t) = c(t) + s(t) e(t)``, so
``e' = w x e``, ``e'' = w x (w x e)``, ``e''' = w x e''`` and, by the product rule,
``v = c' + s' e + s e'``, ``a = c'' + s'' e + 2 s' e' + s e''``,
``j = c''' + s''' e + 3 s'' e' + 3 s' e'' + s e'''`` (rigid case: ``v = c' + w x (p - c)``, ...).

Output folder layout of :func:`write_scene`::

    transforms_{train,val,test}.json   # D-NeRF: camera_angle_x, frames[file_path, time, transform_matrix]
    {train,val,test}/r_000.png         # RGBA 8-bit
    motion_gt.npz                      # exact GT motion of surface points (see write_scene)
    scene_meta.json                    # spec + object parameters, for humans and ensure_scene

Forward-facing scenes (``camera_mode="forward"``, presets ``forward`` / ``forward_tiny``): a rig of
``n_rig`` cameras on a small arc in front of the scene (plus a textured backdrop wall), train frame
``i`` seen by rig camera ``i mod n_rig`` (NVIDIA-style teleporting monocular video).
:func:`write_nsff_scene` writes them in the NSFF layout of :mod:`kinfield.preprocess.writer` plus
``mv_images/``, ``mv_masks/`` (every rig camera at every frame time) and ``rig_poses.npy``;
:func:`render_forward_video` renders a smoothly moving camera along the arc to an mp4 (for SfM tests).
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..geometry.paths import look_at

GENERATOR_VERSION = 1
WORLD_BOUND = 1.5
AABB = (-WORLD_BOUND, -WORLD_BOUND, -WORLD_BOUND, WORLD_BOUND, WORLD_BOUND, WORLD_BOUND)
DNERF_CAMERA_ANGLE_X = 0.6911112070083618
LIGHT_DIR = np.array([0.35, 0.25, 0.9]) / np.linalg.norm([0.35, 0.25, 0.9])
AMBIENT = 0.4
SPLITS = ("train", "val", "test")
MOTION_TYPES = ("static", "projectile", "spin", "both", "pulse")

_PALETTE = (
    (0.85, 0.18, 0.15),  # red
    (0.95, 0.75, 0.12),  # yellow
    (0.15, 0.55, 0.85),  # blue
    (0.20, 0.75, 0.30),  # green
    (0.70, 0.25, 0.80),  # purple
    (0.88, 0.88, 0.85),  # white
)


# ----------------------------------------------------------------------------------------- math
def _rotate(vecs: np.ndarray, omega: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Rotate ``vecs [..., 3]`` about axis ``omega/|omega|`` by angles ``|omega| * dt [...]``."""
    speed = float(np.linalg.norm(omega))
    if speed == 0.0:
        return np.broadcast_to(vecs, np.broadcast_shapes(vecs.shape, np.shape(dt) + (3,))).copy()
    k = np.asarray(omega, dtype=np.float64) / speed
    ang = (speed * np.asarray(dt, dtype=np.float64))[..., None]
    kxv = np.cross(k, vecs)
    kdv = (vecs @ k)[..., None]
    return vecs * np.cos(ang) + kxv * np.sin(ang) + k * kdv * (1.0 - np.cos(ang))


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _shade(normals: np.ndarray, albedo: np.ndarray) -> np.ndarray:
    """Lambert + ambient: ``albedo * (AMBIENT + (1-AMBIENT) max(0, n.l))``, shapes ``[M, 3]``."""
    lam = np.clip(normals @ LIGHT_DIR, 0.0, None)
    return albedo * (AMBIENT + (1.0 - AMBIENT) * lam)[:, None]


# -------------------------------------------------------------------------------------- objects
@dataclass
class MovingSphere:
    """A textured sphere; see the module docstring for its motion model.

    ``c(t) = c0 + v0 t + 0.5 gravity t^2``, rotation ``Rot(omega, t)`` (from its pose at t = 0),
    ``r(t) = radius (1 + pulse_amp sin(2 pi pulse_freq t + pulse_phase))``.
    The texture is a colourful checker on spherical coordinates of the local (body) frame.
    """

    name: str
    motion_type: str
    radius: float
    c0: Tuple[float, float, float]
    v0: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    gravity: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    omega: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    pulse_amp: float = 0.0
    pulse_freq: float = 0.0
    pulse_phase: float = 0.0
    n_lat: int = 6
    n_lon: int = 8
    palette_offset: int = 0

    def __post_init__(self) -> None:
        if self.motion_type not in MOTION_TYPES[1:]:
            raise ValueError(f"unknown motion_type {self.motion_type!r}; expected one of {MOTION_TYPES[1:]}")
        moves = any(self.v0) or any(self.gravity)
        spins = any(self.omega)
        expected = {"projectile": (True, False), "spin": (False, True), "both": (True, True)}
        if self.motion_type in expected and (moves, spins) != expected[self.motion_type]:
            raise ValueError(f"{self.name}: parameters do not match motion_type {self.motion_type!r}")
        if self.motion_type != "pulse" and self.pulse_amp != 0.0:
            raise ValueError(f"{self.name}: pulse_amp must be 0 unless motion_type is 'pulse'")
        if abs(self.pulse_amp) >= 1.0:
            raise ValueError(f"{self.name}: |pulse_amp| must be < 1")

    # --- kinematics -----------------------------------------------------------------------
    def center(self, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Centre and its 1st..3rd time derivatives at times ``t [T]``: four ``[T, 3]`` arrays."""
        t = np.asarray(t, dtype=np.float64)[:, None]
        c0, v0, g = (np.asarray(x, dtype=np.float64) for x in (self.c0, self.v0, self.gravity))
        c = c0 + v0 * t + 0.5 * g * t**2
        return c, v0 + g * t, np.broadcast_to(g, c.shape).copy(), np.zeros_like(c)

    def radius_at(self, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Radius and its 1st..3rd time derivatives at times ``t [T]``: four ``[T]`` arrays."""
        t = np.asarray(t, dtype=np.float64)
        a, w = self.pulse_amp * self.radius, 2.0 * np.pi * self.pulse_freq
        ph = w * t + self.pulse_phase
        s, c = np.sin(ph), np.cos(ph)
        return self.radius + a * s, a * w * c, -a * w**2 * s, -a * w**3 * c

    def motion(self, points: np.ndarray, t0: float, times: np.ndarray) -> Dict[str, np.ndarray]:
        """Exact motion of material points ``points [N, 3]`` (given at time ``t0``) at ``times [T]``.

        Returns ``positions, velocity, acceleration, jerk``: ``[T, N, 3]`` float64.
        """
        times = np.asarray(times, dtype=np.float64)
        w = np.asarray(self.omega, dtype=np.float64)
        c_t0 = self.center(np.array([t0]))[0][0]
        r_t0 = self.radius_at(np.array([t0]))[0][0]
        e0 = np.asarray(points, dtype=np.float64) - c_t0
        e = _rotate(e0[None], w, (times - t0)[:, None])                     # [T, N, 3]
        e1 = np.cross(w, e)
        e2 = np.cross(w, e1)
        e3 = np.cross(w, e2)
        c, c1, c2, c3 = (x[:, None] for x in self.center(times))
        s, s1, s2, s3 = (x[:, None, None] / r_t0 for x in self.radius_at(times))
        return {
            "positions": c + s * e,
            "velocity": c1 + s1 * e + s * e1,
            "acceleration": c2 + s2 * e + 2.0 * s1 * e1 + s * e2,
            "jerk": c3 + s3 * e + 3.0 * s2 * e1 + 3.0 * s1 * e2 + s * e3,
        }

    def surface_distance(self, points: np.ndarray, t: float) -> np.ndarray:
        """Unsigned distance of ``points [N, 3]`` to the surface at time ``t``: ``[N]``."""
        c = self.center(np.array([t]))[0][0]
        r = self.radius_at(np.array([t]))[0][0]
        return np.abs(np.linalg.norm(points - c, axis=-1) - r)

    def extent(self, times: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Per-time bounding box ``(lo [T, 3], hi [T, 3])``."""
        c = self.center(times)[0]
        r = self.radius_at(times)[0][:, None]
        return c - r, c + r

    # --- rendering ------------------------------------------------------------------------
    def intersect(self, o: np.ndarray, d: np.ndarray, t: float) -> np.ndarray:
        """Ray distances of the first hit, ``inf`` on a miss: ``o, d [M, 3]`` (unit d) -> ``[M]``."""
        c = self.center(np.array([t]))[0][0]
        r = self.radius_at(np.array([t]))[0][0]
        oc = o - c
        b = np.einsum("md,md->m", oc, d)
        disc = b * b - (np.einsum("md,md->m", oc, oc) - r * r)
        sq = np.sqrt(np.clip(disc, 0.0, None))
        t0, t1 = -b - sq, -b + sq
        hit = np.where(t0 > 1e-6, t0, np.where(t1 > 1e-6, t1, np.inf))
        return np.where(disc > 0.0, hit, np.inf)

    def surface(self, p: np.ndarray, t: float) -> Tuple[np.ndarray, np.ndarray]:
        """Normals and albedo at surface points ``p [M, 3]``: two ``[M, 3]`` arrays."""
        c = self.center(np.array([t]))[0][0]
        n = _normalize(p - c)
        q = _rotate(n, np.asarray(self.omega, dtype=np.float64), np.full(len(n), -t))  # body frame
        theta = np.arccos(np.clip(q[:, 2], -1.0, 1.0))
        phi = np.arctan2(q[:, 1], q[:, 0]) + np.pi
        i = np.minimum((theta / np.pi * self.n_lat).astype(np.int64), self.n_lat - 1)
        j = np.minimum((phi / (2.0 * np.pi) * self.n_lon).astype(np.int64), self.n_lon - 1)
        k = (i + 2 * j + self.palette_offset) % len(_PALETTE)
        return n, np.asarray(_PALETTE)[k]


@dataclass
class GroundSquare:
    """Static checkered square ``|x|, |y| <= half`` in the plane ``z = height`` (normal +z)."""

    name: str = "ground"
    height: float = -0.9
    half: float = 1.3
    cells: int = 8
    colors: Tuple[Tuple[float, float, float], ...] = ((0.62, 0.62, 0.58), (0.22, 0.36, 0.40))

    def intersect(self, o: np.ndarray, d: np.ndarray, t: float) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (self.height - o[:, 2]) / d[:, 2]
        p = o + s[:, None] * d
        ok = (s > 1e-6) & (np.abs(p[:, 0]) <= self.half) & (np.abs(p[:, 1]) <= self.half)
        return np.where(ok, s, np.inf)

    def surface(self, p: np.ndarray, t: float) -> Tuple[np.ndarray, np.ndarray]:
        cell = 2.0 * self.half / self.cells
        k = (np.floor((p[:, 0] + self.half) / cell) + np.floor((p[:, 1] + self.half) / cell)) % 2
        n = np.broadcast_to(np.array([0.0, 0.0, 1.0]), p.shape)
        return n, np.asarray(self.colors)[k.astype(np.int64)]

    def surface_distance(self, points: np.ndarray, t: float) -> np.ndarray:
        out = np.clip(np.abs(points[:, :2]) - self.half, 0.0, None)
        return np.sqrt(np.sum(out**2, axis=-1) + (points[:, 2] - self.height) ** 2)

    def extent(self) -> Tuple[np.ndarray, np.ndarray]:
        return (np.array([-self.half, -self.half, self.height]), np.array([self.half, self.half, self.height]))


@dataclass
class StaticBox:
    """Static axis-aligned box with a 3D checker texture."""

    name: str = "box"
    center: Tuple[float, float, float] = (0.75, 0.75, -0.6)
    half: Tuple[float, float, float] = (0.22, 0.22, 0.3)
    cell: float = 0.15
    colors: Tuple[Tuple[float, float, float], ...] = ((0.90, 0.55, 0.20), (0.25, 0.25, 0.55))

    def intersect(self, o: np.ndarray, d: np.ndarray, t: float) -> np.ndarray:
        c, h = np.asarray(self.center), np.asarray(self.half)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            ta, tb = (c - h - o) * inv, (c + h - o) * inv
        ta = np.nan_to_num(ta, nan=-np.inf)
        tb = np.nan_to_num(tb, nan=np.inf)
        tn = np.max(np.minimum(ta, tb), axis=1)
        tf = np.min(np.maximum(ta, tb), axis=1)
        hit = (tn <= tf) & (tf > 1e-6)
        return np.where(hit, np.where(tn > 1e-6, tn, tf), np.inf)

    def surface(self, p: np.ndarray, t: float) -> Tuple[np.ndarray, np.ndarray]:
        c, h = np.asarray(self.center), np.asarray(self.half)
        rel = (p - c) / h
        axis = np.argmax(np.abs(rel), axis=1)
        n = np.zeros_like(p)
        n[np.arange(len(p)), axis] = np.sign(rel[np.arange(len(p)), axis])
        k = np.floor((p - c + h) / self.cell - 1e-9 * n).sum(axis=1) % 2
        return n, np.asarray(self.colors)[k.astype(np.int64)]

    def surface_distance(self, points: np.ndarray, t: float) -> np.ndarray:
        q = np.abs(points - np.asarray(self.center)) - np.asarray(self.half)
        outside = np.linalg.norm(np.clip(q, 0.0, None), axis=-1)
        inside = np.minimum(np.max(q, axis=-1), 0.0)
        return np.abs(outside + inside)

    def extent(self) -> Tuple[np.ndarray, np.ndarray]:
        c, h = np.asarray(self.center), np.asarray(self.half)
        return c - h, c + h


@dataclass
class TexturedWall:
    """Static backdrop ``|x - cx| <= half_x``, ``z_lo <= z <= z_hi`` in the plane ``y = y``
    (normal towards -y, the side the forward-facing rig looks from), only in ``camera_mode="forward"``.

    Its texture is a mosaic of ``cell``-sized squares with colours drawn once from a fixed
    ``numpy.random.default_rng(texture_seed)``: distinctive corners for feature matching (SfM).
    """

    name: str = "wall"
    y: float = 1.4
    half_x: float = 1.5
    z_lo: float = -0.9
    z_hi: float = 1.5
    cell: float = 0.125
    texture_seed: int = 7

    def _colors(self) -> np.ndarray:
        nx = int(np.ceil(2.0 * self.half_x / self.cell))
        nz = int(np.ceil((self.z_hi - self.z_lo) / self.cell))
        rng = np.random.default_rng(self.texture_seed)
        return 0.15 + 0.8 * rng.random((nz, nx, 3))

    def intersect(self, o: np.ndarray, d: np.ndarray, t: float) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (self.y - o[:, 1]) / d[:, 1]
        p = o + s[:, None] * d
        ok = (s > 1e-6) & (np.abs(p[:, 0]) <= self.half_x) & (p[:, 2] >= self.z_lo) & (p[:, 2] <= self.z_hi)
        return np.where(ok, s, np.inf)

    def surface(self, p: np.ndarray, t: float) -> Tuple[np.ndarray, np.ndarray]:
        cols = self._colors()
        i = np.clip(np.floor((p[:, 2] - self.z_lo) / self.cell).astype(np.int64), 0, cols.shape[0] - 1)
        j = np.clip(np.floor((p[:, 0] + self.half_x) / self.cell).astype(np.int64), 0, cols.shape[1] - 1)
        n = np.broadcast_to(np.array([0.0, -1.0, 0.0]), p.shape)
        # the light comes from behind the wall (LIGHT_DIR . n < 0): pre-divide the albedo by the Lambert
        # factor so that the shaded colour is exactly the mosaic colour
        return n, cols[i, j] / (AMBIENT + (1.0 - AMBIENT) * max(0.0, float(-LIGHT_DIR[1])))

    def surface_distance(self, points: np.ndarray, t: float) -> np.ndarray:
        dx = np.clip(np.abs(points[:, 0]) - self.half_x, 0.0, None)
        dz = np.clip(np.maximum(self.z_lo - points[:, 2], points[:, 2] - self.z_hi), 0.0, None)
        return np.sqrt(dx**2 + dz**2 + (points[:, 1] - self.y) ** 2)

    def extent(self) -> Tuple[np.ndarray, np.ndarray]:
        return np.array([-self.half_x, self.y, self.z_lo]), np.array([self.half_x, self.y, self.z_hi])


# ------------------------------------------------------------------------------------- layouts
def _ball(motion_type: str) -> MovingSphere:
    """The thrown ball (projectile / both): flies from x=-0.75 to x=0.75, peaks at z~0.42."""
    spin = motion_type == "both"
    return MovingSphere(
        name="ball", motion_type=motion_type, radius=0.28,
        c0=(-0.75, -0.45, -0.35), v0=(1.5, 0.3, 2.6), gravity=(0.0, 0.0, -4.4),
        omega=tuple(5.0 * np.array([0.3, 1.0, 0.2]) / np.linalg.norm([0.3, 1.0, 0.2])) if spin else (0.0, 0.0, 0.0),
        palette_offset=0,
    )


def _top(center=(-0.45, 0.6, -0.35), radius=0.35, name="top") -> MovingSphere:
    """A sphere spinning in place at 4 rad per unit time about a tilted axis."""
    return MovingSphere(
        name=name, motion_type="spin", radius=radius, c0=center,
        omega=tuple(4.0 * np.array([0.25, -0.3, 1.0]) / np.linalg.norm([0.25, -0.3, 1.0])),
        n_lat=5, n_lon=10, palette_offset=3,
    )


def _layout(name: str) -> List[MovingSphere]:
    if name == "demo":
        return [_ball("both"), _top()]
    if name == "projectile":
        return [_ball("projectile")]
    if name == "both":
        return [_ball("both")]
    if name == "spin":
        return [_top(center=(0.0, 0.0, -0.3), radius=0.45)]
    if name == "pulse":
        return [MovingSphere(
            name="blob", motion_type="pulse", radius=0.4, c0=(0.0, 0.0, -0.25),
            omega=(0.0, 0.0, 3.0), pulse_amp=0.25, pulse_freq=1.5, palette_offset=1,
        )]
    raise KeyError(f"unknown synthetic layout {name!r}")


# ---------------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class SyntheticSceneSpec:
    """Everything that determines a synthetic scene (same spec -> byte-identical output).

    Attributes:
        preset: object layout: ``demo`` (spinning thrown ball + spinning top), ``projectile``,
            ``spin``, ``both``, ``pulse`` (non-rigid), or ``tiny`` (the demo layout).
        seed: seeds ``numpy.random.default_rng`` for the camera poses.
        resolution: image width = height in pixels.
        n_train, n_val, n_test: frames per split (train times are ``linspace(0, 1, n_train)``).
        supersample: ``s`` -> ``s x s`` stratified sub-samples per pixel.
        camera_radius, camera_angle_x: camera distance to the origin, horizontal field of view (rad).
        elevation_deg: (min, max) camera elevation above the xy-plane, degrees.
        query_time: time at which GT query points are sampled on the moving spheres.
        n_query_per_object: GT query points per moving object.
        n_dense_times: extra uniform GT times ``linspace(0, 1, n)`` merged into ``times`` (0: none).
        camera_mode: ``"random"`` (cameras all around, upper hemisphere, from ``seed``) or
            ``"forward"``: a forward-facing rig of ``n_rig`` cameras on a horizontal arc of radius
            ``camera_radius`` around the origin (chord half-width ``rig_half_width``) at azimuth
            ``rig_azimuth_deg`` and elevation ``rig_elevation_deg`` (alternate cameras raised /
            lowered by ``rig_stagger`` world units), all looking at the origin; train frame ``i``
            (time ``i / (n_train - 1)``) is seen by rig camera ``i mod n_rig`` (the "teleporting"
            monocular protocol of the NVIDIA dynamic-scenes dataset). Forward scenes add a textured
            backdrop wall (:class:`TexturedWall`) behind the content. The ``rig_*`` fields are ignored
            (and left out of :meth:`to_dict`) in ``"random"`` mode.
    """

    preset: str = "demo"
    seed: int = 0
    resolution: int = 64
    n_train: int = 40
    n_val: int = 4
    n_test: int = 8
    supersample: int = 2
    camera_radius: float = 4.0
    camera_angle_x: float = DNERF_CAMERA_ANGLE_X
    elevation_deg: Tuple[float, float] = (10.0, 75.0)
    query_time: float = 0.5
    n_query_per_object: int = 64
    n_dense_times: int = 101
    camera_mode: str = "random"
    n_rig: int = 12
    rig_half_width: float = 0.5
    rig_elevation_deg: float = 25.0
    rig_azimuth_deg: float = -90.0
    rig_stagger: float = 0.08

    def check(self) -> None:
        """Raise ``ValueError`` naming the first field out of range, its value and the range."""
        def finite(x):
            return math.isfinite(float(x))

        rules = [
            ("seed", self.seed >= 0, ">= 0"), ("resolution", self.resolution >= 1, ">= 1"),
            ("n_train", self.n_train >= 2, ">= 2"), ("n_val", self.n_val >= 0, ">= 0"),
            ("n_test", self.n_test >= 0, ">= 0"), ("supersample", self.supersample >= 1, ">= 1"),
            ("camera_radius", finite(self.camera_radius) and self.camera_radius > 0, "> 0"),
            ("camera_angle_x", finite(self.camera_angle_x) and 0 < self.camera_angle_x < math.pi, "in (0, pi)"),
            ("elevation_deg", len(self.elevation_deg) == 2 and all(map(finite, self.elevation_deg))
             and -90 <= self.elevation_deg[0] <= self.elevation_deg[1] <= 90, "(min, max) in [-90, 90]"),
            ("query_time", finite(self.query_time) and 0 <= self.query_time <= 1, "in [0, 1] (the scene's times)"),
            ("n_query_per_object", self.n_query_per_object >= 1, ">= 1"),
            ("n_dense_times", self.n_dense_times >= 0, ">= 0"),
            ("camera_mode", self.camera_mode in CAMERA_MODES, f"one of {CAMERA_MODES}"),
        ]
        if self.camera_mode == "forward":
            rules += [("n_rig", self.n_rig >= 1, ">= 1"),
                      ("rig_half_width", finite(self.rig_half_width) and 0 <= self.rig_half_width < self.camera_radius,
                       "in [0, camera_radius)")]
        for name, ok, allowed in rules:
            if not ok:
                raise ValueError(f"scene spec {self.preset!r}: {name} must be {allowed}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["elevation_deg"] = list(d["elevation_deg"])
        if self.camera_mode == "random":  # keep the dict (and scene_meta.json) of random-camera scenes unchanged
            for k in _FORWARD_FIELDS:
                d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SyntheticSceneSpec":
        d = dict(d)
        if "elevation_deg" in d:
            d["elevation_deg"] = tuple(d["elevation_deg"])
        return cls(**d)


_FORWARD_FIELDS = ("camera_mode", "n_rig", "rig_half_width", "rig_elevation_deg", "rig_azimuth_deg", "rig_stagger")
CAMERA_MODES = ("random", "forward")
_LAYOUT_OF_PRESET = {"tiny": "demo", "forward": "demo", "forward_tiny": "demo"}

PRESETS: Dict[str, SyntheticSceneSpec] = {
    "demo": SyntheticSceneSpec(preset="demo"),
    "projectile": SyntheticSceneSpec(preset="projectile"),
    "spin": SyntheticSceneSpec(preset="spin"),
    "both": SyntheticSceneSpec(preset="both"),
    "pulse": SyntheticSceneSpec(preset="pulse"),
    "tiny": SyntheticSceneSpec(preset="tiny", resolution=16, n_train=6, n_val=2, n_test=2,
                               n_query_per_object=16, n_dense_times=11),
    # forward-facing rig (NVIDIA-style teleporting monocular video), demo objects + backdrop wall
    "forward": SyntheticSceneSpec(preset="forward", camera_mode="forward", resolution=64, n_train=24,
                                  n_val=4, n_test=8),
    "forward_tiny": SyntheticSceneSpec(preset="forward_tiny", camera_mode="forward", resolution=24, n_train=8,
                                       n_val=1, n_test=2, n_rig=4, n_query_per_object=16, n_dense_times=11),
}


# -------------------------------------------------------------------------------------- cameras
def _random_cameras(rng: np.random.Generator, n: int, radius: float, elev_deg) -> np.ndarray:
    """``n`` look-at-origin c2w ``[n, 4, 4]`` on the upper hemisphere (uniform in area)."""
    lo, hi = np.sin(np.deg2rad(elev_deg[0])), np.sin(np.deg2rad(elev_deg[1]))
    sin_el = rng.uniform(lo, hi, size=n)
    az = rng.uniform(0.0, 2.0 * np.pi, size=n)
    cos_el = np.sqrt(1.0 - sin_el**2)
    pos = radius * np.stack([cos_el * np.cos(az), cos_el * np.sin(az), sin_el], axis=-1)
    return np.stack([look_at(p, (0.0, 0.0, 0.0), dtype=torch.float64).numpy() for p in pos]) if n else np.zeros((0, 4, 4))


def _arc_camera(spec: "SyntheticSceneSpec", u: float, dz: float = 0.0) -> np.ndarray:
    """OpenGL c2w ``[4, 4]`` of a forward-rig camera at arc coordinate ``u`` in [-1, 1] (chord
    ``u * rig_half_width`` from the arc centre), raised by ``dz``, looking at the origin."""
    r = float(spec.camera_radius)
    half_angle = np.arcsin(np.clip(spec.rig_half_width / r, -1.0, 1.0))
    az = np.deg2rad(spec.rig_azimuth_deg) + u * half_angle
    el = np.deg2rad(spec.rig_elevation_deg)
    eye = r * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)]) + np.array([0.0, 0.0, dz])
    return look_at(eye, (0.0, 0.0, 0.0), dtype=torch.float64).numpy()


def forward_rig_cameras(spec: "SyntheticSceneSpec") -> np.ndarray:
    """The ``n_rig`` forward-facing rig cameras of ``spec``: OpenGL c2w ``[C, 4, 4]`` float64.

    Camera ``c`` sits at arc coordinate ``linspace(-1, 1, C)[c]``, raised by ``+rig_stagger`` for
    even ``c`` and lowered for odd ``c`` (two staggered rows: vertical parallax too).
    """
    n = int(spec.n_rig)
    us = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    return np.stack([_arc_camera(spec, float(u), spec.rig_stagger * (1.0 if c % 2 == 0 else -1.0))
                     for c, u in enumerate(us)])


def forward_smooth_path(spec: "SyntheticSceneSpec", n_frames: int, half_width: Optional[float] = None,
                        bob: float = 0.15) -> np.ndarray:
    """A continuously moving camera (not teleporting) for SfM tests: OpenGL c2w ``[F, 4, 4]`` float64.

    The camera slides along the rig's arc from one end to the other (chord half-width ``half_width``,
    default ``spec.rig_half_width``) while bobbing up and down by ``bob * sin(2 pi s)`` (``s`` in
    [0, 1] along the path), so the camera centres are not collinear.
    """
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    sp = spec if half_width is None else dataclasses.replace(spec, rig_half_width=float(half_width))
    ss = np.linspace(0.0, 1.0, n_frames) if n_frames > 1 else np.zeros(1)
    return np.stack([_arc_camera(sp, 2.0 * s - 1.0, bob * np.sin(2.0 * np.pi * s)) for s in ss])


def split_times(n_train: int, n_val: int, n_test: int) -> Dict[str, np.ndarray]:
    """Frame times per split: train ``linspace(0, 1)``; test at train-interval midpoints; val at
    quarter points of other intervals (so val/test times differ from train times)."""
    if n_train < 2:
        raise ValueError("n_train must be >= 2")
    gaps = n_train - 1

    def off_grid(n: int, frac: float) -> np.ndarray:
        if n >= gaps:
            k = np.round(np.linspace(0, gaps - 1, n))
        else:
            k = np.floor((np.arange(n) + 0.5) * gaps / n)
        return (k + frac) / gaps

    return {"train": np.linspace(0.0, 1.0, n_train), "val": off_grid(n_val, 0.25), "test": off_grid(n_test, 0.5)}


# ---------------------------------------------------------------------------------------- scene
@dataclass
class SyntheticScene:
    """Moving spheres + static content + cameras of one spec.

    Attributes:
        spec: the generating spec.
        moving: moving spheres (their order defines ``object_id`` in the GT).
        static: static objects (ground square, box).
        cameras: split -> ``[N, 4, 4]`` float64 camera-to-world.
        times: split -> ``[N]`` float64 frame times.
        rig, rig_index: forward mode only: the rig cameras ``[C, 4, 4]`` and, per split, the rig
            camera ``[N]`` of each frame (train: ``i mod C``; val/test: the camera half the rig away).
    """

    spec: SyntheticSceneSpec
    moving: List[MovingSphere]
    static: list
    cameras: Dict[str, np.ndarray] = field(default_factory=dict)
    times: Dict[str, np.ndarray] = field(default_factory=dict)
    rig: Optional[np.ndarray] = None  # forward mode: rig cameras [C, 4, 4]
    rig_index: Dict[str, np.ndarray] = field(default_factory=dict)  # forward mode: split -> rig camera per frame

    @property
    def objects(self) -> list:
        return list(self.moving) + list(self.static)

    @property
    def focal(self) -> float:
        return 0.5 * self.spec.resolution / np.tan(0.5 * self.spec.camera_angle_x)

    # --- rendering ------------------------------------------------------------------------
    def trace(self, o: np.ndarray, d: np.ndarray, time: float, return_ids: bool = False):
        """Shade rays ``o, d [M, 3]`` (unit d) at ``time``: ``rgb [M, 3]``, ``hit [M]`` bool.

        With ``return_ids`` also ``ids [M]`` int64 (index into :attr:`objects` of the surface hit,
        -1 on a miss; ids below ``len(moving)`` are moving spheres) and ``dist [M]`` (ray distance,
        ``inf`` on a miss).
        """
        dist = np.stack([obj.intersect(o, d, time) for obj in self.objects])  # [K, M]
        winner = np.argmin(dist, axis=0)
        best = dist[winner, np.arange(len(winner))]
        hit = np.isfinite(best)
        rgb = np.zeros((len(d), 3))
        for k, obj in enumerate(self.objects):
            sel = hit & (winner == k)
            if np.any(sel):
                p = o[sel] + best[sel, None] * d[sel]
                n, albedo = obj.surface(p, time)
                rgb[sel] = _shade(n, albedo)
        if return_ids:
            return rgb, hit, np.where(hit, winner, -1).astype(np.int64), best
        return rgb, hit

    def trace_pixels(self, c2w: np.ndarray, time: float, width: int, height: int, focal: float
                     ) -> Tuple[np.ndarray, np.ndarray]:
        """Pixel-centre rays of one view: ``depth [H, W]`` (distance along the viewing axis, ``inf``
        on a miss) and ``ids [H, W]`` (see :meth:`trace`)."""
        c2w = np.asarray(c2w, dtype=np.float64)
        uu, vv = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5, indexing="xy")
        dirs = np.stack([(uu - 0.5 * width) / focal, -(vv - 0.5 * height) / focal,
                         -np.ones_like(uu)], axis=-1).reshape(-1, 3)
        norm = np.linalg.norm(dirs, axis=-1)
        d = (dirs / norm[:, None]) @ c2w[:3, :3].T
        o = np.broadcast_to(c2w[:3, 3], d.shape)
        _, _, ids, dist = self.trace(o, d, float(time), return_ids=True)
        return (dist / norm).reshape(height, width), ids.reshape(height, width)

    def render(self, c2w: np.ndarray, time: float, width: int, height: int, focal: float,
               supersample: Optional[int] = None, return_ids: bool = False):
        """Render one view: ``c2w [4, 4]`` OpenGL -> straight-alpha ``rgba [H, W, 4]`` float32.

        With ``return_ids`` returns ``(rgba, ids [H, W, s*s])``: the object hit by every sub-sample
        (see :meth:`trace`).
        """
        s = int(self.spec.supersample if supersample is None else supersample)
        c2w = np.asarray(c2w, dtype=np.float64)
        off = (np.arange(s) + 0.5) / s
        u = (np.arange(width)[:, None] + off[None, :]).reshape(-1)             # [W*s]
        v = (np.arange(height)[:, None] + off[None, :]).reshape(-1)            # [H*s]
        uu, vv = np.meshgrid(u, v, indexing="xy")                              # [H*s, W*s]
        dirs = np.stack([(uu - 0.5 * width) / focal, -(vv - 0.5 * height) / focal,
                         -np.ones_like(uu)], axis=-1).reshape(-1, 3)
        d = _normalize(dirs @ c2w[:3, :3].T)
        o = np.broadcast_to(c2w[:3, 3], d.shape)
        rgb, hit, ids, _ = self.trace(o, d, float(time), return_ids=True)
        rgb = rgb.reshape(height, s, width, s, 3).sum(axis=(1, 3))
        cnt = hit.reshape(height, s, width, s).sum(axis=(1, 3)).astype(np.float64)
        rgb = np.where(cnt[..., None] > 0, rgb / np.maximum(cnt, 1.0)[..., None], 0.0)
        rgba = np.concatenate([rgb, (cnt / (s * s))[..., None]], axis=-1).astype(np.float32)
        if return_ids:
            return rgba, ids.reshape(height, s, width, s).transpose(0, 2, 1, 3).reshape(height, width, s * s)
        return rgba

    # --- motion ---------------------------------------------------------------------------
    def assign(self, points: np.ndarray, t0: float, tol: float = 1e-2) -> np.ndarray:
        """Index into :attr:`objects` of the nearest surface to ``points [N, 3]`` at ``t0``: ``[N]``.

        Raises ``ValueError`` if a point is farther than ``tol`` from every surface.
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        dist = np.stack([obj.surface_distance(points, t0) for obj in self.objects])  # [K, N]
        idx = np.argmin(dist, axis=0)
        far = dist[idx, np.arange(len(idx))] > tol
        if np.any(far):
            raise ValueError(f"{int(far.sum())} point(s) lie farther than {tol} from every surface at t0={t0}")
        return idx

    def motion(self, points: np.ndarray, t0: float, times: Sequence[float], tol: float = 1e-2
               ) -> Dict[str, np.ndarray]:
        """Exact motion of material points ``points [N, 3]`` given at time ``t0``.

        Each point belongs to the object with the nearest surface (see :meth:`assign`); points on
        static objects keep their position with zero derivatives.

        Returns ``positions, velocity, acceleration, jerk``: ``[T, N, 3]`` float64, and
        ``object_index [N]`` (index into :attr:`objects`).
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        idx = self.assign(points, t0, tol)
        out = {k: np.zeros((len(times), len(points), 3)) for k in ("velocity", "acceleration", "jerk")}
        out["positions"] = np.broadcast_to(points, (len(times),) + points.shape).copy()
        for k, obj in enumerate(self.moving):
            sel = idx == k
            if np.any(sel):
                for key, val in obj.motion(points[sel], t0, times).items():
                    out[key][:, sel] = val
        out["object_index"] = idx
        return out

    def query_points(self, t0: Optional[float] = None, n_per_object: Optional[int] = None
                     ) -> Tuple[np.ndarray, np.ndarray]:
        """Surface points of every moving sphere at ``t0`` on a Fibonacci spiral over its upper
        part (directions with ``z >= -0.3``, seen from the upper-hemisphere cameras).

        Returns ``points [N, 3]`` and ``object_id [N]`` (index into :attr:`moving`).
        """
        t0 = self.spec.query_time if t0 is None else t0
        n = self.spec.n_query_per_object if n_per_object is None else n_per_object
        zmin = -0.3
        i = np.arange(n) + 0.5
        z = 1.0 - (1.0 - zmin) * i / n
        rho = np.sqrt(1.0 - z**2)
        phi = np.pi * (3.0 - np.sqrt(5.0)) * i
        dirs = np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=-1)
        pts, ids = [], []
        for k, obj in enumerate(self.moving):
            c = obj.center(np.array([t0]))[0][0]
            r = obj.radius_at(np.array([t0]))[0][0]
            pts.append(c + r * dirs)
            ids.append(np.full(n, k))
        return np.concatenate(pts), np.concatenate(ids)

    # --- checks ---------------------------------------------------------------------------
    def check(self, n_times: int = 1001) -> None:
        """Assert all content stays inside the world box and moving spheres never intersect any
        other object (sampled at ``n_times`` times plus the analytic apex times)."""
        ts = np.linspace(0.0, 1.0, n_times)
        for obj in self.moving:
            g, v0 = np.asarray(obj.gravity), np.asarray(obj.v0)
            apex = [-v0[i] / g[i] for i in range(3) if g[i] != 0.0 and 0.0 < -v0[i] / g[i] < 1.0]
            tt = np.sort(np.concatenate([ts, apex]))
            lo, hi = obj.extent(tt)
            if lo.min() < -WORLD_BOUND or hi.max() > WORLD_BOUND:
                raise AssertionError(f"{obj.name} leaves the world box [-{WORLD_BOUND}, {WORLD_BOUND}]^3")
            if obj.radius_at(tt)[0].min() <= 0:
                raise AssertionError(f"{obj.name} has a non-positive radius")
        for obj in self.static:
            lo, hi = obj.extent()
            if lo.min() < -WORLD_BOUND or hi.max() > WORLD_BOUND:
                raise AssertionError(f"{obj.name} leaves the world box")
        for a, obj in enumerate(self.moving):
            c = obj.center(ts)[0]
            r = obj.radius_at(ts)[0]
            for other in self.moving[a + 1:]:
                gap = np.linalg.norm(c - other.center(ts)[0], axis=-1) - r - other.radius_at(ts)[0]
                if gap.min() <= 0.02:
                    raise AssertionError(f"{obj.name} collides with {other.name}")
            for other in self.static:
                # distance from the centre to the static surface must exceed the radius
                # (centres are never inside the static objects for the presets)
                if np.min(other.surface_distance(c, 0.0) - r) <= 0.02:
                    raise AssertionError(f"{obj.name} collides with {other.name}")


def build_scene(spec: SyntheticSceneSpec) -> SyntheticScene:
    """Objects and cameras of ``spec`` (checked to stay in the world box, collision free)."""
    spec.check()
    layout = _LAYOUT_OF_PRESET.get(spec.preset, spec.preset)
    try:
        moving = _layout(layout)
    except KeyError:
        raise ValueError(f"unknown preset {spec.preset!r}; known: {sorted(PRESETS)}") from None
    times = split_times(spec.n_train, spec.n_val, spec.n_test)
    if spec.camera_mode == "random":
        rng = np.random.default_rng(spec.seed)
        cameras = {s: _random_cameras(rng, len(times[s]), spec.camera_radius, spec.elevation_deg) for s in SPLITS}
        scene = SyntheticScene(spec=spec, moving=moving, static=[GroundSquare(), StaticBox()],
                               cameras=cameras, times=times)
    else:
        rig = forward_rig_cameras(spec)
        c = len(rig)
        frame = {s: np.round(times[s] * (spec.n_train - 1)).astype(np.int64) for s in SPLITS}
        index = {"train": np.arange(spec.n_train) % c}
        for s in ("val", "test"):  # held-out views: the rig camera half the rig away from the training one
            index[s] = (frame[s] + c // 2) % c
        cameras = {s: rig[index[s]] if len(index[s]) else np.zeros((0, 4, 4)) for s in SPLITS}
        scene = SyntheticScene(spec=spec, moving=moving, static=[GroundSquare(), StaticBox(), TexturedWall()],
                               cameras=cameras, times=times, rig=rig, rig_index=index)
    scene.check()
    return scene


# ---------------------------------------------------------------------------------------- output
def _ground_truth(scene: SyntheticScene) -> Dict[str, np.ndarray]:
    spec = scene.spec
    times = np.concatenate([scene.times[s] for s in SPLITS] + [np.linspace(0.0, 1.0, spec.n_dense_times)])
    times = np.unique(times.astype(np.float32))
    pts, ids = scene.query_points()
    m = scene.motion(pts, spec.query_time, times.astype(np.float64), tol=1e-6)
    if not np.array_equal(m["object_index"], ids):
        raise AssertionError("query points were assigned to the wrong objects")
    tt = times.astype(np.float64)
    return {
        "times": times,
        "query_time": np.float32(spec.query_time),
        "query_points": pts.astype(np.float32),
        "positions": m["positions"].astype(np.float32),
        "velocity": m["velocity"].astype(np.float32),
        "acceleration": m["acceleration"].astype(np.float32),
        "jerk": m["jerk"].astype(np.float32),
        "object_id": ids.astype(np.int64),
        "object_names": np.array([o.name for o in scene.moving]),
        "motion_types": np.array([o.motion_type for o in scene.moving]),
        "centers": np.stack([o.center(tt)[0] for o in scene.moving], axis=1).astype(np.float32),
        "radii": np.stack([o.radius_at(tt)[0] for o in scene.moving], axis=1).astype(np.float32),
        "omega": np.array([o.omega for o in scene.moving], dtype=np.float32).reshape(-1, 3),
        "aabb": np.array(AABB, dtype=np.float32),
    }


def _meta(scene: SyntheticScene) -> dict:
    def obj_dict(o):
        d = dataclasses.asdict(o)
        d["kind"] = type(o).__name__
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    return {
        "generator": "kinfield.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "spec": scene.spec.to_dict(),
        "resolution": [scene.spec.resolution, scene.spec.resolution],
        "focal": scene.focal,
        "aabb": list(AABB),
        "moving_objects": [obj_dict(o) for o in scene.moving],
        "static_objects": [obj_dict(o) for o in scene.static],
        "light_dir": LIGHT_DIR.tolist(),
        "ambient": AMBIENT,
    }


def _save_npz_deterministic(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` (readable by ``np.load``) but with fixed zip timestamps."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, buf.getvalue())


def _to_uint8(rgba: np.ndarray) -> np.ndarray:
    return np.clip(np.round(rgba * 255.0), 0, 255).astype(np.uint8)


def write_scene(spec: SyntheticSceneSpec, out_dir: Union[str, Path], overwrite: bool = False) -> Path:
    """Render ``spec`` into ``out_dir`` in the D-NeRF format, plus ``motion_gt.npz`` and
    ``scene_meta.json``. Deterministic (same spec -> byte-identical files).

    ``motion_gt.npz``: ``times [T]`` (all frame times of all splits + a dense grid, sorted, unique),
    ``query_time`` scalar, ``query_points [N, 3]``, ``positions / velocity / acceleration / jerk
    [T, N, 3]``, ``object_id [N]`` (into ``object_names [K]``), ``motion_types [K]``,
    ``centers [T, K, 3]``, ``radii [T, K]``, ``omega [K, 3]``, ``aabb [6]`` (all float32 but ids).

    Raises ``FileExistsError`` if ``out_dir`` is non-empty and ``overwrite`` is False. With
    ``overwrite`` the generator's own outputs are replaced; other files are left alone.
    """
    import imageio.v3 as iio

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    occupied = out.is_dir() and any(out.iterdir())
    if occupied and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass --overwrite (overwrite=True in Python) to replace its scene")
    scene = build_scene(spec)  # (a bad spec stops here, before an earlier scene is removed)
    if occupied:
        for s in SPLITS:
            shutil.rmtree(out / s, ignore_errors=True)
            (out / f"transforms_{s}.json").unlink(missing_ok=True)
        for name in ("motion_gt.npz", "scene_meta.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    res, focal = spec.resolution, scene.focal
    for s in SPLITS:
        (out / s).mkdir(exist_ok=True)
        frames = []
        for i, (c2w, t) in enumerate(zip(scene.cameras[s], scene.times[s])):
            rgba = scene.render(c2w, float(t), res, res, focal)
            iio.imwrite(out / s / f"r_{i:03d}.png", _to_uint8(rgba))
            frames.append({
                "file_path": f"./{s}/r_{i:03d}",
                "rotation": 0.0,
                "time": float(t),
                "transform_matrix": [[float(x) for x in row] for row in c2w],
            })
        doc = {"camera_angle_x": float(spec.camera_angle_x), "frames": frames}
        (out / f"transforms_{s}.json").write_text(json.dumps(doc, indent=4) + "\n")
    gt = _ground_truth(scene)
    _save_npz_deterministic(out / "motion_gt.npz", gt)
    (out / "scene_meta.json").write_text(json.dumps(_meta(scene), indent=2) + "\n")
    return out


def _composite(rgba: np.ndarray, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Straight-alpha ``rgba [H, W, 4]`` float -> RGB uint8 on ``background``."""
    a = rgba[..., 3:4]
    return _to_uint8(rgba[..., :3] * a + np.asarray(background, dtype=np.float64) * (1.0 - a))


def _moving_cover(ids: np.ndarray, n_moving: int) -> np.ndarray:
    """``ids [H, W, S]`` (sub-sample object ids) -> bool ``[H, W]``: some sub-sample hits a moving sphere."""
    return np.any((ids >= 0) & (ids < n_moving), axis=-1)


def _write_mp4(frames: Sequence[np.ndarray], path: Path, fps: float, quality: float = 9.0) -> None:
    import imageio_ffmpeg

    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=float(fps), codec="libx264", pix_fmt_in="rgb24",
                                         pix_fmt_out="yuv420p", quality=quality, macro_block_size=1,
                                         ffmpeg_log_level="error")
    writer.send(None)
    try:
        for f in frames:
            writer.send(np.ascontiguousarray(f))
    finally:
        writer.close()


def render_forward_video(spec: SyntheticSceneSpec, path: Union[str, Path], n_frames: int = 16,
                         width: Optional[int] = None, height: Optional[int] = None, fps: float = 10.0,
                         half_width: Optional[float] = None, bob: float = 0.15, animate: bool = True,
                         background=(1.0, 1.0, 1.0)) -> Dict[str, np.ndarray]:
    """Render the smooth forward camera path (:func:`forward_smooth_path`) of ``spec`` (any camera
    mode; the forward-mode scene content, with the backdrop wall, is used) to an H.264 mp4 at ``path``
    (imageio-ffmpeg; even ``width`` / ``height`` required by yuv420p).

    Frame ``k`` shows the scene at time ``k / (n_frames - 1)`` (``animate=False``: time 0, a static
    scene). Returns ``c2w [F, 4, 4]`` (OpenGL, float64), ``times [F]``, ``focal`` (pixels),
    ``width``, ``height``, ``frames [F, H, W, 3]`` uint8 (before compression) and ``moving_masks
    [F, H, W]`` bool (pixels showing a moving sphere).
    """
    fspec = dataclasses.replace(spec, camera_mode="forward")
    scene = build_scene(fspec)
    w = int(width or spec.resolution)
    h = int(height or spec.resolution)
    if w % 2 or h % 2:
        raise ValueError(f"video width and height must be even, got {w}x{h}")
    focal = 0.5 * w / np.tan(0.5 * spec.camera_angle_x)
    c2w = forward_smooth_path(fspec, n_frames, half_width=half_width, bob=bob)
    times = np.linspace(0.0, 1.0, n_frames) if n_frames > 1 else np.zeros(1)
    frames, moving = [], []
    for c, t in zip(c2w, times):
        rgba, ids = scene.render(c, float(t) if animate else 0.0, w, h, focal, return_ids=True)
        frames.append(_composite(rgba, background))
        moving.append(_moving_cover(ids, len(scene.moving)))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_mp4(frames, out, fps)
    return {"c2w": c2w, "times": times, "focal": np.float64(focal), "width": w, "height": h,
            "frames": np.stack(frames), "moving_masks": np.stack(moving)}


def write_nsff_scene(spec: SyntheticSceneSpec, out_dir: Union[str, Path], overwrite: bool = False,
                     n_sparse_depth: int = 256, flow: bool = True) -> Path:
    """Render a ``camera_mode="forward"`` spec into ``out_dir`` in the NSFF layout (see
    :mod:`kinfield.preprocess.writer`), deterministically from the spec.

    Training frame ``i`` (time ``i / (N - 1)``) is seen by rig camera ``i mod C``. Writes
    ``images/``, ``poses_bounds.npy`` (exact poses; per-frame near / far = 1st / 99th percentile of
    the exact depths times 0.9 / 1.1), ``sparse_depth/`` (``n_sparse_depth`` random pixels per frame
    with exact depth, weight 1), ``sparse/points3D.npy`` (the static ones in world space),
    ``flow_i1/`` (OpenCV DIS flow of :mod:`kinfield.preprocess.flow`; left out when ``flow`` is
    False or OpenCV is missing), ``motion_masks/`` (exact: 255 where a sub-sample hits a moving
    sphere), ``mv_images/{i:05d}/cam{c:02d}.png`` and ``mv_masks/`` (every rig camera at every frame
    time), ``rig_poses.npy [C, 3, 5]`` (LLFF), ``motion_gt.npz`` (as :func:`write_scene`),
    ``scene_meta.json`` and ``preprocess.json``. Images are composited on white.

    Raises ``ValueError`` for a spec that is not forward-facing and ``FileExistsError`` if
    ``out_dir`` is non-empty and ``overwrite`` is False (with ``overwrite`` the layout's own files
    are replaced, others kept).
    """
    import imageio.v3 as iio

    from ..preprocess import writer as W

    if spec.camera_mode != "forward":
        raise ValueError(f"the NSFF layout needs a forward-facing rig: use camera_mode='forward' "
                         f"(preset 'forward'), got {spec.camera_mode!r}")
    scene = build_scene(spec)
    out = W.prepare_out_dir(out_dir, overwrite=overwrite)
    res, focal = spec.resolution, scene.focal
    n_mov = len(scene.moving)
    rig, cam_of_frame, times = scene.rig, scene.rig_index["train"], scene.times["train"]
    hwf = (float(res), float(res), float(focal))
    rng = np.random.default_rng(spec.seed)
    images, masks, sparse, bounds, static_pts = [], [], [], [], []
    for i, t in enumerate(times):
        c2w = rig[cam_of_frame[i]]
        rgba, ids = scene.render(c2w, float(t), res, res, focal, return_ids=True)
        images.append(_composite(rgba))
        masks.append(_moving_cover(ids, n_mov))
        depth, pid = scene.trace_pixels(c2w, float(t), res, res, focal)
        finite = np.isfinite(depth)
        bounds.append(W.depth_bounds(depth[finite]))
        rows, cols = np.nonzero(finite)
        pick = np.sort(rng.choice(len(rows), size=min(n_sparse_depth, len(rows)), replace=False))
        rows, cols = rows[pick], cols[pick]
        uv = np.stack([cols + 0.5, rows + 0.5], axis=-1)
        z = depth[rows, cols]
        sparse.append({"uv": uv, "depth": z, "weight": np.ones_like(z)})
        cam_pts = np.stack([(uv[:, 0] - 0.5 * res) / focal * z, -(uv[:, 1] - 0.5 * res) / focal * z, -z], axis=-1)
        world = cam_pts @ c2w[:3, :3].T + c2w[:3, 3]
        static_pts.append(world[pid[rows, cols] >= n_mov])
    W.write_images(out / "images", images)
    W.write_masks(out / "motion_masks", masks)
    W.write_poses_bounds(out / "poses_bounds.npy", W.make_poses_bounds(rig[cam_of_frame], hwf, np.array(bounds)))
    (out / "sparse").mkdir(exist_ok=True)
    np.save(out / "sparse" / "points3D.npy", np.concatenate(static_pts).astype(np.float32))
    W.write_sparse_depth(out / "sparse_depth", sparse)
    np.save(out / "rig_poses.npy", W.opengl_to_llff(rig, hwf))
    for i, t in enumerate(times):
        folder_i, mfolder_i = out / "mv_images" / f"{i:05d}", out / "mv_masks" / f"{i:05d}"
        folder_i.mkdir(parents=True, exist_ok=True)
        mfolder_i.mkdir(parents=True, exist_ok=True)
        for c in range(len(rig)):
            if c == cam_of_frame[i]:
                img, m = images[i], masks[i]
            else:
                rgba, ids = scene.render(rig[c], float(t), res, res, focal, return_ids=True)
                img, m = _composite(rgba), _moving_cover(ids, n_mov)
            iio.imwrite(folder_i / f"cam{c:02d}.png", img)
            iio.imwrite(mfolder_i / f"cam{c:02d}.png", np.where(m, 255, 0).astype(np.uint8))
    flow_info = {"written": False}
    if flow:
        try:
            from ..preprocess.flow import neighbour_flows

            flows = neighbour_flows(images)
            W.write_flows(out / "flow_i1", flows)
            flow_info = {"written": True, "method": "dis", "preset": "auto", "fb_abs_thresh_px": 1.0,
                         "fb_rel_thresh": 0.05}
        except ImportError as exc:  # OpenCV missing: the layout allows leaving flow out
            flow_info = {"written": False, "reason": str(exc)}
    _save_npz_deterministic(out / "motion_gt.npz", _ground_truth(scene))
    meta = _meta(scene)
    meta.update({
        "format": "nsff", "camera_mode": "forward", "width": res, "height": res, "background": [1.0, 1.0, 1.0],
        "frame_times": times.tolist(), "frame_rig_camera": cam_of_frame.tolist(),
        "rig_c2w_opengl": rig.tolist(), "n_rig": int(len(rig)),
    })
    (out / "scene_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    W.write_json(out / "preprocess.json", {
        "format": "nsff", "source": f"synthetic:{spec.preset}", "source_type": "synthetic", "fps": None,
        "frame_count": int(len(times)), "size": [res, res], "resize_scale": 1.0, "focal": float(focal),
        "frame_times": times.tolist(),
        "sfm": {"poses": "exact (synthetic rig)", "registered_frames": int(len(times)), "total_frames": int(len(times)),
                "mean_reprojection_error_px": 0.0,
                "num_points3D": int(sum(len(p) for p in static_pts))},
        "flow": flow_info, "motion_masks": {"method": "exact object ids (any sub-sample on a moving sphere)"},
        "generator_version": GENERATOR_VERSION, "spec": spec.to_dict(),
    })
    return out


def ensure_scene(out_dir: Union[str, Path], spec: Optional[SyntheticSceneSpec] = None) -> Path:
    """Write ``spec`` (default: ``PRESETS["demo"]``) into ``out_dir`` unless it already holds it.

    Writes into a missing or empty folder, and rewrites a folder that holds this spec from another generator version
    (or incomplete). Raises ``FileExistsError`` for anything else in ``out_dir`` (a scene not written by the
    generator, another spec, the user's files): it is never replaced.
    """
    spec = PRESETS["demo"] if spec is None else spec
    out = Path(out_dir)
    meta_path = out / "scene_meta.json"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, OSError, UnicodeDecodeError):
            raise FileExistsError(f"{out} is not empty and holds no scene of the synthetic generator (no readable "
                                  f"scene_meta.json): it is left as it is; choose another folder or empty it") from None
        if not isinstance(meta, dict) or meta.get("spec") != json.loads(json.dumps(spec.to_dict())):
            raise FileExistsError(f"{out} holds another synthetic scene (not the one asked for): it is left as it is; "
                                  f"choose another folder or remove it")
        if meta.get("generator_version") == GENERATOR_VERSION and (out / "motion_gt.npz").exists() \
                and (out / "transforms_train.json").exists():
            return out
    return write_scene(spec, out, overwrite=True)


def spec_of_scene(scene_dir: Union[str, Path], world_frame: bool = False) -> SyntheticSceneSpec:
    """The spec a synthetic scene folder was written from (its ``scene_meta.json``).

    ``world_frame``: also require a D-NeRF-style (random-camera) scene, whose runs train in the generator's
    world frame (forward-facing scenes train in a rescaled one). Raises ``ValueError`` naming the file."""
    meta_path = Path(scene_dir) / "scene_meta.json"
    if not meta_path.is_file():
        raise ValueError(f"{meta_path} not found: this needs a run on a synthetic scene (tools/make_scene.py)")
    spec = SyntheticSceneSpec.from_dict(json.loads(meta_path.read_text())["spec"])
    if world_frame and spec.camera_mode != "random":
        raise ValueError(f"{meta_path}: forward-facing scenes train in a rescaled frame; use a D-NeRF-style "
                         f"synthetic scene")
    return spec


def load_synthetic(spec: SyntheticSceneSpec, background=(1.0, 1.0, 1.0)):
    """Render ``spec`` in memory into a :class:`kinfield.data.scene.Scene` (no files written).

    Images are composited on ``background``; ``meta`` holds the scene_meta dict and ``"scene"``
    (the :class:`SyntheticScene`, for exact GT via its ``motion`` method).
    """
    from kinfield.data.scene import Scene, SceneSplit

    scene = build_scene(spec)
    res, focal = spec.resolution, scene.focal
    bg = np.asarray(background, dtype=np.float32)
    splits = {}
    for s in SPLITS:
        n = len(scene.times[s])
        rgba = np.stack([_to_uint8(scene.render(c, float(t), res, res, focal)) for c, t in
                         zip(scene.cameras[s], scene.times[s])]) if n else np.zeros((0, res, res, 4), np.uint8)
        rgba = rgba.astype(np.float32) / 255.0  # same quantisation as the written PNGs
        a = rgba[..., 3]
        img = rgba[..., :3] * a[..., None] + bg * (1.0 - a[..., None])
        splits[s] = SceneSplit(
            name=s,
            images=torch.from_numpy(np.ascontiguousarray(img)),
            alphas=torch.from_numpy(np.ascontiguousarray(a)),
            poses=torch.from_numpy(scene.cameras[s].astype(np.float32)),
            times=torch.from_numpy(scene.times[s].astype(np.float32)),
            intrinsics=torch.tensor([[focal, focal, 0.5 * res, 0.5 * res]] * n, dtype=torch.float32).reshape(n, 4),
            paths=[f"<synthetic:{spec.preset}>/{s}/r_{i:03d}" for i in range(n)],
        )
    reach = float(np.sqrt(3.0) * WORLD_BOUND)
    meta = _meta(scene)
    meta["scene"] = scene
    return Scene(
        root="",
        splits=splits,
        aabb=torch.tensor(AABB, dtype=torch.float32),
        near=max(0.1, spec.camera_radius - reach),
        far=spec.camera_radius + reach,
        background=torch.from_numpy(bg),
        frame_dt=1.0 / (spec.n_train - 1),
        meta=meta,
    )
